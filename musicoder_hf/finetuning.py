"""Fine-tune MusiCoder for single-label classification or multi-label tagging with Accelerate.

`training/finetune.py` is the command line. Data: any labeled audio folder that `load_labeled_dataset` reads (our
tasks, or a user's folder with label subfolders or a CSV), featurised once and cached; or an already featurised
`DatasetDict` saved with `save_to_disk`. The best model on validation is kept; metrics go to `metrics.json`.
"""

import dataclasses
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from datasets import DatasetDict, load_from_disk
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup
from transformers.utils import FEATURE_EXTRACTOR_NAME

from .configuration_musicoder import MusiCoderConfig
from .data.features import feature_extractor_of, featurize_dataset
from .data.labeled import LabelInfo, label_info, load_labeled_dataset, to_multi_hot
from .data_collator import pad_frames, random_crop
from .embeddings import pooled_hidden_states
from .evaluation import aggregate_by_group, compute_metrics, predict_logits
from .feature_extraction_musicoder import MusiCoderFeatureExtractor
from .modeling_musicoder import MusiCoderForSequenceClassification
from .pretraining import parse_overrides
from .training_utils import build_accelerator, check_finite_loss, clip_and_check_gradients
from .utils import atomic_directory, derive_seed, write_json

logger = logging.getLogger(__name__)

# Relative to the repository root, where the training scripts run.
SHIPPED_CHECKPOINT = "pretrained/musicoder-small"

# Paper Table 4: exhaustive search, best on validation.
TABLE4_GRID = {
    "per_device_train_batch_size": (16, 24, 32),
    "learning_rate": (2e-5, 3e-5, 5e-5),
    "num_epochs": (2, 3, 4),
    "dropout": (0.05, 0.1),
}


@dataclass
class FinetuningArguments:
    data_dir: str = field(metadata={"help": "Labeled audio folder, or a featurised DatasetDict (save_to_disk)."})
    output_dir: str = field(metadata={"help": "best/ (model + feature extractor), metrics.json, history."})
    model_name_or_path: str | None = field(
        default=SHIPPED_CHECKPOINT, metadata={"help": "Pre-trained MusiCoder folder or Hub id (default: the checkpoint "
                                              "shipped in the repository); ignored with --from_scratch."}
    )
    from_scratch: bool = field(default=False, metadata={"help": "Random init (the no-pre-training ablation)."})
    preset: str = "musicoder-base"
    config_overrides: str | None = field(default=None, metadata={"help": "With --from_scratch: config fields."})
    # Defaults for a few hundred clips and the shipped checkpoint: linear probe, then fine-tune (LP-FT, Kumar et al.,
    # ICLR 2022). The head is first fitted on the frozen encoder's pooled clip embeddings (`probe_epochs`, at its own
    # `head_learning_rate`; seconds), then the whole model trains gently from that head, and the best model on
    # validation is kept, the probe included: a random head's first gradients would otherwise distort the pre-trained
    # features. The paper's Table 4 (2-4 epochs at 2e-5 to 5e-5, for Base and large datasets) is `--grid`.
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the model while fine-tuning."})
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 16
    num_epochs: float = field(default=20.0, metadata={"help": "Epochs of the whole model, after the probe."})
    dropout: float = field(default=0.1, metadata={"help": "Hidden and classifier dropout (Table 4: 0.05 or 0.1)."})
    attention_dropout: float | None = field(
        default=None, metadata={"help": "Attention-probability dropout; default: same as --dropout."}
    )
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    grid: bool = field(default=False, metadata={"help": "Search the paper's Table 4 grid (54 runs), without a probe."})
    grid_overrides: str | None = field(
        default=None,
        metadata={"help": "Smaller grid, e.g. 'learning_rate=1e-4|3e-4,num_epochs=5' ('|' separates values)."},
    )
    max_frames: int | None = field(default=None, metadata={
        "help": "Training crop in frames, random per epoch (default: the model's window, config."
        "max_position_embeddings: 300 frames = 7 s for the shipped checkpoint). Longer crops are read in windows, "
        "as evaluation reads whole clips."})
    freeze_base_model: bool = field(default=False, metadata={
        "help": "Train the head only, on crops through the frozen encoder (--probe is the fast way)."})
    probe_epochs: int = field(default=100, metadata={
        "help": "Epochs of the head alone on the frozen encoder's pooled whole-clip embeddings, before the whole "
        "model trains from the best of them on validation; 0: the whole model trains from a random head."})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the head while probing."})
    probe: bool = field(default=False, metadata={
        "help": "Stop after the probe: the encoder stays as pre-trained, only the linear head learns "
        "(`probe_epochs` epochs, seconds in all)."})
    use_weighted_layer_sum: bool | None = field(default=None, metadata={
        "help": "The head reads a learned weighted sum of every layer (input embedding included) instead of the last "
        "layer alone (true or false); default: the checkpoint's (config.use_weighted_layer_sum)."})
    classifier_pooling: str | None = field(default=None, metadata={
        "help": "Pooling of the head over time: mean, or mean_std (mean and standard deviation); default: the "
        "checkpoint's (config.classifier_pooling)."})
    metric_for_best_model: str | None = field(
        default=None, metadata={"help": "Default: accuracy (single-label) or pr_auc_macro (multi-label)."}
    )
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    group_column: str | None = field(
        default=None, metadata={"help": "Aggregate clip logits per track/piece before scoring (e.g. piece_id)."}
    )
    seed: int = 0
    mixed_precision: str | None = None
    num_workers: int = 0
    num_proc: int | None = field(default=None, metadata={"help": "Processes for feature extraction."})
    report_to: str = "none"
    cpu: bool = False


