"""The end-to-end demo on real music (`make demo`): data -> pre-training -> fine-tuning -> evaluation -> Hub folder ->
pipeline, with a short report and training curves.

    python training/demo.py [--output_dir runs/demo] [--corpus_minutes 90] [--tunes_per_class 30] [--pretrain_steps 400]

A short pre-training run shows that loop on 90 minutes of music; the fine-tuning starts from the shipped checkpoint
(`pretrained/musicoder-small`, pre-trained on 16 h) with `training/finetune.py`'s defaults, on frames normalised by
that checkpoint's own feature extractor. Sized for a 2-core CPU machine in under 15 minutes including set-up; every
stage reuses what a previous run built.
"""

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from datasets import load_dataset
from transformers import pipeline

from musicoder_hf.builders import corpus, tasks
from musicoder_hf.data.features import featurize_once
from musicoder_hf.data.labeled import load_labeled_dataset
from musicoder_hf.feature_extraction_musicoder import MusiCoderFeatureExtractor
from musicoder_hf.finetuning import SHIPPED_CHECKPOINT, FinetuningArguments, finetune
from musicoder_hf.hub import prepare_hub_folder
from musicoder_hf.pretraining import PretrainingArguments, pretrain
from musicoder_hf.utils import command_line_parser, parse_command_line


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the headless backend)


@dataclass
class DemoArguments:
    output_dir: str = field(default="runs/demo", metadata={"help": "where the runs, the report and the plot go"})
    data_dir: str = field(default="data", metadata={"help": "where the corpus, the tasks and their features go"})
    corpus_minutes: float = field(default=90, metadata={"help": "minutes of game soundtracks to pre-train on"})
    tunes_per_class: int = field(default=30, metadata={"help": "folk tunes per class (train + validation + test)"})
    instrument_pieces: int = field(default=100, metadata={"help": "pieces of the instrument-tagging task"})
    pretrain_steps: int = field(default=400, metadata={"help": "pre-training optimizer steps"})
    pretrained_model: str = field(default=SHIPPED_CHECKPOINT, metadata={"help": "checkpoint to fine-tune"})
    seed: int = field(default=0, metadata={"help": "seed of the data builders, pre-training and fine-tuning"})



def stage(title):
    print(f"\n=== {title} ===", flush=True)
    return time.time()


