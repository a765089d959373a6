"""Inference patchout: accuracy at `frame_stride` N = 1, 2, 3, 4 on labeled folders, and the table and plot of the
trade-off with the speed figures of `benchmarks/inference.py`.

    python benchmarks/patchout.py --data_dir data/unseen/games_a data/unseen/games_b --cross_validate 5 \\
        --speed runs/patchout/speed_base_bf16.json runs/patchout/speed_small_bf16.json

At inference, MAEST (section 4.5 of its paper) keeps one time patch of every N: the transformer reads N times fewer
tokens, at a small cost. Here the model reads one frame of every N, each at its own position in its windows
(`MusiCoderFeatureExtractor(..., frame_stride=N)`, the pipeline's and the embedder's `frame_stride`). For each folder
and each N, on its test split (C chosen on validation):

1. **frozen probe**: every layer of `--model` pooled as the checkpoint pools (`musicoder_hf.embeddings.
   pooled_hidden_states`), then `musicoder_hf.evaluation.linear_probe`;
2. **fine-tuned**: one fine-tuned model (training/finetune.py's defaults, trained on every frame; `--finetuned`, or
   `runs/windowing/<folder>/finetune/best` when it exists, else trained here), its logits at each N
   (`musicoder_hf.evaluation.predict_logits`).

A test split of 40 clips moves by 0.025 a clip, too coarse for a loss of 0.02. `--cross_validate K` adds the frozen
probe over every clip of each folder, in K folds by track (`cross_validated_probe`): one figure over all clips per N,
and how many clips it gains and loses against N = 1.

The speed files are `benchmarks/inference.py --frame_strides 1,2,3,4 --json ...` outputs; their x real time goes in
the table and the plot (`--plot`, default docs/patchout.png). Writes `--output_dir/results.json` and prints a markdown
table.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from musicoder_hf import MusiCoderEmbedder
from musicoder_hf.audio import load_audio
from musicoder_hf.data.labeled import MULTI_LABEL, label_info, load_labeled_dataset
from musicoder_hf.embeddings import pooled_hidden_states
from musicoder_hf.evaluation import compute_metrics, linear_probe, predict_logits
from musicoder_hf.finetuning import SHIPPED_CHECKPOINT, FinetuningArguments, finetune, references_of

SPLITS = ("train", "validation", "test")
VARIANTS = ("keep", "block mean")


def block_means(clip: np.ndarray, stride: int) -> np.ndarray:
    """The other variant measured: each frame replaced by the mean of its block of `stride` frames, so that reading
    frames 0, N, 2N, ... reads the blocks' means (an average instead of a sample) at the blocks' first positions."""
    blocks = np.add.reduceat(clip, np.arange(0, len(clip), stride), axis=0)
    counts = np.diff(np.append(np.arange(0, len(clip), stride), len(clip)))[:, None]
    return np.repeat(blocks / counts, counts[:, 0], axis=0).astype(np.float32)


def folder_accuracies(data_dir: str, model: str, finetuned: str | None, output_dir: Path, strides) -> dict:
    audio = load_labeled_dataset(data_dir)
    info = label_info(audio)
    labels = {s: references_of(audio[s], info.label_column, info.num_labels, info.problem_type == MULTI_LABEL)
              for s in SPLITS}
    embedder = MusiCoderEmbedder.from_pretrained(model)
    extractor = embedder.feature_extractor
    features = {s: [extractor(load_audio({"array": a["array"], "sampling_rate": a["sampling_rate"]},
                                         extractor.sampling_rate), sampling_rate=extractor.sampling_rate,
                              padding=False)["input_features"][0] for a in audio[s]["audio"]] for s in SPLITS}
    name = Path(data_dir).name
    if finetuned is None:
        earlier = Path("runs/windowing") / name / "finetune" / "best"
        finetuned = str(earlier) if earlier.exists() else None
    if finetuned is None:
        finetune(FinetuningArguments(data_dir=data_dir, output_dir=str(output_dir / name / "finetune"),
                                     model_name_or_path=model))
        finetuned = str(output_dir / name / "finetune" / "best")
    from transformers import AutoModelForAudioClassification

    classifier = AutoModelForAudioClassification.from_pretrained(finetuned).eval()
    pooling = embedder.resolve_pooling("auto")
    rows = {}
    for stride in strides:
        rows[stride] = {}
        for variant in VARIANTS if stride > 1 else VARIANTS[:1]:
            inputs = features if variant == "keep" else {s: [block_means(x, stride) for x in features[s]]
                                                         for s in SPLITS}
            pooled = {s: pooled_hidden_states(embedder.encoder, inputs[s], pooling=pooling, frame_stride=stride)
                      for s in SPLITS}
            probe = linear_probe({s: x.reshape(len(x), -1) for s, x in pooled.items()}, labels, info.problem_type)
            with torch.no_grad():
                logits = predict_logits(classifier, inputs["test"], frame_stride=stride)
            suffix = "" if variant == "keep" else f", {variant}"
            rows[stride][f"frozen probe{suffix}"] = probe["test"]
            rows[stride][f"fine-tuned{suffix}"] = compute_metrics(logits, labels["test"], info.problem_type)
            print(f"{name} N={stride}{suffix}: frozen probe {probe['test']['accuracy']:.3f}, fine-tuned "
                  f"{rows[stride][f'fine-tuned{suffix}']['accuracy']:.3f}", flush=True)
    counts = {s: len(audio[s]) for s in SPLITS}
    return {"rows": rows, "clips": counts, "classes": info.num_labels, "finetuned": finetuned}


def cross_validated_probe(data_dir: str, model: str, strides, folds: int) -> dict:
    """
    The frozen probe with every clip of the folder a test clip once, finer than one clip of a small test split.

    The folder's `clips.csv` (file_name, label, track) groups clips by track, as the folder's own splits do: the tracks
    go into `folds` groups with the labels' proportions kept (StratifiedGroupKFold, seed 0); each group is the test
    split once, the next one the validation split (C), the rest the training split. Per N: accuracy over all clips,
    and against N = 1 how many clips it gets right that N = 1 got wrong (gained), and the reverse (lost).
    """
    import pandas
    from sklearn.model_selection import StratifiedGroupKFold

    folder = Path(data_dir)
    clips = pandas.read_csv(folder / "clips.csv")
    names = sorted(clips["label"].unique())
    targets = clips["label"].map(names.index).to_numpy()
    fold_of = np.empty(len(clips), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=0)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(clips)), targets, groups=clips["track"])):
        fold_of[test] = fold
    embedder = MusiCoderEmbedder.from_pretrained(model)
    extractor = embedder.feature_extractor
    features = [extractor(load_audio(str(folder / name), extractor.sampling_rate),
                          sampling_rate=extractor.sampling_rate, padding=False)["input_features"][0]
                for name in clips["file_name"]]
    pooling = embedder.resolve_pooling("auto")
    predictions = {}
    for stride in strides:
        pooled = pooled_hidden_states(embedder.encoder, features, pooling=pooling, frame_stride=stride)
        pooled = pooled.reshape(len(pooled), -1)
        predictions[stride] = np.empty(len(clips), dtype=int)
        for fold in range(folds):
            masks = {"test": fold_of == fold, "validation": fold_of == (fold + 1) % folds}
            masks["train"] = ~(masks["test"] | masks["validation"])
            probe = linear_probe({s: pooled[m] for s, m in masks.items()}, {s: targets[m] for s, m in masks.items()},
                                 "single_label_classification")
            predictions[stride][masks["test"]] = np.argmax(probe["test_logits"], axis=1)
    reference = predictions[strides[0]] == targets
    rows = {}
    for stride in strides:
        right = predictions[stride] == targets
        rows[stride] = {"accuracy": float(right.mean()), "gained": int((right & ~reference).sum()),
                        "lost": int((~right & reference).sum())}
        row = rows[stride]
        print(f"{folder.name} N={stride}, {folds}-fold frozen probe over {len(clips)} clips: {row['accuracy']:.3f} "
              f"(+{row['gained']} / -{row['lost']} clips)", flush=True)
    return {"rows": rows, "clips": len(clips), "folds": folds, "tracks": int(clips["track"].nunique())}


def speed_by_stride(paths) -> dict:
    """`{"<size>, <mode>": {N: x real time}}` from benchmarks/inference.py --json files."""
    speeds = {}
    for path in paths:
        result = json.loads(Path(path).read_text())
        size = "shipped checkpoint" if result["args"].get("config") else result["args"]["preset"].split("-")[-1]
        for row, runs in zip(result["rows"], (r for r in result["runs"].values() if r)):
            label = f"{size}, {runs[0]['mode']}"
            speeds.setdefault(label, {})[int(runs[0]["frame_stride"])] = row["x_real_time"]
    return speeds


def plot(results: dict, speeds: dict, strides, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, by_stride in speeds.items():
        left.plot(strides, [by_stride.get(n) for n in strides], marker="o", label=label)
    left.set(xlabel="frame_stride N (one frame of every N)", ylabel="x real time (2-core CPU)", xticks=strides,
             title="Pipeline speed")
    left.axhline(200, color="grey", linestyle=":", linewidth=1)
    left.legend()
    for name, result in results.items():
        for row, style in (("frozen probe", "-"), ("fine-tuned", "--")):
            right.plot(strides, [result["rows"][n][row]["accuracy"] for n in strides], marker="o", linestyle=style,
                       label=f"{name}, {row}")
    right.set(xlabel="frame_stride N", ylabel="test accuracy", xticks=strides, title="Accuracy (shipped checkpoint)")
    right.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", nargs="+", required=True, help="labeled audio folders")
    parser.add_argument("--model", default=SHIPPED_CHECKPOINT)
    parser.add_argument("--finetuned", nargs="*", default=None, help="a fine-tuned checkpoint per folder")
    parser.add_argument("--frame_strides", default="1,2,3,4")
    parser.add_argument("--speed", nargs="*", default=[], help="benchmarks/inference.py --json outputs")
    parser.add_argument("--output_dir", default="runs/patchout")
    parser.add_argument("--plot", default="docs/patchout.png")
    parser.add_argument("--cross_validate", type=int, default=0, metavar="K",
                        help="also the frozen probe over every clip, in K folds by track (needs clips.csv)")
    args = parser.parse_args(argv)
    strides = [int(n) for n in args.frame_strides.split(",")]
    output_dir = Path(args.output_dir)
    finetuned = args.finetuned or [None] * len(args.data_dir)
    results = {Path(folder).name: folder_accuracies(folder, args.model, tuned, output_dir, strides)
               for folder, tuned in zip(args.data_dir, finetuned)}
    output = {"folders": results}
    speeds = speed_by_stride(args.speed)

    lines = []
    for metric in ("accuracy", "roc_auc_macro"):
        header = f"| N ({metric}) | " + " | ".join(f"{label}, x real time" for label in speeds)
        header += "".join(f" | {name} frozen probe | {name} fine-tuned" for name in results) + " |"
        lines += ["", header, "|---" * (1 + len(speeds) + 2 * len(results)) + "|"]
        for n in strides:
            for variant in VARIANTS if n > 1 else VARIANTS[:1]:
                suffix = "" if variant == "keep" else f", {variant}"
                cells = [f"{speeds[label].get(n, float('nan')):.0f}" if variant == "keep" else ""
                         for label in speeds]
                for result in results.values():
                    for row in ("frozen probe", "fine-tuned"):
                        value = result["rows"][n][row + suffix][metric]
                        reference = result["rows"][strides[0]][row][metric]
                        cells.append(f"{value:.3f}" + ("" if n == strides[0] else f" ({value - reference:+.3f})"))
                lines.append(f"| {n}{suffix} | " + " | ".join(cells) + " |")
    if args.cross_validate:
        cross = {Path(folder).name: cross_validated_probe(folder, args.model, strides, args.cross_validate)
                 for folder in args.data_dir}
        lines += ["", "| N | " + " | ".join(f"{name}: {c['folds']}-fold frozen probe, {c['clips']} clips"
                                            for name, c in cross.items()) + " |",
                  "|---" * (1 + len(cross)) + "|"]
        for n in strides:
            cells = []
            for c in cross.values():
                row, first = c["rows"][n], c["rows"][strides[0]]
                change = f" ({row['accuracy'] - first['accuracy']:+.3f}: +{row['gained']} / -{row['lost']} clips)"
                cells.append(f"{row['accuracy']:.3f}" + ("" if n == strides[0] else change))
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        output["cross_validated"] = cross
    report = "\n".join(lines)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps({**output, "speeds": speeds, "report": report},
                                                        indent=1, default=float))
    plot(results, speeds, strides, Path(args.plot))
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