def load_featurised(
    data_dir: str, num_proc: int | None = None, feature_extractor: MusiCoderFeatureExtractor | None = None
) -> tuple[DatasetDict, MusiCoderFeatureExtractor]:
    """The frames of a labeled dataset and the feature extractor that produced them. A featurised `DatasetDict`
    (`save_to_disk`) comes with its own extractor (`feature_extractor_of`); a labeled audio folder is featurised with
    `feature_extractor` (default: `MusiCoderFeatureExtractor()`)."""
    if (Path(data_dir) / "dataset_dict.json").exists():
        return load_from_disk(data_dir), feature_extractor_of(data_dir)
    feature_extractor = feature_extractor or MusiCoderFeatureExtractor()
    data = featurize_dataset(load_labeled_dataset(data_dir), feature_extractor=feature_extractor, num_proc=num_proc)
    return data, feature_extractor


def checkpoint_feature_extractor(model_name_or_path: str | None) -> MusiCoderFeatureExtractor | None:
    """The feature extractor saved in a checkpoint folder, if it has one."""
    if model_name_or_path is None or not (Path(model_name_or_path) / FEATURE_EXTRACTOR_NAME).exists():
        return None
    return MusiCoderFeatureExtractor.from_pretrained(model_name_or_path)


def same_features(first: MusiCoderFeatureExtractor, second: MusiCoderFeatureExtractor) -> bool:
    """Whether two extractors produce the same frames (their settings, leaving out where their code is saved)."""
    def settings(feature_extractor):
        return {key: value for key, value in feature_extractor.to_dict().items() if key != "auto_map"}

    return settings(first) == settings(second)


class CropCollate:
    """Random crop to `max_frames` (seeded per epoch and example) + padding; labels as class ids or multi-hot."""

    def __init__(self, label_column: str, num_labels: int, multi_label: bool, max_frames: int | None, seed: int):
        self.label_column, self.num_labels, self.multi_label = label_column, num_labels, multi_label
        self.max_frames, self.seed, self.epoch = max_frames, seed, 0

    def __call__(self, examples):
        batch = pad_frames([
            random_crop(example["input_features"], self.max_frames, self.seed, self.epoch, int(example["example_index"]))
            for example in examples
        ])
        if self.multi_label:
            labels = torch.tensor([to_multi_hot(example[self.label_column], self.num_labels) for example in examples])
        else:
            labels = torch.tensor([int(example[self.label_column]) for example in examples])
        return {**batch, "labels": labels}


