"""A checkpoint on your own labeled music, as a new user meets it, against hand-crafted statistics.

    python benchmarks/labeled_folder.py --data_dir my_music [--model pretrained/musicoder-small]

The folder is anything `load_labeled_dataset` reads (label subfolders, `train/validation/test` splits or carved from
train). Three rows, all scored on the test split, all choosing their settings on validation only:

1. **fine-tuned**: `training/finetune.py` with its defaults (`finetune(FinetuningArguments(data_dir, output_dir))`);
2. **frozen embeddings**: `MusiCoderEmbedder` with its defaults (every layer, the checkpoint's pooling), the layers
   concatenated, then `musicoder_hf.evaluation.linear_probe` (standardised logistic regression, C in 0.01-10 on
   validation);
3. **hand-crafted**: mean and standard deviation over time of the un-normalised 324-dim frames (librosa), the same
   logistic regression: the baseline a model has to beat.

Prints a markdown table (and writes `--output_dir/results.json`).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
from musicoder_hf import MusiCoderEmbedder, MusiCoderFeatureExtractor
from musicoder_hf.data.features import featurize_dataset
from musicoder_hf.data.labeled import MULTI_LABEL, label_info, load_labeled_dataset, to_multi_hot
from musicoder_hf.evaluation import linear_probe
from musicoder_hf.finetuning import SHIPPED_CHECKPOINT, FinetuningArguments, finetune

SPLITS = ("train", "validation", "test")


def targets(split, info) -> np.ndarray:
    values = split[info.label_column]
    if info.problem_type == MULTI_LABEL:
        return np.array([to_multi_hot(v, info.num_labels) for v in values], dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="labeled audio folder")
    parser.add_argument("--model", default=SHIPPED_CHECKPOINT, help="checkpoint folder")
    parser.add_argument("--output_dir", default=None, help="default: runs/labeled_folder/<folder name>")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir or f"runs/labeled_folder/{Path(args.data_dir).name}")
    audio = load_labeled_dataset(args.data_dir)
    info = label_info(audio)
    labels = {s: targets(audio[s], info) for s in SPLITS}
    rows, seconds = {}, {}

    started = time.time()
    metrics = finetune(FinetuningArguments(data_dir=args.data_dir, output_dir=str(output_dir / "finetune"),
                                           model_name_or_path=args.model))
    rows["fine-tuned (`training/finetune.py` defaults)"] = metrics["test"]
    seconds["fine-tuned"] = time.time() - started

    started = time.time()
    embedder = MusiCoderEmbedder.from_pretrained(args.model)
    features = {}
    for split in SPLITS:
        clips = [{"array": a["array"], "sampling_rate": a["sampling_rate"]} for a in audio[split]["audio"]]
        features[split] = np.stack([o.embeddings.flatten().numpy() for o in embedder(clips)])
    rows["frozen `MusiCoderEmbedder` defaults, all layers + logistic regression"] = linear_probe(
        features, labels, info.problem_type)["test"]
    seconds["embeddings"] = time.time() - started

    started = time.time()
    raw = featurize_dataset(audio, feature_extractor=MusiCoderFeatureExtractor(do_normalize=False))
    statistics = {s: np.stack([np.concatenate([np.asarray(f).mean(0), np.asarray(f).std(0)])
                               for f in raw[s].with_format("numpy")["input_features"]]) for s in SPLITS}
    rows["hand-crafted: mean + std of the raw frames + logistic regression"] = linear_probe(
        statistics, labels, info.problem_type)["test"]
    seconds["hand-crafted"] = time.time() - started

    metric_names = [m for m in ("accuracy", "roc_auc_macro", "pr_auc_macro") if m in next(iter(rows.values()))]
    counts = ", ".join(f"{s} {len(audio[s])}" for s in SPLITS)
    lines = [f"`{args.data_dir}` ({info.num_labels} classes; clips: {counts}), checkpoint `{args.model}`", "",
             "| row | " + " | ".join(metric_names) + " |", "|---|" + "---|" * len(metric_names)]
    lines += [f"| {row} | " + " | ".join(f"{scores[m]:.3f}" for m in metric_names) + " |"
              for row, scores in rows.items()]
    if info.problem_type != MULTI_LABEL:
        majority = np.bincount(labels["test"]).max() / len(labels["test"])
        lines.append("| always the test split's largest class | " + " | ".join(
            f"{majority:.3f}" if m == "accuracy" else "-" for m in metric_names) + " |")
    report = "\n".join(lines)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps({"rows": rows, "seconds": seconds, "report": report},
                                                        indent=1, default=float))
    print(report)
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
