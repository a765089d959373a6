"""The paper's ablation (Tables 5-6) on our own real music, plus per-layer probes (MARBLE protocol): `make paper`.

    python training/experiments.py [--scale small|tiny] [--data_dir data/paper] [--output_dir runs/paper]

Builds the data it needs (resumable), writes runs/paper/{results.json,results.md,layer_probe.png} and copies the table
and the plot to model_cards/paper_results.md and model_cards/paper_layer_probe.png. Tests run it in-process on
synthetic data (`run_experiments`). One call of `run_experiments` produces, for two tasks,

- **folk** (single-label, 5 traditions): the GTZAN protocol of the paper, 10-fold cross-validation where each fold's
  remaining pieces are split 80/20 train/validation per class (`data.labeled.cross_validation_folds`); accuracy mean
  and standard deviation over the folds;
- **instruments** (multi-label, 8 families): the MTG-Jamendo protocol, ROC-AUC macro and PR-AUC macro on the held-out
  test split;

the rows

| row | what |
|---|---|
| hand-crafted + logistic regression / SVM | mean and standard deviation over time of the *un-normalised* 324-dim frames |
| MusiCoder, no pre-training | random init, fine-tuned |
| MusiCoder, CFM / CCM / CFM + CCM | pre-trained on the game-soundtrack corpus with that masking, fine-tuned |
| per-layer MLP probes | frozen encoders (random init and the three pre-trained ones), mean-pooled hidden state of each layer, one 512-unit hidden layer |

Fairness: every row sees the same splits (the folds are computed once and indexed by row id). Every MusiCoder row has
the same fine-tuning budget and the same hyper-parameter search (the learning rates of the scale x every epoch, best
on validation; the same batch size, crop, dropout and seed); the three pre-trainings have the same budget, seed, data
order and initial weights, and differ only in the masking. Every score goes through
`musicoder_hf.evaluation.compute_metrics` (the shipped `evaluate` modules).

Why un-normalised frames for the hand-crafted row: the model's input has per-clip CMVN, after which every channel has
mean 0 and standard deviation 1 over the clip, so mean/std pooling of the model's input is constant. The baseline
therefore pools the raw frames (`MusiCoderFeatureExtractor(do_normalize=False)`), and the model's input is exactly
`MusiCoderFeatureExtractor.cmvn` of the same frames.
"""

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import torch
import transformers
from datasets import DatasetDict, concatenate_datasets, load_dataset, load_from_disk
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from musicoder_hf.builders import corpus as corpus_builder
from musicoder_hf.builders import tasks as tasks_builder
from musicoder_hf.configuration_musicoder import MusiCoderConfig
from musicoder_hf.data.features import (
    dataset_normalization_extractor,
    feature_statistics,
    featurize_once,
    normalize_frames,
    save_featurised,
)
from musicoder_hf.data.labeled import MULTI_LABEL, cross_validation_folds, label_info, load_labeled_dataset, to_multi_hot
from musicoder_hf.embeddings import pooled_hidden_states
from musicoder_hf.evaluation import compute_metrics, predict_logits, select_on_validation, selection_metric
from musicoder_hf.feature_extraction_musicoder import MusiCoderFeatureExtractor
from musicoder_hf.finetuning import FinetuningArguments, train_grid
from musicoder_hf.modeling_musicoder import MusiCoderForSequenceClassification, MusiCoderModel
from musicoder_hf.pretraining import PretrainingArguments, parse_overrides, pretrain
from musicoder_hf.training_utils import build_accelerator
from musicoder_hf.utils import command_line_parser, parse_command_line, single_threaded, write_json


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the headless backend)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentScale:
    """Everything that sets the size (and so the cost) of a run. All MusiCoder rows share these values."""

    name: str
    # data (built from package registries: Debian game soundtracks, music21 rendered with FluidSynth)
    corpus_minutes: float
    tunes_per_class: int
    instrument_pieces: int
    # encoder (shared by all MusiCoder rows)
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    # pre-training (same budget for CFM, CCM and CFM + CCM)
    pretrain_steps: int
    pretrain_batch_size: int
    pretrain_max_frames: int
    pretrain_lr_scale: float
    pretrain_warmup_steps: int
    # fine-tuning (same budget and grid for every MusiCoder row)
    learning_rates: tuple[float, ...]
    finetune_epochs: int
    finetune_batch_size: int
    finetune_max_frames: int
    dropout: float
    # protocol and the scikit-learn rows
    n_folds: int = 10
    logistic_c: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    svm_c: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    probe_hidden_units: int = 512
    probe_alphas: tuple[float, ...] = (1e-3, 1e-1)
    probe_max_iter: int = 300

    def model_overrides(self) -> str:
        return (
            f"hidden_size={self.hidden_size},num_hidden_layers={self.num_hidden_layers},"
            f"num_attention_heads={self.num_attention_heads},intermediate_size={self.intermediate_size}"
        )

    def replace(self, **changes) -> "ExperimentScale":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


SCALES = {
    # A few minutes end to end: to check that everything runs, not to read numbers from.
    "tiny": ExperimentScale(
        name="tiny", corpus_minutes=20, tunes_per_class=10, instrument_pieces=40,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        pretrain_steps=30, pretrain_batch_size=8, pretrain_max_frames=128, pretrain_lr_scale=0.2,
        pretrain_warmup_steps=10, learning_rates=(1e-3,), finetune_epochs=2, finetune_batch_size=8,
        finetune_max_frames=128, dropout=0.1, probe_max_iter=100,
    ),
    # The default: sized to finish in about an hour on 2 CPU cores (see README).
    "small": ExperimentScale(
        name="small", corpus_minutes=90, tunes_per_class=30, instrument_pieces=200,
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
        pretrain_steps=800, pretrain_batch_size=16, pretrain_max_frames=256, pretrain_lr_scale=0.2,
        pretrain_warmup_steps=100, learning_rates=(1e-3, 3e-3), finetune_epochs=8, finetune_batch_size=8,
        finetune_max_frames=256, dropout=0.1,
    ),
}

# Pre-training ablation of the paper's Table 6, plus the normalisation of the frames: (cfm, ccm, normalization).
# "clip" is the paper's per-clip CMVN; "dataset" standardises every clip with the corpus's per-channel statistics.
PRETRAINING_VARIANTS = {"cfm": (True, False, "clip"), "ccm": (False, True, "clip"), "cfm_ccm": (True, True, "clip"),
                        "cfm_ccm_dataset": (True, True, "dataset")}
NORMALIZATIONS = ("clip", "dataset")

ROWS = {
    "handcrafted_logreg": "Hand-crafted (mean + std of raw frames) + logistic regression",
    "handcrafted_svm": "Hand-crafted (mean + std of raw frames) + SVM (RBF)",
    # what is left for any model of the CMVN'd frames MusiCoder sees (their mean and std are 0 and 1)
    "handcrafted_cmvn_logreg": "Hand-crafted (percentiles + mean change of CMVN'd frames) + logistic regression",
    "scratch": "MusiCoder, no pre-training",
    "cfm": "MusiCoder, pre-trained with CFM",
    "ccm": "MusiCoder, pre-trained with CCM",
    "cfm_ccm": "MusiCoder, pre-trained with CFM + CCM",
    "cfm_ccm_mean_std": "MusiCoder, pre-trained with CFM + CCM, statistics pooling",
    "cfm_ccm_dataset": "MusiCoder, pre-trained with CFM + CCM, dataset normalisation",
    "cfm_ccm_dataset_mean_std": "MusiCoder, pre-trained with CFM + CCM, dataset normalisation, statistics pooling",
}
# Each fine-tuned row: (encoder: a pre-training variant or "scratch", normalisation of its frames, classifier pooling).
# Rows without a suffix use per-clip CMVN and mean pooling, as in the paper.
ROW_SETUPS = {
    "scratch": ("scratch", "clip", "mean"),
    "cfm": ("cfm", "clip", "mean"),
    "ccm": ("ccm", "clip", "mean"),
    "cfm_ccm": ("cfm_ccm", "clip", "mean"),
    "cfm_ccm_mean_std": ("cfm_ccm", "clip", "mean_std"),
    "cfm_ccm_dataset": ("cfm_ccm_dataset", "dataset", "mean"),
    "cfm_ccm_dataset_mean_std": ("cfm_ccm_dataset", "dataset", "mean_std"),
}
MUSICODER_ROWS = tuple(ROW_SETUPS)
# The 2 x 2 of normalisation and pooling (CFM + CCM): (row, normalisation, pooling)
NORMALIZATION_POOLING_ROWS = tuple((key, ROW_SETUPS[key][1], ROW_SETUPS[key][2]) for key in
                                   ("cfm_ccm", "cfm_ccm_mean_std", "cfm_ccm_dataset", "cfm_ccm_dataset_mean_std"))


def short_title(key: str) -> str:
    """A row's title without the hand-crafted rows' description of their features."""
    return ROWS[key].replace(" (mean + std of raw frames)", "").replace(
        " (percentiles + mean change of CMVN'd frames)", " on CMVN'd frames")