def references_of(dataset, label_column: str, num_labels: int, multi_label: bool) -> np.ndarray:
    values = dataset[label_column]
    if not multi_label:
        return np.asarray(values, dtype=np.int64)
    return np.array([to_multi_hot(tags, num_labels) for tags in values], dtype=np.int64)


def evaluate_split(model, dataset, label_column, num_labels, multi_label, problem_type, group_column, batch_size):
    logits = predict_logits(model, dataset["input_features"], batch_size=batch_size)
    return score_logits(logits, dataset, label_column, num_labels, multi_label, problem_type, group_column)


def score_logits(logits, dataset, label_column, num_labels, multi_label, problem_type, group_column):
    """The metrics of clip logits against a split's labels, averaged per `group_column` (e.g. a piece) if given."""
    references = references_of(dataset, label_column, num_labels, multi_label)
    if group_column and group_column in dataset.column_names:
        groups = dataset[group_column]
        _, logits = aggregate_by_group(logits, groups)
        _, references = aggregate_by_group(references.reshape(len(groups), -1).astype(np.float64), groups)
        references = references.astype(np.int64).reshape(len(logits), -1)
        if not multi_label:
            references = references[:, 0]
    return compute_metrics(logits, references, problem_type)


def build_model(args: FinetuningArguments, names: list[str], problem_type: str, dropout: float):
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    head = dict(
        num_labels=len(names),
        problem_type=problem_type,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout if args.attention_dropout is None else args.attention_dropout,
        classifier_dropout=dropout,
        **({"use_weighted_layer_sum": args.use_weighted_layer_sum} if args.use_weighted_layer_sum is not None else {}),
        **({"classifier_pooling": args.classifier_pooling} if args.classifier_pooling else {}),
        **labels,
    )
    if args.from_scratch:
        config = MusiCoderConfig.from_preset(args.preset, **parse_overrides(args.config_overrides), **head)
        model = MusiCoderForSequenceClassification(config)
    else:
        if args.model_name_or_path is None:
            raise ValueError("Give --model_name_or_path (a pre-trained MusiCoder) or --from_scratch.")
        if args.model_name_or_path == SHIPPED_CHECKPOINT and not Path(SHIPPED_CHECKPOINT).is_dir():
            raise ValueError(
                f"The default --model_name_or_path {SHIPPED_CHECKPOINT} is the checkpoint shipped in the repository, "
                f"and there is no such folder under {Path.cwd()}: run from the repository root, or pass "
                "--model_name_or_path (a local folder or a Hub id), or --from_scratch."
            )
        model = MusiCoderForSequenceClassification.from_pretrained(args.model_name_or_path, **head)
    if args.freeze_base_model:
        model.freeze_base_model()
    return model


def training_crop(args: FinetuningArguments, config) -> int:
    """`--max_frames`, or the model's window when not given. A longer crop is read in windows by the model."""
    return args.max_frames or config.max_position_embeddings