def plot_curves(pretraining: dict, finetuning: dict[str, dict], path: Path):
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    history = pretraining["history"]
    axes[0].plot([r["step"] for r in history if "loss" in r], [r["loss"] for r in history if "loss" in r],
                 label="train")
    axes[0].plot([r["step"] for r in history if "eval_loss" in r], [r["eval_loss"] for r in history if "eval_loss" in r],
                 "o-", label="validation")
    axes[0].set(title="Pre-training (CFM + CCM): masked reconstruction loss", xlabel="optimizer step",
                ylabel="Huber loss")
    axes[0].legend()
    for name, metrics in finetuning.items():
        run = next(r for r in metrics["runs"] if r["hyperparameters"] == metrics["best_hyperparameters"])
        key = f"validation_{metrics['metric_for_best_model']}"
        # epoch 0: the best probe epoch (the head alone on the frozen encoder), the start of fine-tuning
        probe = [r[key] for r in run["history"] if r["stage"] == "probe"]
        finetuning = [r for r in run["history"] if r["stage"] == "finetune"]
        axes[1].plot([0] * bool(probe) + [r["epoch"] for r in finetuning],
                     [max(probe)] * bool(probe) + [r[key] for r in finetuning], "o-",
                     label=f"{name} ({metrics['metric_for_best_model']})")
    axes[1].set(title="Fine-tuning: validation score (epoch 0: linear probe)", xlabel="epoch", ylim=(0, 1.02))
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    args = parse_command_line(command_line_parser(DemoArguments, description=__doc__), argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.time()
    output_dir, data_dir = Path(args.output_dir), Path(args.data_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    timings = {}

    t = stage(f"1/6 Real music: {args.corpus_minutes:g} min of game soundtracks + music21 renderings")
    for name, status in (
        ("build-corpus", corpus.main(["--output_dir", str(data_dir / "corpus"), "--minutes", str(args.corpus_minutes),
                                      "--seed", str(args.seed)])),
        ("build-tasks", tasks.main(["--output_dir", str(data_dir / "tasks"), "--limit", str(args.tunes_per_class),
                                    "--instruments_limit", str(args.instrument_pieces), "--seed", str(args.seed)])),
    ):
        if status:
            raise SystemExit(f"{name} failed (exit {status}); see the messages above.")
    timings["data"] = time.time() - t

    t = stage("2/6 Features into Arrow (corpus: per-clip CMVN; tasks: the checkpoint's own extractor)")
    featurize_once(data_dir / "corpus", data_dir / "corpus_features",
                   lambda path: load_dataset("audiofolder", data_dir=str(path)))
    checkpoint_features = MusiCoderFeatureExtractor.from_pretrained(args.pretrained_model)
    for name in ("folk", "instruments"):
        featurize_once(data_dir / "tasks" / name, data_dir / f"{name}_checkpoint_features", load_labeled_dataset,
                       feature_extractor=checkpoint_features)
    timings["features"] = time.time() - t

    t = stage(f"3/6 Pre-training a small MusiCoder (CFM + CCM) for {args.pretrain_steps} steps")
    # Attention-probability dropout is off: on CPU it costs more than the matmuls of a model this small.
    small = "hidden_size=128,num_hidden_layers=3,num_attention_heads=4,intermediate_size=512," \
        "attention_probs_dropout_prob=0.0"
    pretraining = pretrain(PretrainingArguments(
        data_dir=str(data_dir / "corpus_features"), output_dir=str(output_dir / "pretrain"), config_overrides=small,
        per_device_train_batch_size=16, max_steps=args.pretrain_steps, warmup_steps=max(1, args.pretrain_steps // 6),
        lr_scale=0.2, max_frames=300, eval_every=max(1, args.pretrain_steps // 6), save_every=args.pretrain_steps,
        log_every=10, report_to="tensorboard", seed=args.seed, resume=True,
    ))
    pretraining.pop("model")
    timings["pretraining"] = time.time() - t

    t = stage(f"4/6 Fine-tuning {args.pretrained_model} (training/finetune.py defaults) on the folk-tradition task "
              "(5 classes) and instrument tagging (multi-label)")
    finetuned = {}
    for name in ("folk", "instruments"):
        finetuned[name] = finetune(FinetuningArguments(
            data_dir=str(data_dir / f"{name}_checkpoint_features"), output_dir=str(output_dir / name),
            model_name_or_path=args.pretrained_model, seed=args.seed, group_column="piece_id",
        ))
    timings["finetuning"] = time.time() - t

    t = stage("5/6 Hub-ready folder with model card")
    hub_dir = prepare_hub_folder(
        output_dir / "folk" / "best", output_dir / "hub" / "musicoder-demo-folk", "musicoder-demo-folk",
        metrics_file=output_dir / "folk" / "metrics.json",
        dataset_name="musicoder folk-tradition (music21, rendered)",
    )
    timings["hub"] = time.time() - t

    t = stage("6/6 Classifying a held-out track with pipeline('audio-classification')")
    test_split = data_dir / "tasks" / "folk" / "test"
    record = json.loads((test_split / "metadata.jsonl").read_text().splitlines()[0])
    track = test_split / record["file_name"]
    prediction = pipeline("audio-classification", model=str(hub_dir))(str(track), top_k=3)
    timings["pipeline"] = time.time() - t

    plot_curves(pretraining, finetuned, output_dir / "training_curves.png")
    history = [r for r in pretraining["history"] if "loss" in r]
    chance = 1.0 / len(finetuned["folk"]["labels"])
    lines = [
        "# MusiCoder demo report",
        "",
        f"- Pre-training loop (90 min of music, per-clip CMVN): {pretraining['steps']} steps, loss {history[0]['loss']:.4f} (step {history[0]['step']}) -> "
        f"{history[-1]['loss']:.4f} (step {history[-1]['step']}); validation loss {pretraining['final_eval_loss']:.4f}; "
        f"{pretraining['parameters'] / 1e6:.2f}M parameters.",
        f"- Fine-tuned from {args.pretrained_model} with `training/finetune.py` defaults "
        f"(best epoch on validation, 0 being the linear probe: folk {finetuned['folk']['best_epoch']}, instruments "
        f"{finetuned['instruments']['best_epoch']}).",
        f"- Folk tradition (single-label, {len(finetuned['folk']['labels'])} classes, chance {chance:.2f}): "
        f"test accuracy {finetuned['folk']['test']['accuracy']:.3f} (validation "
        f"{finetuned['folk']['validation']['accuracy']:.3f}).",
        f"- Instrument tagging (multi-label, {len(finetuned['instruments']['labels'])} tags): test ROC-AUC macro "
        f"{finetuned['instruments']['test']['roc_auc_macro']:.3f}, PR-AUC macro "
        f"{finetuned['instruments']['test']['pr_auc_macro']:.3f}.",
        f"- Hub-ready folder: {hub_dir} ({', '.join(sorted(p.name for p in hub_dir.iterdir()))}).",
        f"- pipeline on {track.name} (true label: {record['label']}): "
        + ", ".join(f"{p['label']} {p['score']:.2f}" for p in prediction),
        f"- Training curves: {output_dir / 'training_curves.png'}",
        "- Time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        + f"; total {time.time() - started:.0f}.",
    ]
    report = "\n".join(lines)
    (output_dir / "report.md").write_text(report + "\n")
    print("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