PROBE_ENCODERS = {"scratch": "random init", "cfm": "CFM", "ccm": "CCM", "cfm_ccm": "CFM + CCM",
                  "cfm_ccm_dataset": "CFM + CCM, dataset normalisation"}


def normalization_of(encoder: str) -> str:
    """The normalisation of the frames an encoder ("scratch" or a pre-training variant) was trained on."""
    return "clip" if encoder == "scratch" else PRETRAINING_VARIANTS[encoder][2]
TASKS = ("folk", "instruments")
SPLIT_ORDER = ("train", "validation", "test")


# ---------------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------------


def prepare_data(data_dir: str | os.PathLike, scale: ExperimentScale, seed: int = 0, num_proc: int = 2) -> dict:
    """Build (or reuse) the corpus and both tasks under `data_dir` and featurise them into Arrow.

    Returns un-normalised frames: {"corpus": the pre-training corpus, "folk"/"instruments": the tasks}; each row
    normalises them as its encoder needs (`normalised_corpora`, `normalise`). Every step resumes: a rerun only redoes
    what changed.
    """
    data_dir = Path(data_dir)
    for name, status in (
        ("build-corpus", corpus_builder.main(["--output_dir", str(data_dir / "corpus"), "--minutes",
                                      str(scale.corpus_minutes), "--seed", str(seed), "--no_progress"])),
        ("build-tasks", tasks_builder.main(["--output_dir", str(data_dir / "tasks"), "--limit", str(scale.tunes_per_class),
                                    "--instruments_limit", str(scale.instrument_pieces), "--seed", str(seed),
                                    "--no_progress"])),
    ):
        if status:
            raise SystemExit(f"{name} failed (exit {status}); see the messages above.")
    raw = MusiCoderFeatureExtractor(do_normalize=False)
    return {
        "corpus": featurize_once(data_dir / "corpus", data_dir / "corpus_raw_features",
                                 lambda path: load_dataset("audiofolder", data_dir=str(path)), feature_extractor=raw,
                                 num_proc=num_proc),
        "folk": featurize_once(data_dir / "tasks" / "folk", data_dir / "folk_raw_features", load_labeled_dataset,
                               feature_extractor=raw, num_proc=num_proc),
        "instruments": featurize_once(data_dir / "tasks" / "instruments", data_dir / "instruments_raw_features",
                                      load_labeled_dataset, feature_extractor=raw, num_proc=num_proc),
    }


def dataset_digest(dataset) -> str:
    """A digest of the contents of a `Dataset` or `DatasetDict` (every split's Arrow buffers): cached results and
    pre-trainings are reused only for the very same data."""
    digest = hashlib.sha256()
    splits = dataset if isinstance(dataset, DatasetDict) else {"": dataset}
    for name in sorted(splits):
        digest.update(name.encode())
        for batch in splits[name].data.to_batches():
            for column in batch.columns:
                for buffer in column.buffers():
                    if buffer is not None:
                        digest.update(buffer)
    return digest.hexdigest()[:16]


def pool_task(raw):
    """All splits of a task in one Dataset (train, validation, test order) with a `row` id column."""
    if isinstance(raw, DatasetDict):  # train, validation, test first, in that order: `split_rows` relies on it
        order = [s for s in SPLIT_ORDER if s in raw] + [s for s in raw if s not in SPLIT_ORDER]
        pooled = concatenate_datasets([raw[s] for s in order])
    else:
        pooled = raw
    columns = [c for c in pooled.column_names if c != "row"]
    return pooled.select_columns(columns).add_column("row", list(range(len(pooled))))


def split_rows(raw, task_is_cv: bool, n_folds: int, seed: int) -> tuple[list[tuple[str, dict]], object]:
    """The evaluation splits, as row ids into `pool_task(raw)`: 10 folds for the CV task, the held-out split otherwise.

    Returns ([(split name, {"train": rows, "validation": rows, "test": rows})], pooled dataset).
    """
    pooled = pool_task(raw)
    if task_is_cv:
        light = pooled.remove_columns(["input_features"])  # the folds only need labels, pieces and folds
        splits = [
            (f"fold{k}", {name: [int(r) for r in part["row"]] for name, part in fold.items()})
            for k, fold in cross_validation_folds(light, n_folds=n_folds, seed=seed)
        ]
    else:
        edges = np.cumsum([0, *(len(raw[s]) for s in SPLIT_ORDER)])
        splits = [("heldout", {name: list(range(int(edges[i]), int(edges[i + 1])))
                               for i, name in enumerate(SPLIT_ORDER)})]
    return splits, pooled


def normalise(pooled, feature_extractor: MusiCoderFeatureExtractor):
    """The model's input: the raw frames normalised as `feature_extractor` normalises them (per-clip CMVN or dataset
    statistics), kept in memory."""
    return normalize_frames(pooled, feature_extractor, keep_in_memory=True)


# Written last into each normalised corpus folder: which raw frames and extractor made it.
CORPUS_KEY_FILE = "corpus_key.json"


def normalised_corpora(corpus_raw: DatasetDict, features_dir: Path) -> tuple[dict, dict]:
    """The pre-training corpus under each normalisation, saved with its extractor under `features_dir`: per-clip CMVN
    (`MusiCoderFeatureExtractor()`), and the per-channel statistics of the corpus's training split. Returns
    ({normalisation: folder}, {normalisation: feature extractor}). A folder already written from the same frames with
    the same extractor is reused (its `corpus_key.json`, written last, records both)."""
    extractors = {"clip": MusiCoderFeatureExtractor(),
                  "dataset": dataset_normalization_extractor(feature_statistics(corpus_raw["train"]))}
    raw_digest = dataset_digest(corpus_raw)
    folders = {}
    for normalization, feature_extractor in extractors.items():
        folder = folders[normalization] = features_dir / f"corpus_{normalization}"
        key = _cache_key(raw_digest, feature_extractor.to_json_string())
        if _load_cached(folder / CORPUS_KEY_FILE, key) is not None:
            continue
        if folder.exists():
            shutil.rmtree(folder)
        save_featurised(normalize_frames(corpus_raw, feature_extractor), folder, feature_extractor)
        _store_cached(folder / CORPUS_KEY_FILE, key, {"normalization": normalization})
    return folders, extractors