def train_one(args, accelerator, data, info: LabelInfo, hyper, leader: dict,
              feature_extractor: MusiCoderFeatureExtractor | None = None) -> dict:
    """Train with one hyper-parameter setting: the probe (`fit_head`, unless `probe_epochs` is 0), then the whole
    model for `num_epochs` epochs on random crops. Whenever an epoch (the probe is epoch 0) beats `leader["score"]`
    (the best validation score of all runs so far), the model is saved to `output_dir/best` with
    `feature_extractor` (the one that produced `data`; default `MusiCoderFeatureExtractor()`): only one model is
    ever kept on disk."""
    label_column, problem_type, names = info.label_column, info.problem_type, info.names
    multi_label = problem_type == "multi_label_classification"
    metric = args.metric_for_best_model or ("pr_auc_macro" if multi_label else "accuracy")
    set_seed(args.seed)
    model = build_model(args, names, problem_type, hyper["dropout"])
    collate = CropCollate(label_column, len(names), multi_label, training_crop(args, model.config), args.seed)
    train = data[args.train_split]
    train = train.add_column("example_index", list(range(len(train)))).with_format("numpy")
    loader = DataLoader(
        train, batch_size=hyper["per_device_train_batch_size"], shuffle=True, collate_fn=collate,
        num_workers=args.num_workers,
    )
    model.to(accelerator.device)
    best, history = None, []
    if args.probe_epochs > 0:
        best = probe_then_record(args, accelerator, model, data, info, hyper, metric, history, leader,
                                 feature_extractor)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=hyper["learning_rate"], betas=(0.9, 0.999), eps=1e-6,
        weight_decay=args.weight_decay,
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    num_epochs = int(np.ceil(hyper["num_epochs"]))
    total_steps = max(1, int(hyper["num_epochs"] * len(loader)))
    schedule = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)

    step = 0
    for epoch in range(num_epochs):
        collate.epoch = epoch
        loader.set_epoch(epoch)
        model.train()
        losses = []
        # disable=None: no bar where stderr is not a terminal (a log file would get every refresh)
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}/{num_epochs}",
                          disable=None if accelerator.is_main_process else True, leave=False):
            torch.manual_seed(derive_seed(args.seed, epoch, step, accelerator.process_index))
            loss = model(**batch).loss
            check_finite_loss(accelerator, loss, step)
            accelerator.backward(loss)
            clip_and_check_gradients(accelerator, model, args.max_grad_norm, step)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            step += 1
            if step >= total_steps:
                break
        validation = evaluate_split(
            accelerator.unwrap_model(model), data[args.validation_split], label_column, len(names), multi_label,
            problem_type, args.group_column, args.per_device_eval_batch_size,
        )
        record = {"stage": "finetune", "epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        best = record_epoch(args, accelerator, accelerator.unwrap_model(model), record, validation, metric, history,
                            best, leader, feature_extractor)
        if step >= total_steps:
            break
    accelerator.free_memory()
    return {"hyperparameters": hyper, "metric": metric, "best": best, "history": history}


def fit_head(args, model, data, info: LabelInfo, batch_size: int, epochs: int,
             metric: str) -> tuple[list[dict], dict | None]:
    """The linear probe: fit `model.classifier` on the frozen encoder's pooled embeddings of whole clips (computed
    once, read in windows as the model's forward reads them, with `config.classifier_pooling`, of the last layer or of the layers weighted
    by the model's initial `layer_weights` with `config.use_weighted_layer_sum`), with dropout, for `epochs` epochs at
    `args.head_learning_rate`; the classifier is left at its best epoch on validation. Returns one record per epoch
    and the best epoch's validation scores (None if no score was finite).
    Every process fits the same head (same data, same seed), so it needs no synchronisation."""
    multi_label = info.problem_type == "multi_label_classification"
    model.eval()
    # The head's input: the last layer, or the layers combined with the model's current (initial) layer weights,
    # which stay as they are during the probe and learn with the whole model afterwards.
    layer_weights = (torch.softmax(model.layer_weights.detach().float(), dim=-1)
                     if model.config.use_weighted_layer_sum else None)

    def embeddings(split):
        pooled = pooled_hidden_states(model.base_model, data[split]["input_features"], model.config.classifier_pooling,
                                      batch_size=args.per_device_eval_batch_size, layer_weights=layer_weights)
        return torch.from_numpy(pooled[:, -1]).to(model.device)

    train, validation = embeddings(args.train_split), embeddings(args.validation_split)
    targets = torch.as_tensor(references_of(data[args.train_split], info.label_column, info.num_labels, multi_label))
    targets = targets.to(model.device, torch.float32 if multi_label else torch.long)
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=args.head_learning_rate, betas=(0.9, 0.999),
                                 eps=1e-6, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    history, best, best_state = [], None, None
    for epoch in range(epochs):
        model.dropout.train()
        losses = []
        for rows in torch.randperm(len(train), generator=generator).split(batch_size):
            rows = rows.to(model.device)
            loss = model.classification_loss(model.classifier(model.dropout(train[rows])), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.dropout.eval()
        with torch.no_grad():
            logits = model.classifier(validation).float().cpu().numpy()
        scores = score_logits(logits, data[args.validation_split], info.label_column, info.num_labels, multi_label,
                              info.problem_type, args.group_column)
        history.append({"stage": "probe", "epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        **{f"validation_{k}": v for k, v in scores.items()}})
        if scores[metric] > (best[metric] if best else float("-inf")):  # a NaN score never wins
            best = scores
            best_state = {k: v.detach().clone() for k, v in model.classifier.state_dict().items()}
    if best_state is not None:
        model.classifier.load_state_dict(best_state)
    return history, best


def probe_then_record(args, accelerator, model, data, info: LabelInfo, hyper, metric: str, history: list,
                      leader: dict, feature_extractor) -> dict | None:
    """Run `fit_head` for `args.probe_epochs` epochs and record its best epoch as the run's epoch 0 (saved to
    `output_dir/best` if it leads). Returns the run's best so far."""
    set_seed(args.seed)
    probe_history, validation = fit_head(args, model, data, info, hyper["per_device_train_batch_size"],
                                         args.probe_epochs, metric)
    history.extend(probe_history)
    if validation is None:
        return None
    return consider(args, accelerator, model, 0, validation, metric, None, leader, feature_extractor)


def train_probe(args, accelerator, data, info: LabelInfo, hyper, leader: dict,
                feature_extractor: MusiCoderFeatureExtractor | None = None) -> dict:
    """`train_one` for `--probe`: only the probe stage (`fit_head`); the encoder stays as loaded."""
    multi_label = info.problem_type == "multi_label_classification"
    metric = args.metric_for_best_model or ("pr_auc_macro" if multi_label else "accuracy")
    set_seed(args.seed)
    model = build_model(args, info.names, info.problem_type, hyper["dropout"]).to(accelerator.device)
    history = []
    best = probe_then_record(args, accelerator, model, data, info, hyper, metric, history, leader, feature_extractor)
    return {"hyperparameters": hyper, "metric": metric, "best": best, "history": history}


def record_epoch(args, accelerator, model, record: dict, validation: dict, metric: str, history: list,
                 best: dict | None, leader: dict, feature_extractor: MusiCoderFeatureExtractor | None) -> dict:
    """Log an epoch (`record`: stage, epoch, train_loss) into `history`; return the run's best epoch so far."""
    history.append({**record, **{f"validation_{k}": v for k, v in validation.items()}})
    logger.info("%s", history[-1])
    return consider(args, accelerator, model, record["epoch"], validation, metric, best, leader, feature_extractor)


def consider(args, accelerator, model, epoch: int, validation: dict, metric: str, best: dict | None, leader: dict,
             feature_extractor: MusiCoderFeatureExtractor | None) -> dict:
    """The run's best epoch after this one (epoch 0 is the probe). An epoch that beats `leader["score"]` (the best of
    all runs) is saved to `output_dir/best` with `feature_extractor`: only one model is ever kept on disk."""
    if best is None or validation[metric] > best["validation"][metric]:
        best = {"epoch": epoch, "validation": validation}
    if validation[metric] > leader["score"]:
        leader.update(score=validation[metric], run=leader["current"], epoch=epoch)
        if accelerator.is_main_process:
            save_atomically(model, Path(args.output_dir) / "best", feature_extractor or MusiCoderFeatureExtractor())
    return best


def save_atomically(model, folder: Path, feature_extractor: MusiCoderFeatureExtractor):
    """Save the model and its feature extractor so that `folder` is always a whole checkpoint, old or new."""
    with atomic_directory(folder) as temporary:
        model.save_pretrained(temporary)
        feature_extractor.save_pretrained(temporary)


def grid_points(args: FinetuningArguments) -> list[dict]:
    single = {
        "per_device_train_batch_size": (args.per_device_train_batch_size,),
        "learning_rate": (args.learning_rate,),
        "num_epochs": (args.num_epochs,),
        "dropout": (args.dropout,),
    }
    grid = dict(TABLE4_GRID) if args.grid else single
    for key, value in parse_overrides(args.grid_overrides).items():
        values = str(value).split("|")
        grid[key] = tuple(type(single[key][0])(float(v)) if key != "dropout" else float(v) for v in values)
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def train_grid(args: FinetuningArguments, accelerator, data, info: LabelInfo,
               feature_extractor: MusiCoderFeatureExtractor | None = None) -> tuple[list[dict], dict]:
    """Train every point of `grid_points(args)`; the best epoch of all runs on validation is saved to
    `output_dir/best` with `feature_extractor`. Returns the runs and `leader` (its `run` index, `epoch` and
    validation `score`)."""
    runs, leader = [], {"score": float("-inf"), "run": None, "epoch": None}
    for index, hyper in enumerate(grid_points(args)):
        logger.info("Run %d: %s", index, hyper)
        leader["current"] = index
        train = train_probe if args.probe else train_one
        runs.append(train(args, accelerator, data, info, hyper, leader, feature_extractor))
    if leader["run"] is None:
        raise RuntimeError(f"No run produced a finite validation score; nothing was saved in {args.output_dir}.")
    return runs, leader


def check_schedule(args: FinetuningArguments) -> None:
    """Refuse settings that would silently train nothing."""
    if args.probe and args.probe_epochs <= 0:
        raise ValueError("--probe trains the head for --probe_epochs epochs: give --probe_epochs of at least 1.")
    if not args.probe and min(point["num_epochs"] for point in grid_points(args)) <= 0:
        raise ValueError("--num_epochs must be positive (or use --probe to train the head alone).")


def finetune(args: FinetuningArguments) -> dict:
    """Fine-tune (over the grid if asked), keep the best model on validation, score it on test; returns metrics."""
    started = time.time()
    if args.grid:  # the paper's Table 4 protocol: the whole model at one learning rate from the first step
        args = dataclasses.replace(args, probe_epochs=0)
    check_schedule(args)
    output_dir = Path(args.output_dir)
    accelerator = build_accelerator(args.output_dir, args.mixed_precision, 1, args.report_to, args.cpu)
    pretrained = None if args.from_scratch else checkpoint_feature_extractor(args.model_name_or_path)
    data, feature_extractor = load_featurised(args.data_dir, args.num_proc, pretrained)
    if pretrained is not None and not same_features(pretrained, feature_extractor):
        logger.warning(
            "The frames in %s come from another feature extractor than %s was pre-trained with; the fine-tuned model "
            "ships the one of the frames. Featurise the audio folder with the checkpoint's extractor to match.",
            args.data_dir, args.model_name_or_path,
        )
    info = label_info(data[args.train_split])
    label_column, problem_type, names = info.label_column, info.problem_type, info.names
    if args.validation_split not in data:
        raise ValueError(f"No {args.validation_split!r} split in {args.data_dir}: model selection needs one.")

    runs, leader = train_grid(args, accelerator, data, info, feature_extractor)
    best_run = runs[leader["run"]]

    metrics = {
        "problem_type": problem_type,
        "labels": names,
        "metric_for_best_model": best_run["metric"],
        "best_hyperparameters": best_run["hyperparameters"],
        "best_epoch": leader["epoch"],
        "validation": best_run["best"]["validation"],
        "runs": runs,
        "initialisation": "scratch" if args.from_scratch else args.model_name_or_path,
        "arguments": asdict(args),
    }
    if accelerator.is_main_process:
        best_dir = output_dir / "best"
        if args.test_split in data:
            model = MusiCoderForSequenceClassification.from_pretrained(best_dir).to(accelerator.device)
            metrics["test"] = evaluate_split(
                model, data[args.test_split], label_column, len(names), problem_type == "multi_label_classification",
                problem_type, args.group_column, args.per_device_eval_batch_size,
            )
        metrics["seconds"] = round(time.time() - started, 1)
        write_json(output_dir / "metrics.json", metrics)
    accelerator.wait_for_everyone()
    return json.loads(json.dumps(metrics, default=str))