def targets_of(dataset, info) -> np.ndarray:
    """Class ids (single-label) or multi-hot rows (multi-label) of a dataset, in row order."""
    values = dataset[info.label_column]
    if info.problem_type == MULTI_LABEL:
        return np.array([to_multi_hot(v, info.num_labels) for v in values], dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def mean_and_std(frames: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of each channel of raw frames (2 x 324)."""
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)])


def cmvn_temporal_statistics(frames: np.ndarray) -> np.ndarray:
    """After per-clip CMVN (as MusiCoder sees the frames): 10th, 50th and 90th percentiles over time and the mean
    absolute frame-to-frame change of each channel (4 x 324)."""
    frames = MusiCoderFeatureExtractor.cmvn(frames).astype(np.float64)
    return np.concatenate([*np.percentile(frames, (10, 50, 90), axis=0), np.abs(np.diff(frames, axis=0)).mean(axis=0)])


def pooled_statistics(pooled, summary=mean_and_std, batch_size: int = 32) -> np.ndarray:
    """Hand-crafted clip features: `summary` of each clip's raw (un-normalised) frames, one row per clip."""
    out = []
    data = pooled.with_format("numpy", columns=["input_features"])
    for first in range(0, len(pooled), batch_size):
        for frames in data[first : first + batch_size]["input_features"]:
            out.append(summary(np.asarray(frames, dtype=np.float64)))
    return np.asarray(out, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------------
# scikit-learn rows (hand-crafted baseline, MLP probes): select on validation, score the test split
# ---------------------------------------------------------------------------------------------------------------------


def _make_estimator(kind: str, value: float, problem_type: str, seed: int, scale: ExperimentScale):
    if kind == "logreg":
        model = LogisticRegression(C=value, max_iter=5000)
    elif kind == "svm":
        model = SVC(C=value, kernel="rbf", gamma="scale")
    elif kind == "mlp":  # MARBLE probe: one hidden layer of 512 units; multi-label natively (logistic outputs)
        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(scale.probe_hidden_units,), alpha=value, max_iter=scale.probe_max_iter,
            random_state=seed,
        ))
    else:
        raise ValueError(f"unknown estimator {kind!r}")
    if problem_type == MULTI_LABEL:
        model = OneVsRestClassifier(model)
    return make_pipeline(StandardScaler(), model)


def fit_select_score(kind: str, values, features: np.ndarray, targets: np.ndarray, rows: dict, problem_type: str,
                     seed: int, scale: ExperimentScale) -> dict:
    """Fit on `rows["train"]` for each value of the grid, keep the best on `rows["validation"]`, score the test rows
    (`musicoder_hf.evaluation.select_on_validation`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of short MLP runs: the budget is fixed on purpose
        return select_on_validation(lambda value: _make_estimator(kind, value, problem_type, seed, scale), values,
                                    {split: features[rows[split]] for split in ("train", "validation", "test")},
                                    {split: targets[rows[split]] for split in ("train", "validation", "test")},
                                    problem_type)


# ---------------------------------------------------------------------------------------------------------------------
# MusiCoder rows: pre-training and fine-tuning
# ---------------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------------
# jobs: pre-trainings, fine-tunings and probes are independent, so they run in worker processes
# ---------------------------------------------------------------------------------------------------------------------


# Entered once in each worker process and never left: the worker keeps one torch and one BLAS thread for its life.
_WORKER_THREADS = contextlib.ExitStack()


def _init_worker() -> None:
    transformers.logging.set_verbosity_error()
    logging.basicConfig(level=logging.WARNING)
    _WORKER_THREADS.enter_context(single_threaded())


class JobRunner:
    """Run independent jobs in `workers` spawned processes of one thread each, or in this process (with the same one
    thread, so numbers do not depend on the number of workers) when `workers` <= 1. Several threads per process would
    spin against the other jobs on a machine whose cores they share."""

    def __init__(self, workers: int = 1):
        self.workers, self.pool, self.in_process = workers, None, contextlib.ExitStack()

    def __enter__(self):
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker)
        else:
            self.in_process.enter_context(single_threaded())
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        self.in_process.close()

    def run(self, jobs: list[tuple]):
        """Yield (index, result) for `jobs` = [(function, args), ...] as they finish."""
        if self.pool is None:
            for index, (function, args) in enumerate(jobs):
                yield index, function(*args)
            return
        futures = {self.pool.submit(function, *args): index for index, (function, args) in enumerate(jobs)}
        for future in as_completed(futures):
            yield futures[future], future.result()


@functools.lru_cache(maxsize=4)
def _load_dataset(path: str):
    return load_from_disk(path)


def pretraining_arguments(variant: str, corpus_dirs: dict, output_dir: Path, scale: ExperimentScale, seed: int):
    cfm, ccm, normalization = PRETRAINING_VARIANTS[variant]
    return PretrainingArguments(
        data_dir=str(corpus_dirs[normalization]), output_dir=str(output_dir / f"pretrain_{variant}"),
        preset="musicoder-base",
        # attention-probability dropout off: on CPU it costs more than the matmuls of a model this small
        config_overrides=scale.model_overrides() + ",attention_probs_dropout_prob=0.0",
        cfm=cfm, ccm=ccm, per_device_train_batch_size=scale.pretrain_batch_size, max_steps=scale.pretrain_steps,
        warmup_steps=scale.pretrain_warmup_steps, lr_scale=scale.pretrain_lr_scale,
        max_frames=scale.pretrain_max_frames, eval_every=max(1, scale.pretrain_steps // 4),
        save_every=scale.pretrain_steps, log_every=max(1, scale.pretrain_steps // 40), seed=seed, resume=True,
        report_to="none", cpu=True,
    )


def _pretrain_job(args) -> dict:
    started = time.time()
    summary = pretrain(args)
    summary.pop("model", None)
    summary["wall_seconds"] = round(time.time() - started, 1)
    summary = json.loads(json.dumps(summary, default=str))
    (Path(args.output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def pretrain_variants(corpus_dirs: dict, output_dir: Path, scale: ExperimentScale, seed: int,
                      runner: JobRunner) -> dict:
    """Pre-train one encoder per variant (same budget, seed, data order and initial weights) on the corpus normalised
    as the variant says (`corpus_dirs`: {normalisation: folder}); reuse a finished pre-training with the same
    arguments and the same frames."""
    fingerprints = {name: dataset_digest(load_from_disk(str(folder))) for name, folder in corpus_dirs.items()}
    summaries, jobs = {}, []
    for variant in PRETRAINING_VARIANTS:
        args = pretraining_arguments(variant, corpus_dirs, output_dir, scale, seed)
        run_dir = Path(args.output_dir)
        corpus_fingerprint = fingerprints[PRETRAINING_VARIANTS[variant][2]]
        job = {"arguments": json.loads(json.dumps(asdict(args), default=str)), "corpus_fingerprint": corpus_fingerprint}
        summary_file, job_file = run_dir / "summary.json", run_dir / "job.json"
        if summary_file.exists() and (run_dir / "final" / "model.safetensors").exists():
            summary = json.loads(summary_file.read_text())
            if {key: summary.get(key) for key in job} == job:
                summaries[variant] = {**summary, "reused": True}
                continue
        # `pretrain` resumes from the run's latest checkpoint: only an interrupted run of this very job may be resumed,
        # never one on other data or with other arguments.
        if run_dir.exists() and not (job_file.exists() and json.loads(job_file.read_text()) == job):
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        job_file.write_text(json.dumps(job, indent=2))
        jobs.append((variant, args))
    for index, summary in runner.run([(_pretrain_job, (args,)) for _, args in jobs]):
        variant = jobs[index][0]
        summary["corpus_fingerprint"] = fingerprints[PRETRAINING_VARIANTS[variant][2]]
        (Path(jobs[index][1].output_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
        summaries[variant] = summary
        print(f"  pre-trained {variant}: loss {summary['final_loss']:.4f}, validation "
              f"{summary['final_eval_loss']:.4f}, {summary['wall_seconds']:.0f} s", flush=True)
    return {variant: summaries[variant] for variant in PRETRAINING_VARIANTS}


def finetune_split(data, init: str | None, scale: ExperimentScale, output_dir: Path, seed: int,
                   pooling: str = "mean") -> dict:
    """Fine-tune on one split (DatasetDict train/validation/test, normalised frames) over the scale's grid, with a
    head that pools with `pooling`.

    Same loop as `finetuning.finetune` (`train_one`: best epoch of the best learning rate on validation), on data in
    memory. `init` is a pre-trained folder, or None for random initialisation.
    """
    args = FinetuningArguments(
        data_dir="(in memory)", output_dir=str(output_dir), model_name_or_path=init, from_scratch=init is None,
        preset="musicoder-base", config_overrides=scale.model_overrides() if init is None else None,
        learning_rate=scale.learning_rates[0], per_device_train_batch_size=scale.finetune_batch_size,
        num_epochs=scale.finetune_epochs, dropout=scale.dropout, attention_dropout=0.0,
        grid_overrides="learning_rate=" + "|".join(str(lr) for lr in scale.learning_rates),
        max_frames=scale.finetune_max_frames, seed=seed, report_to="none", cpu=True,
        probe_epochs=0,  # the paper's protocol: the whole model at one rate from the first step
        classifier_pooling=pooling,
    )
    accelerator = build_accelerator(args.output_dir, None, 1, "none", cpu=True)
    info = label_info(data["train"])
    runs, leader = train_grid(args, accelerator, data, info)
    model = MusiCoderForSequenceClassification.from_pretrained(output_dir / "best")
    logits = predict_logits(model, data["test"]["input_features"], batch_size=args.per_device_eval_batch_size)
    best = runs[leader["run"]]
    return {
        "selected": {**best["hyperparameters"], "epoch": leader["epoch"]},
        "validation": best["best"]["validation"],
        "test": compute_metrics(logits, targets_of(data["test"], info), info.problem_type),
        "test_logits": logits.tolist(),
        "history": [{"learning_rate": run["hyperparameters"]["learning_rate"], "epochs": run["history"]}
                    for run in runs],
    }


# ---------------------------------------------------------------------------------------------------------------------
# frozen-encoder embeddings for the probes
# ---------------------------------------------------------------------------------------------------------------------


def load_encoder(init: str | None, scale: ExperimentScale, seed: int) -> MusiCoderModel:
    if init is not None:
        return MusiCoderModel.from_pretrained(init)
    torch.manual_seed(seed)
    config = MusiCoderConfig.from_preset("musicoder-base", **parse_overrides(scale.model_overrides()))
    return MusiCoderModel(config)


def _finetune_job(dataset_path: str, rows: dict, init: str | None, scale: ExperimentScale, output_dir: Path,
                  seed: int, pooling: str = "mean") -> dict:
    normalised = _load_dataset(dataset_path)
    started = time.time()
    result = finetune_split(DatasetDict({part: normalised.select(ids) for part, ids in rows.items()}), init, scale,
                            output_dir, seed, pooling)
    result["seconds"] = round(time.time() - started, 1)
    return result


def _probe_job(dataset_path: str, init: str | None, targets: np.ndarray, splits: list, problem_type: str,
               scale: ExperimentScale, seed: int) -> dict:
    """MLP probe (MARBLE: one 512-unit hidden layer) on every layer's frozen, mean-pooled embedding, every split. Long
    clips are read in windows as the model reads them."""
    started = time.time()
    encoder = load_encoder(init, scale, seed)
    encoder.eval()
    embeddings = pooled_hidden_states(encoder, _load_dataset(dataset_path).with_format("numpy")["input_features"])
    layers = []
    for layer in range(embeddings.shape[1]):
        per_split = {name: fit_select_score("mlp", scale.probe_alphas, embeddings[:, layer], targets, rows,
                                            problem_type, seed, scale)
                     for name, rows in splits}
        layers.append({"splits": per_split})
    return {"layers": layers, "seconds": round(time.time() - started, 1)}


# ---------------------------------------------------------------------------------------------------------------------
# summaries, statistics, table and plot
# ---------------------------------------------------------------------------------------------------------------------


def summarise(per_split: dict, metrics=("accuracy", "roc_auc_macro", "pr_auc_macro")) -> dict:
    """Mean, standard deviation (ddof=1) and count over splits of each test metric present."""
    out = {}
    for metric in metrics:
        values = [result["test"][metric] for result in per_split.values() if metric in result["test"]]
        if values:
            out[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1
                           else 0.0, "n": len(values), "values": [float(v) for v in values]}
    return out


def paired_folds(a: list[float], b: list[float]) -> dict:
    """a - b over paired folds: mean, std, wins/ties/losses and a two-sided paired t-test."""
    a, b = np.asarray(a), np.asarray(b)
    difference = a - b
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_value = float(stats.ttest_rel(a, b).pvalue) if len(a) > 1 and np.any(difference != difference[0]) else None
    return {"mean_difference": float(difference.mean()), "std_difference": float(difference.std(ddof=1))
            if len(a) > 1 else 0.0, "wins": int((difference > 0).sum()), "ties": int((difference == 0).sum()),
            "losses": int((difference < 0).sum()), "p_value": p_value}


def _macro_auc(metric, scores: np.ndarray, references: np.ndarray) -> float:
    """Macro average of a scikit-learn ranking metric over the classes with both positives and negatives (the
    shipped metrics' rule): a bootstrap resample may lack a rare tag."""
    positives = references.sum(axis=0)
    kept = (positives > 0) & (positives < len(references))
    return float(metric(references[:, kept], scores[:, kept], average="macro")) if kept.any() else float("nan")


def _ranking_metrics():
    return (("roc_auc_macro", roc_auc_score), ("pr_auc_macro", average_precision_score))


def paired_bootstrap(logits_a, logits_b, references, seed: int, resamples: int = 1000) -> dict:
    """Difference (a - b) of ROC-AUC macro and PR-AUC macro over test clips resampled with replacement (paired)."""
    logits_a, logits_b, references = np.asarray(logits_a), np.asarray(logits_b), np.asarray(references)
    rng = np.random.default_rng(seed)
    out = {}
    for name, function in _ranking_metrics():
        differences = []
        for _ in range(resamples):
            index = rng.integers(0, len(references), len(references))
            a = _macro_auc(function, logits_a[index], references[index])
            b = _macro_auc(function, logits_b[index], references[index])
            if not (math.isnan(a) or math.isnan(b)):
                differences.append(a - b)
        differences = np.asarray(differences)
        out[name] = {
            "mean_difference": float(_macro_auc(function, logits_a, references)
                                     - _macro_auc(function, logits_b, references)),
            "ci95": [float(np.percentile(differences, 2.5)), float(np.percentile(differences, 97.5))],
            "probability_positive": float((differences > 0).mean()),
            "resamples": len(differences),
        }
    return out


def bootstrap_interval(logits, references, seed: int, resamples: int = 1000) -> dict:
    """95% percentile interval of ROC-AUC macro and PR-AUC macro over test clips resampled with replacement."""
    logits, references = np.asarray(logits), np.asarray(references)
    rng = np.random.default_rng(seed)
    indices = [rng.integers(0, len(references), len(references)) for _ in range(resamples)]
    out = {}
    for name, function in _ranking_metrics():
        values = [_macro_auc(function, logits[i], references[i]) for i in indices]
        values = [v for v in values if not math.isnan(v)]
        out[name] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    return out


# (row, against): CFM + CCM against every other row, and each single masking against no pre-training.
COMPARISONS = (("cfm_ccm", "scratch"), ("cfm_ccm", "cfm"), ("cfm_ccm", "ccm"), ("cfm_ccm", "handcrafted_logreg"),
               ("cfm_ccm", "handcrafted_svm"), ("cfm_ccm", "handcrafted_cmvn_logreg"), ("cfm", "scratch"),
               ("ccm", "scratch"),
               # normalisation (same pooling) and pooling (same normalisation)
               ("cfm_ccm_dataset", "cfm_ccm"), ("cfm_ccm_dataset_mean_std", "cfm_ccm_mean_std"),
               ("cfm_ccm_mean_std", "cfm_ccm"), ("cfm_ccm_dataset_mean_std", "cfm_ccm_dataset"),
               ("cfm_ccm_dataset_mean_std", "handcrafted_logreg"))


def paired_comparison(task_results: dict, row: str, other: str, seed: int) -> dict:
    """`row` against `other` on one task: test accuracy over the paired folds (CV task), or a paired bootstrap of the
    held-out test clips (every metric)."""
    rows = task_results["rows"]
    if task_results["cross_validation"]:
        splits = list(rows[row]["splits"])
        return paired_folds([rows[row]["splits"][s]["test"]["accuracy"] for s in splits],
                            [rows[other]["splits"][s]["test"]["accuracy"] for s in splits])
    split = next(iter(rows[row]["splits"]))
    return paired_bootstrap(rows[row]["splits"][split]["test_logits"], rows[other]["splits"][split]["test_logits"],
                            task_results["test_references"][split], seed=seed)


def compare(results: dict, seed: int) -> dict:
    """Paired comparisons of `COMPARISONS` per task: over folds (CV task) or by bootstrap over test clips."""
    return {task: {f"{row}|{other}": paired_comparison(task_results, row, other, seed)
                   for row, other in COMPARISONS if row in task_results["rows"] and other in task_results["rows"]}
            for task, task_results in results["tasks"].items()}


def normalization_and_pooling(results: dict) -> dict:
    """Per task: the CFM + CCM rows of the 2 x 2 of normalisation and pooling ({(normalisation, pooling): mean of the
    task's metric}) and the best of them."""
    out = {}
    for task, task_results in results["tasks"].items():
        metric = "accuracy" if task_results["cross_validation"] else "roc_auc_macro"
        scores = {(normalization, pooling): task_results["rows"][key]["summary"][metric]["mean"]
                  for key, normalization, pooling in NORMALIZATION_POOLING_ROWS if key in task_results["rows"]}
        if scores:
            out[task] = {"metric": metric, "scores": scores, "best": max(scores, key=scores.get)}
    return out


def _fmt(summary: dict, metric: str, with_std: bool) -> str:
    if metric not in summary:
        return "-"
    value = summary[metric]
    return f"{value['mean']:.3f} ± {value['std']:.3f}" if with_std else f"{value['mean']:.3f}"


def render_markdown(results: dict) -> str:
    """The results table, the per-layer probe table, the comparisons and the compute, as markdown."""
    folk, instruments = results["tasks"]["folk"], results["tasks"]["instruments"]
    scale = results["scale"]
    lines = [
        "# MusiCoder: the paper's ablation on our own music",
        "",
        f"Produced by `{results['command']}` (scale `{scale['name']}`, seed {results['seed']}).",
        "",
        f"- **Folk tradition** (single-label, {len(folk['labels'])} classes, {folk['num_clips']} clips of 30 s, chance "
        f"{1 / len(folk['labels']):.2f}): {folk['num_splits']}-fold cross-validation, each fold's other pieces split "
        "80/20 train/validation per class (the paper's GTZAN protocol); test accuracy mean ± standard deviation over "
        "folds.",
        f"- **Instrument tagging** (multi-label, {len(instruments['labels'])} families, {instruments['num_clips']} "
        f"pieces, {instruments['num_test']} in the held-out test split): ROC-AUC macro and PR-AUC macro on the test "
        "split (the paper's MTG-Jamendo protocol), with a 95% bootstrap interval over test pieces.",
        "",
        "| model | folk accuracy | instruments ROC-AUC macro | instruments PR-AUC macro |",
        "|---|---|---|---|",
    ]
    for key, title in ROWS.items():
        if key not in folk["rows"]:
            continue
        f_sum, i_row = folk["rows"][key]["summary"], instruments["rows"][key]
        i_sum = i_row["summary"]
        ci = i_row.get("ci95", {})
        cells = [_fmt(f_sum, "accuracy", True)]
        for metric in ("roc_auc_macro", "pr_auc_macro"):
            text = _fmt(i_sum, metric, False)
            if metric in ci:
                text += f" [{ci[metric][0]:.2f}, {ci[metric][1]:.2f}]"
            cells.append(text)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    decided = normalization_and_pooling(results)
    if decided:
        lines += ["", "## Normalisation and pooling", "",
                  "CFM + CCM pre-trained and fine-tuned on frames normalised per clip (CMVN, the paper) or with the "
                  "corpus's per-channel statistics (`normalization=\"dataset\"`), with a head that pools the mean "
                  "(the paper) or the mean and standard deviation over time (`classifier_pooling=\"mean_std\"`). "
                  "Paired comparisons are below.", "",
                  "| task (metric) | " + " | ".join(f"{n}, {p}" for _, n, p in NORMALIZATION_POOLING_ROWS)
                  + " | best |", "|---|" + "---|" * (len(NORMALIZATION_POOLING_ROWS) + 1)]
        for task, entry in decided.items():
            lines.append(f"| {task} ({entry['metric']}) | " + " | ".join(
                f"{entry['scores'][(n, p)]:.3f}" if (n, p) in entry["scores"] else "-"
                for _, n, p in NORMALIZATION_POOLING_ROWS) + f" | {', '.join(entry['best'])} |")
    lines += ["", "## Which layer? Frozen-encoder MLP probes (MARBLE protocol)", "",
              f"Mean-pooled hidden state of each layer (0 = input embedding) of each encoder, on the frames normalised "
              "as in its pre-training, standardised, MLP with one "
              f"{scale['probe_hidden_units']}-unit hidden layer (L2 alpha in {list(scale['probe_alphas'])}, best on "
              "validation), same splits as above. Plot: `model_cards/paper_layer_probe.png`.", "",
              "| encoder | layer | folk accuracy | instruments ROC-AUC macro | instruments PR-AUC macro |",
              "|---|---|---|---|---|"]
    for encoder, title in PROBE_ENCODERS.items():
        for layer, f_sum in enumerate(folk["probes"].get(encoder, [])):
            i_sum = instruments["probes"][encoder][layer]
            lines.append(f"| {title} | {layer} | {_fmt(f_sum, 'accuracy', True)} | "
                         f"{_fmt(i_sum, 'roc_auc_macro', False)} | {_fmt(i_sum, 'pr_auc_macro', False)} |")
    lines += ["", "## Paired comparisons", "",
              "Folk: difference of test accuracy over the paired folds (mean ± std, folds won/tied/lost, two-sided "
              "paired t-test). Instruments: difference on the test split with a paired bootstrap 95% interval (1000 "
              "resamples of the test pieces) and the share of resamples in which the first row is ahead.", "",
              "| comparison | folk accuracy difference | instruments ROC-AUC difference | instruments PR-AUC difference |",
              "|---|---|---|---|"]
    short = {key: short_title(key).replace("MusiCoder, ", "").replace("pre-trained with ", "") for key in ROWS}
    for pair, folk_cmp in results["comparisons"]["folk"].items():
        inst = results["comparisons"]["instruments"][pair]
        row, other = pair.split("|")
        p_value = "n/a" if folk_cmp["p_value"] is None else f"{folk_cmp['p_value']:.3f}"
        cells = [f"{folk_cmp['mean_difference']:+.3f} ± {folk_cmp['std_difference']:.3f} "
                 f"({folk_cmp['wins']}/{folk_cmp['ties']}/{folk_cmp['losses']}, p = {p_value})"]
        for metric in ("roc_auc_macro", "pr_auc_macro"):
            c = inst[metric]
            cells.append(f"{c['mean_difference']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], "
                         f"ahead in {100 * c['probability_positive']:.0f}%")
        lines.append(f"| {short[row]} vs {short[other]} | " + " | ".join(cells) + " |")
    compute = results["compute"]
    pretraining = results["pretraining"]
    lines += [
        "", "## Compute and settings", "",
        f"- Machine: {compute['machine']}; {compute['workers']} worker process(es) of one thread. Wall time "
        f"{compute['total_seconds'] / 60:.1f} min: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in
                                                                compute["stage_seconds"].items()) + " (min)"
        + (f"; this invocation reused {compute['jobs_reused']} of {compute['jobs_total']} fine-tuning / probe jobs "
           f"and {compute.get('pretrainings_reused', 0)} of {len(PRETRAINING_VARIANTS)} pre-trainings from an earlier "
           "run in the output folder, "
           "so these times are not the cost of a full run." if compute.get("jobs_reused") else ".") ,
        f"- Encoder: {scale['num_hidden_layers']} layers, H = {scale['hidden_size']}, {scale['num_attention_heads']} "
        f"heads, FFN {scale['intermediate_size']} ({compute['encoder_parameters'] / 1e6:.2f}M parameters), "
        "attention-probability dropout 0.",
        "- Pre-training (each of CFM, CCM, CFM + CCM on per-clip CMVN frames, and CFM + CCM on frames standardised "
        "with the corpus's per-channel statistics; same seed, data order and initial weights): "
        f"{scale['pretrain_steps']} steps of {scale['pretrain_batch_size']} random crops of "
        f"{scale['pretrain_max_frames']} frames from {compute['corpus_clips']} game-soundtrack clips "
        f"({scale['corpus_minutes']:g} min), Noam schedule x {scale['pretrain_lr_scale']} with "
        f"{scale['pretrain_warmup_steps']} warm-up steps; final train / validation loss: "
        + "; ".join(f"{v} {pretraining[v]['final_loss']:.3f} / {pretraining[v]['final_eval_loss']:.3f}"
                    for v in PRETRAINING_VARIANTS if v in pretraining) + ".",
        "- Fine-tuning (every MusiCoder row, every split, on frames normalised as in its encoder's pre-training; "
        "mean pooling unless the row says statistics pooling): learning rate in "
        f"{list(scale['learning_rates'])} x epoch "
        f"1..{scale['finetune_epochs']}, best on validation (accuracy for folk, PR-AUC macro for instruments); "
        f"batch {scale['finetune_batch_size']}, random crops of {scale['finetune_max_frames']} frames, Adam, linear "
        f"decay with 10% warm-up, dropout {scale['dropout']}; evaluation on whole clips. "
        f"{compute['finetuning_runs']} fine-tuning runs in all ({compute['finetuning_seconds_summed'] / 60:.0f} "
        "min of worker time).",
        f"- Hand-crafted rows: logistic regression C in {list(scale['logistic_c'])}, SVM (RBF) C in "
        f"{list(scale['svm_c'])}, after standardisation, best on validation (one-vs-rest for tags). The features are "
        "mean and std over time of the 324 frames *before* CMVN (after per-clip CMVN they are constant, 0 and 1), or, "
        "for the third row, the 10th / 50th / 90th percentiles and mean absolute frame-to-frame change of the CMVN'd "
        "frames: what is left of clip statistics in the input MusiCoder sees.",
    ]
    if "shipped" in results:
        lines += ["", results["shipped"]["markdown"]]
    return "\n".join(lines) + "\n"


def plot_layer_probe(results: dict, path: str | os.PathLike) -> None:
    """Probe score per layer for each frozen encoder (folk: fold mean with fold std; instruments: test score), with
    the hand-crafted and fine-tuned rows as horizontal references."""
    panels = (("folk", "accuracy", "Folk tradition: accuracy (10-fold mean, bars: fold std)"),
              ("instruments", "roc_auc_macro", "Instrument tagging: ROC-AUC macro (held-out test)"))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    offsets = np.linspace(-0.09, 0.09, len(PROBE_ENCODERS))
    for axis, (task, metric, title) in zip(axes, panels):
        task_results = results["tasks"][task]
        for offset, (encoder, label) in zip(offsets, PROBE_ENCODERS.items()):
            summaries = task_results["probes"].get(encoder)
            if not summaries:
                continue
            layers = np.arange(len(summaries)) + offset
            means = np.array([s[metric]["mean"] for s in summaries])
            stds = np.array([s[metric]["std"] for s in summaries]) if task_results["cross_validation"] else None
            axis.errorbar(layers, means, yerr=stds, marker="o", capsize=3, elinewidth=0.8,
                          label=f"MLP probe on frozen encoder: {label}")
        for key, style in (("handcrafted_logreg", "--"), ("handcrafted_cmvn_logreg", (0, (6, 2, 1, 2))),
                           ("cfm_ccm", ":"), ("scratch", "-.")):
            if key in task_results["rows"]:
                axis.axhline(task_results["rows"][key]["summary"][metric]["mean"], linestyle=style, color="gray",
                             label=short_title(key) + " (fine-tuned)" * (key in MUSICODER_ROWS))
        if task == "folk":
            axis.axhline(1 / len(task_results["labels"]), color="black", linewidth=0.8, label="chance (folk)")
        axis.set(title=title, xlabel="layer (0 = input embedding)", ylabel=metric)
        axis.set_xticks(range(results["scale"]["num_hidden_layers"] + 1))
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.17, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------------
# the whole experiment
# ---------------------------------------------------------------------------------------------------------------------


def _cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_cached(path: Path, key: str):
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored["result"]
    return None


def _store_cached(path: Path, key: str, result: dict) -> None:
    write_json(path, {"key": key, "result": result}, indent=None, default=float)


def run_experiments(data: dict, output_dir: str | os.PathLike, scale: ExperimentScale, seed: int = 0,
                    command: str = "", stage_seconds: dict | None = None, tasks: tuple[str, ...] = TASKS,
                    workers: int = 1) -> dict:
    """Pre-train every variant of `PRETRAINING_VARIANTS` on `data["corpus"]` and evaluate every row on `data["folk"]`
    (cross-validation) and `data["instruments"]` (held-out split). `data` holds featurised DatasetDicts of
    un-normalised frames; each encoder gets them normalised as in its pre-training. Pre-trainings, fine-tunings and
    probes run in `workers` processes of one thread each (results do not depend on `workers`) and are cached under
    `output_dir`, so an interrupted run resumes. Returns the results dict, also written to
    `output_dir/results.json`. `tasks` selects a subset (the table needs both)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stage_seconds = dict(stage_seconds or {})
    started = time.time()
    scale_key = asdict(scale)
    corpus_dirs, extractors = normalised_corpora(data["corpus"], output_dir / "features")

    with JobRunner(workers) as runner:
        t = time.time()
        print(f"== pre-training {', '.join(PRETRAINING_VARIANTS)} ({scale.pretrain_steps} steps each, {workers} "
              "worker(s))", flush=True)
        pretraining = pretrain_variants(corpus_dirs, output_dir, scale, seed, runner)
        stage_seconds["pre-training"] = time.time() - t
        inits = {"scratch": None, **{v: str(output_dir / f"pretrain_{v}" / "final") for v in PRETRAINING_VARIANTS}}
        # cached results follow the pre-training and the normalisation statistics
        pretrain_key = {v: (pretraining[v].get("final_loss"), extractors[PRETRAINING_VARIANTS[v][2]].to_json_string())
                        for v in PRETRAINING_VARIANTS}

        results = {"command": command, "seed": seed, "scale": scale_key, "output_dir": str(output_dir),
                   "pretraining": pretraining, "tasks": {}}
        t = time.time()
        jobs, pending, prepared = [], [], {}
        for task in tasks:
            raw = data[task]
            info = label_info(raw)
            cv = task == "folk"
            splits, pooled = split_rows(raw, cv, scale.n_folds, seed)
            targets = targets_of(pooled, info)
            data_key = dataset_digest(raw)  # cached results follow the features
            dataset_paths = {}
            for normalization in NORMALIZATIONS:
                path = output_dir / "features" / f"{task}_{normalization}"
                if path.exists():
                    shutil.rmtree(path)
                normalise(pooled, extractors[normalization]).save_to_disk(path)  # the workers memory-map it
                dataset_paths[normalization] = str(path)
            _load_dataset.cache_clear()
            task_results = {
                "problem_type": info.problem_type, "labels": info.names, "cross_validation": cv,
                "num_clips": len(pooled), "num_splits": len(splits), "num_test": len(splits[0][1]["test"]),
                "splits": {name: rows for name, rows in splits},
                "test_references": {name: targets[rows["test"]].tolist() for name, rows in splits},
                "rows": {}, "probes": {},
            }
            results["tasks"][task] = task_results
            prepared[task] = (splits, targets, info)
            print(f"== {task}: {len(pooled)} clips, {len(splits)} split(s)", flush=True)
            statistics = {"raw": pooled_statistics(pooled), "cmvn": pooled_statistics(pooled, cmvn_temporal_statistics)}
            for key, kind, grid, inputs in (("handcrafted_logreg", "logreg", scale.logistic_c, "raw"),
                                            ("handcrafted_svm", "svm", scale.svm_c, "raw"),
                                            ("handcrafted_cmvn_logreg", "logreg", scale.logistic_c, "cmvn")):
                per_split = {name: fit_select_score(kind, grid, statistics[inputs], targets, rows, info.problem_type,
                                                    seed, scale) for name, rows in splits}
                task_results["rows"][key] = {"splits": per_split, "summary": summarise(per_split)}
                print(f"  {ROWS[key]}: {_brief(task_results['rows'][key]['summary'])}", flush=True)
            for key, (encoder, normalization, pooling) in ROW_SETUPS.items():
                task_results["rows"][key] = {"splits": {}}
                for name, rows in splits:
                    split_dir = output_dir / "finetune" / task / key / name
                    cache = (split_dir / "result.json", _cache_key(scale_key, seed, key, pretrain_key.get(encoder),
                                                                    rows, data_key))
                    jobs.append((("finetune", task, key, name), cache,
                                 (_finetune_job, (dataset_paths[normalization], rows, inits[encoder], scale, split_dir,
                                                  seed, pooling))))
            for encoder in PROBE_ENCODERS:
                cache = (output_dir / "probes" / task / f"{encoder}.json",
                         _cache_key(scale_key, seed, encoder, pretrain_key.get(encoder), task_results["splits"],
                                    data_key))
                jobs.append((("probe", task, encoder, None), cache,
                             (_probe_job, (dataset_paths[normalization_of(encoder)], inits[encoder], targets, splits,
                                           info.problem_type, scale, seed))))
        stage_seconds["hand-crafted"] = time.time() - t

        t = time.time()
        done = {}
        for what, cache, _ in jobs:
            cached = _load_cached(*cache)
            if cached is not None:
                done[what] = cached
            else:
                pending.append((what, cache))
        print(f"== {len(pending)} fine-tuning / probe jobs to run ({len(jobs) - len(pending)} cached), "
              f"{workers} worker(s)", flush=True)
        job_of = {what: job for what, _, job in jobs}
        for index, result in runner.run([job_of[what] for what, _ in pending]):
            what, cache = pending[index]
            _store_cached(*cache, result)
            done[what] = result
            print(f"  {what[0]} {what[1]} {what[2]} {what[3] or ''}: {result['seconds']:.0f} s "
                  + (f"test {_brief(result['test'])}" if what[0] == "finetune" else ""), flush=True)
        stage_seconds["fine-tuning and probes"] = time.time() - t

    finetuning_runs = 0
    for task, task_results in results["tasks"].items():
        splits, targets, info = prepared[task]
        for key in MUSICODER_ROWS:
            per_split = {name: done[("finetune", task, key, name)] for name, _ in splits}
            finetuning_runs += len(per_split) * len(scale.learning_rates)
            task_results["rows"][key] = {"splits": per_split, "summary": summarise(per_split)}
            print(f"  {task} {ROWS[key]}: {_brief(task_results['rows'][key]['summary'])}", flush=True)
        for encoder, title in PROBE_ENCODERS.items():
            probe = done[("probe", task, encoder, None)]
            task_results["probes"][encoder] = [summarise(layer["splits"]) for layer in probe["layers"]]
            metric = "accuracy" if task_results["cross_validation"] else "roc_auc_macro"
            print(f"  {task} probe {title}: " + ", ".join(
                f"layer {i} {s[metric]['mean']:.3f}" for i, s in enumerate(task_results["probes"][encoder])),
                flush=True)
        if not task_results["cross_validation"]:  # bootstrap intervals of the held-out scores
            references = targets[splits[0][1]["test"]]
            for row in task_results["rows"].values():
                row["ci95"] = bootstrap_interval(next(iter(row["splits"].values()))["test_logits"], references, seed)

    results["comparisons"] = compare(results, seed)
    encoder = load_encoder(None, scale, seed)
    results["compute"] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU" if not torch.cuda.is_available()
        else f"{torch.cuda.get_device_name()}",
        "workers": workers,
        "threads_per_worker": 1,
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
        "total_seconds": round(stage_seconds.get("data and features", 0.0) + time.time() - started, 1),
        "encoder_parameters": encoder.num_parameters(),
        "corpus_clips": len(data["corpus"]["train"]) if "corpus" in data else None,
        "finetuning_runs": finetuning_runs,
        "jobs_reused": len(jobs) - len(pending),
        "jobs_total": len(jobs),
        "pretrainings_reused": sum(1 for v in pretraining.values() if v.get("reused")),
        "finetuning_seconds_summed": round(sum(r["seconds"] for w, r in done.items() if w[0] == "finetune"), 1),
        "probe_seconds_summed": round(sum(r["seconds"] for w, r in done.items() if w[0] == "probe"), 1),
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=1, default=float))
    return results


# ---------------------------------------------------------------------------------------------------------------------
# the shipped checkpoint (pretrained/musicoder-small): frozen probes per layer and on all layers, a fine-tuned row
# ---------------------------------------------------------------------------------------------------------------------

SHIPPED_POOLINGS = ("mean", "mean_std")


def shipped_embeddings(model_dir, pooled, pooling: str, random_init_seed: int | None = None) -> np.ndarray:
    """(clips, layers + 1, dim) frozen embeddings of a task's raw frames, normalised by the checkpoint's own feature
    extractor and pooled over time; `random_init_seed` gives the same architecture with random weights instead."""
    feature_extractor = MusiCoderFeatureExtractor.from_pretrained(model_dir)
    if random_init_seed is None:
        encoder = MusiCoderModel.from_pretrained(model_dir)
    else:
        torch.manual_seed(random_init_seed)
        encoder = MusiCoderModel(MusiCoderConfig.from_pretrained(model_dir))
    frames = [np.asarray(f, dtype=np.float32) for f in pooled.with_format("numpy")["input_features"]]
    with torch.no_grad():
        return pooled_hidden_states(encoder.eval(), feature_extractor.normalize(frames), pooling)


def _shipped_finetune_job(dataset_path: str, rows: dict, model_dir: str, output_dir: Path, seed: int) -> dict:
    """`training/finetune.py` with its defaults, from the shipped checkpoint, on one split (frames already normalised
    by the checkpoint's extractor)."""
    normalised = _load_dataset(dataset_path)
    started = time.time()
    data = DatasetDict({part: normalised.select(ids) for part, ids in rows.items()})
    args = FinetuningArguments(data_dir="", output_dir=str(output_dir), model_name_or_path=model_dir, seed=seed,
                               cpu=True)
    accelerator = build_accelerator(str(output_dir), None, 1, "none", True)
    info = label_info(data["train"])
    runs, leader = train_grid(args, accelerator, data, info)
    model = MusiCoderForSequenceClassification.from_pretrained(output_dir / "best")
    logits = predict_logits(model, data["test"]["input_features"], batch_size=8)
    targets = targets_of(data["test"], info)
    shutil.rmtree(output_dir / "best", ignore_errors=True)
    return {"test": compute_metrics(logits, targets, info.problem_type), "test_logits": logits.tolist(),
            "best_epoch": leader["epoch"], "seconds": round(time.time() - started, 1)}


def best_handcrafted(task_results: dict) -> str:
    metric = "accuracy" if task_results["cross_validation"] else "roc_auc_macro"
    candidates = [key for key in task_results["rows"] if key.startswith("handcrafted")]
    return max(candidates, key=lambda key: task_results["rows"][key]["summary"][metric]["mean"])


def evaluate_shipped(data: dict, model_dir, output_dir, scale: ExperimentScale, seed: int = 0,
                     finetune_rows: bool = True, workers: int = 1) -> dict:
    """Rows for the shipped checkpoint on both tasks, with the hand-crafted rows for reference and paired comparisons:

    - frozen probe (logistic regression, C on validation) on each layer and on all layers concatenated, for both
      poolings (mean; mean and standard deviation over time), and the same architecture with random weights (does
      pre-training help?);
    - `training/finetune.py` with its defaults from the checkpoint (when `finetune_rows`).
    """
    output_dir = Path(output_dir)
    model_dir = str(model_dir)
    key = shipped_cache_key(data, model_dir, scale, seed, finetune_rows)
    saved = output_dir / "shipped_results.json"
    if saved.exists() and json.loads(saved.read_text()).get("key") == key:  # same checkpoint, data and settings
        print(f"  reusing {saved} (same checkpoint, data and settings; --fresh redoes it)", flush=True)
        return json.loads(saved.read_text())
    results = {"model": model_dir, "key": key, "tasks": {}}
    for task in TASKS:
        raw = data[task]
        info = label_info(raw)
        cv = task == "folk"
        splits, pooled = split_rows(raw, cv, scale.n_folds, seed)
        targets = targets_of(pooled, info)
        task_results = {"problem_type": info.problem_type, "cross_validation": cv, "num_clips": len(pooled),
                        "num_splits": len(splits), "rows": {},
                        "test_references": {name: targets[rows["test"]].tolist() for name, rows in splits}}
        statistics = {"raw": pooled_statistics(pooled), "cmvn": pooled_statistics(pooled, cmvn_temporal_statistics)}
        statistics["both"] = np.concatenate([statistics["raw"], statistics["cmvn"]], axis=1)
        for key, inputs in (("handcrafted_logreg", "raw"), ("handcrafted_cmvn_logreg", "cmvn"),
                            ("handcrafted_both_logreg", "both")):
            per_split = {name: fit_select_score("logreg", scale.logistic_c, statistics[inputs], targets, rows,
                                                info.problem_type, seed, scale) for name, rows in splits}
            task_results["rows"][key] = {"splits": per_split, "summary": summarise(per_split)}
        for pooling in SHIPPED_POOLINGS:
            for encoder, init_seed in (("pretrained", None), ("random", seed)):
                embeddings = shipped_embeddings(model_dir, pooled, pooling, init_seed)
                layer_sets = {f"layer{k}": embeddings[:, k] for k in range(embeddings.shape[1])}
                layer_sets["all"] = embeddings.reshape(len(embeddings), -1)
                for name, features in layer_sets.items():
                    per_split = {split: fit_select_score("logreg", scale.logistic_c, features, targets, rows,
                                                         info.problem_type, seed, scale) for split, rows in splits}
                    task_results["rows"][shipped_probe_key(encoder, pooling, name)] = {
                        "splits": per_split, "summary": summarise(per_split)}
                print(f"  {task} {encoder} {pooling}: " + ", ".join(
                    f"{name} {_brief(task_results['rows'][shipped_probe_key(encoder, pooling, name)]['summary'])}"
                    for name in layer_sets), flush=True)
        if finetune_rows:
            feature_extractor = MusiCoderFeatureExtractor.from_pretrained(model_dir)
            dataset_path = output_dir / "features" / f"{task}_shipped"
            if dataset_path.exists():
                shutil.rmtree(dataset_path)
            normalise(pooled, feature_extractor).save_to_disk(dataset_path)
            _load_dataset.cache_clear()
            jobs = [(_shipped_finetune_job, (str(dataset_path), rows, model_dir, output_dir / "finetune" / task / name,
                                             seed)) for name, rows in splits]
            results_per_split = {}
            with JobRunner(workers) as runner:
                finished = list(runner.run(jobs))
            for index, result in finished:
                results_per_split[splits[index][0]] = result
                print(f"  {task} fine-tuned {splits[index][0]}: {_brief(result['test'])} ({result['seconds']:.0f} s)",
                      flush=True)
            per_split = {name: results_per_split[name] for name, _ in splits}
            task_results["rows"]["finetuned"] = {"splits": per_split, "summary": summarise(per_split)}
        results["tasks"][task] = task_results

    summarise_shipped(results, seed)
    write_json(output_dir / "shipped_results.json", results)
    return results


def shipped_cache_key(data: dict, model_dir: str, scale: ExperimentScale, seed: int, finetune_rows: bool) -> str:
    """What `evaluate_shipped`'s results depend on: the checkpoint's files, the task frames and the settings."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        digest.update((Path(model_dir) / name).read_bytes())
    return _cache_key(digest.hexdigest(), [dataset_digest(data[task]) for task in TASKS], asdict(scale), seed,
                      finetune_rows)


def shipped_probe_key(encoder: str, pooling: str, layers: str) -> str:
    """The row of a frozen probe of the shipped checkpoint, e.g. ("pretrained", "mean_std", "layer1")."""
    return f"{encoder}_{pooling}_{layers}"


def parse_shipped_probe_key(key: str) -> tuple[str, str, str] | None:
    """(encoder, pooling, layers) of a probe row of `evaluate_shipped`, None for other rows."""
    for encoder in ("pretrained", "random"):
        for pooling in sorted(SHIPPED_POOLINGS, key=len, reverse=True):  # "mean_std" before its prefix "mean"
            prefix = f"{encoder}_{pooling}_"
            if key.startswith(prefix):
                return encoder, pooling, key[len(prefix):]
    return None


def summarise_shipped(results: dict, seed: int) -> dict:
    """Add to `evaluate_shipped`'s rows the best probe of each pooling (chosen on validation), the paired comparisons
    against the best hand-crafted row and random init, the model card's entries and the markdown. Works on the saved
    `shipped_results.json` too, so the summary can be redone without the runs."""
    comparisons = {}
    for task, task_results in results["tasks"].items():
        rows = task_results["rows"]
        reference = best_handcrafted(task_results)
        selection = selection_metric(task_results["problem_type"])
        chosen = {}
        for pooling in SHIPPED_POOLINGS:
            keys = [k for k in rows if (parse_shipped_probe_key(k) or ("",))[:2] == ("pretrained", pooling)]
            chosen[pooling] = max(keys, key=lambda k: np.mean([s["validation"][selection]
                                                               for s in rows[k]["splits"].values()]))
        random_twin = {p: shipped_probe_key("random", p, parse_shipped_probe_key(chosen[p])[2])
                       for p in SHIPPED_POOLINGS}
        # (name, row, other): the same names on both tasks, whichever rows were chosen
        pairs = [(f"best probe ({p}) vs best hand-crafted", chosen[p], reference) for p in SHIPPED_POOLINGS]
        pairs += [(f"all layers ({p}): pre-trained vs random init", shipped_probe_key("pretrained", p, "all"),
                   shipped_probe_key("random", p, "all")) for p in SHIPPED_POOLINGS]
        pairs += [("best probe: mean_std vs mean pooling", chosen["mean_std"], chosen["mean"]),
                  ("best probe (mean_std): pre-trained vs random init", chosen["mean_std"], random_twin["mean_std"])]
        if "finetuned" in rows:
            pairs += [("fine-tuned vs best hand-crafted", "finetuned", reference),
                      ("fine-tuned vs best probe (mean_std)", "finetuned", chosen["mean_std"])]
        comparisons[task] = {name: {"row": row, "other": other, **paired_comparison(task_results, row, other, seed)}
                             for name, row, other in pairs}
        task_results["chosen_probes"] = chosen
        task_results["best_handcrafted"] = reference
    results["comparisons"] = comparisons
    # what the model card's model-index reports: per task, the frozen probe chosen on validation and the fine-tuned row
    results["card_results"] = [
        {"task": task, "protocol": f"frozen probe ({shipped_row_title(key)})" if protocol == "frozen probe"
         else shipped_row_title(key), "metric": metric,
         "value": task_results["rows"][key]["summary"][metric]["mean"]}
        for task, task_results in results["tasks"].items()
        for protocol, key in (("frozen probe", task_results["chosen_probes"]["mean_std"]), ("fine-tuned", "finetuned"))
        if key in task_results["rows"]
        for metric in (("accuracy",) if task_results["cross_validation"] else ("roc_auc_macro", "pr_auc_macro"))
    ]
    results["markdown"] = render_shipped_markdown(results)
    return results


def _p_text(comparison: dict, metric: str) -> str:
    if "p_value" in comparison:  # paired folds
        p = "n/a" if comparison["p_value"] is None else f"{comparison['p_value']:.3f}"
        return (f"{comparison['mean_difference']:+.3f} ± {comparison['std_difference']:.3f} ({comparison['wins']}/"
                f"{comparison['ties']}/{comparison['losses']}, p = {p})")
    c = comparison[metric]
    return (f"{c['mean_difference']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}], ahead in "
            f"{100 * c['probability_positive']:.0f}%")


def shipped_row_title(key: str) -> str:
    if key == "finetuned":
        return "fine-tuned (`training/finetune.py` defaults)"
    if key.startswith("handcrafted"):
        return {"handcrafted_logreg": "hand-crafted: mean + std of raw frames",
                "handcrafted_cmvn_logreg": "hand-crafted: percentiles + change of CMVN'd frames",
                "handcrafted_both_logreg": "hand-crafted: both"}[key]
    encoder, pooling, layers = parse_shipped_probe_key(key)
    layers = "all layers" if layers == "all" else layers.replace("layer", "layer ")
    return f"{'pre-trained' if encoder == 'pretrained' else 'random init'}, {pooling}, {layers}"


def render_shipped_markdown(shipped: dict) -> str:
    folk, instruments = shipped["tasks"]["folk"], shipped["tasks"]["instruments"]
    lines = [f"## The shipped checkpoint `{shipped['model']}`", "",
             "Frozen probes: logistic regression (C on validation) on the clip embedding of one layer or of all "
             "layers, pooled over time (mean, or mean and standard deviation), long clips read in windows as the "
             "model reads them; the same architecture with random weights shows what pre-training adds. "
             "Hand-crafted rows: the same classifier on clip statistics of the raw frames. Same splits as above.", "",
             "| row | folk accuracy | instruments ROC-AUC macro | instruments PR-AUC macro |", "|---|---|---|---|"]
    for key in folk["rows"]:
        f_sum, i_sum = folk["rows"][key]["summary"], instruments["rows"][key]["summary"]
        lines.append(f"| {shipped_row_title(key)} | {_fmt(f_sum, 'accuracy', True)} | "
                     f"{_fmt(i_sum, 'roc_auc_macro', False)} | {_fmt(i_sum, 'pr_auc_macro', False)} |")
    lines += ["", "Paired comparisons (folk: over folds, t-test; instruments: paired bootstrap of the test pieces). The "
              "best probe of each pooling is chosen on validation: folk "
              + ", ".join(shipped_row_title(v) for v in folk["chosen_probes"].values()) + "; instruments "
              + ", ".join(shipped_row_title(v) for v in instruments["chosen_probes"].values()) + ".", "",
              "| comparison | folk accuracy difference | instruments ROC-AUC difference |", "|---|---|---|"]
    for name, folk_comparison in shipped["comparisons"]["folk"].items():
        lines.append(f"| {name} | {_p_text(folk_comparison, 'accuracy')} | "
                     f"{_p_text(shipped['comparisons']['instruments'][name], 'roc_auc_macro')} |")
    return "\n".join(lines) + "\n"


def _brief(metrics: dict) -> str:
    """{'accuracy': 0.4, ...} or a summary {'accuracy': {'mean': ..}} -> 'accuracy 0.400, ...'."""
    return ", ".join(f"{k} {v['mean'] if isinstance(v, dict) else v:.3f}" for k, v in metrics.items())


def write_outputs(results: dict, output_dir: str | os.PathLike, model_cards_dir: str | os.PathLike | None) -> dict:
    """results.md + layer_probe.png in `output_dir`, copied to `model_cards_dir` as paper_results.md and
    paper_layer_probe.png when given."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table, plot = output_dir / "results.md", output_dir / "layer_probe.png"
    table.write_text(render_markdown(results))
    plot_layer_probe(results, plot)
    written = {"table": str(table), "plot": str(plot)}
    if model_cards_dir is not None:
        model_cards_dir = Path(model_cards_dir)
        model_cards_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(table, model_cards_dir / "paper_results.md")
        shutil.copyfile(plot, model_cards_dir / "paper_layer_probe.png")
        written.update(table=str(model_cards_dir / "paper_results.md"),
                       plot=str(model_cards_dir / "paper_layer_probe.png"))
    return written


# Fields of ExperimentScale that the command line can override.
SCALE_OVERRIDES = ("corpus_minutes", "tunes_per_class", "instrument_pieces", "hidden_size", "num_hidden_layers",
                   "num_attention_heads", "intermediate_size", "pretrain_steps", "pretrain_batch_size",
                   "pretrain_max_frames", "pretrain_warmup_steps", "finetune_epochs", "n_folds")


@dataclass
class ExperimentArguments:
    scale: str = field(default="small", metadata={"help": "Preset of data, encoder and budget.",
                                                  "choices": sorted(SCALES)})
    data_dir: str | None = field(default=None, metadata={
        "help": "Where the corpus and tasks are built, resumably (default: data/paper, or data/paper_<scale> for "
        "another scale: a task folder mirrors its last build)."})
    output_dir: str | None = field(default=None, metadata={"help": "Default: runs/paper, or runs/paper_<scale>."})
    model_cards_dir: str | None = field(default=None, metadata={
        "help": "paper_results.md and paper_layer_probe.png are copied here ('' to skip; default: model_cards for the "
        "small scale, skipped otherwise)."})
    seed: int = 0
    fresh: bool = field(default=False, metadata={"help": "Ignore cached results and pre-trainings in output_dir."})
    workers: int = field(default=2, metadata={
        "help": "Processes (one thread each) for pre-training, fine-tuning and probes; the numbers do not depend on it."})
    # Overrides of the scale's values (None: the scale's own)
    corpus_minutes: float | None = None
    tunes_per_class: int | None = None
    instrument_pieces: int | None = None
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    pretrain_steps: int | None = None
    pretrain_batch_size: int | None = None
    pretrain_max_frames: int | None = None
    pretrain_warmup_steps: int | None = None
    finetune_epochs: int | None = None
    n_folds: int | None = None
    # The shipped checkpoint's rows
    shipped_model: str = field(default="pretrained/musicoder-small", metadata={
        "help": "Checkpoint evaluated with frozen probes and `training/finetune.py` defaults ('' to skip)."})
    shipped_only: bool = field(default=False, metadata={
        "help": "Only the shipped checkpoint's rows (writes shipped_results.{json,md}); skips the ablation."})
    shipped_finetuning: bool = field(default=True, metadata={"help": "Include the shipped checkpoint's fine-tuned row."})


def main(argv=None) -> int:
    args = parse_command_line(command_line_parser(ExperimentArguments, description=__doc__), argv)
    # Hundreds of short training loops: progress bars would drown the log. Worker processes inherit this and read it
    # when they import tqdm.
    os.environ.setdefault("TQDM_DISABLE", "1")
    suffix = "" if args.scale == "small" else f"_{args.scale}"
    args.data_dir = args.data_dir or f"data/paper{suffix}"
    args.output_dir = args.output_dir or f"runs/paper{suffix}"
    if args.model_cards_dir is None:
        args.model_cards_dir = "model_cards" if args.scale == "small" else ""
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()  # no load report per fine-tuning run (the missing head is expected)
    for noisy in ("musicoder_hf.finetuning", "accelerate", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    scale = SCALES[args.scale].replace(**{name: getattr(args, name) for name in SCALE_OVERRIDES})
    command = "python training/experiments.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                        else sys.argv[1:]))
    if args.fresh and Path(args.output_dir).exists():
        shutil.rmtree(args.output_dir)
    started = time.time()
    print(f"== data: corpus {scale.corpus_minutes:g} min, folk {scale.tunes_per_class} tunes per class, instruments "
          f"{scale.instrument_pieces} pieces (into {args.data_dir})", flush=True)
    data = prepare_data(args.data_dir, scale, args.seed)
    shipped = None
    if args.shipped_model:
        print(f"== the shipped checkpoint {args.shipped_model}", flush=True)
        shipped = evaluate_shipped(data, args.shipped_model, args.output_dir, scale, seed=args.seed,
                                   finetune_rows=args.shipped_finetuning, workers=args.workers)
        (Path(args.output_dir) / "shipped_results.md").write_text(shipped["markdown"])
        print("\n" + shipped["markdown"], flush=True)
        if args.shipped_only:
            print(f"wrote {Path(args.output_dir) / 'shipped_results.md'} ({(time.time() - started) / 60:.1f} min)")
            return 0
    results = run_experiments(data, args.output_dir, scale, seed=args.seed, command=command.strip(),
                              stage_seconds={"data and features": time.time() - started}, workers=args.workers)
    if shipped is not None:
        results["shipped"] = shipped
    written = write_outputs(results, args.output_dir, args.model_cards_dir or None)
    print("\n" + render_markdown(results))
    print(f"wrote {written['table']} and {written['plot']} ({(time.time() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
