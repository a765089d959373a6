"""The model's windowing of long clips against half-overlapping audio windows, on a labeled folder.

    python benchmarks/windowing.py --data_dir data/unseen/games_a [--model pretrained/musicoder-small]

A MusiCoder model reads a clip longer than its window (`config.max_position_embeddings` frames) in windows itself:
the whole clip is featurised, cut into the fewest windows that fit, end to end and of equal lengths
(`modeling_musicoder.window_spans`), and the classifier and the embedder pool over every frame. Before, the pipeline
and the embedder cut the audio into windows of the model's length with half a window of hop (MAEST's evaluation),
featurised each window on its own, and averaged the windows' logits (classifier) or each frame's hidden states over
the windows that cover it (embedder). This script scores both on the folder's test split (and validation):

1. **fine-tuned**: `training/finetune.py` with its defaults on the folder (its model selection uses the model's
   windowing), then the test clips' logits through each windowing;
2. **frozen embeddings**: every layer of `--model`, pooled as the checkpoint pools (`config.classifier_pooling`),
   through each windowing, then `musicoder_hf.evaluation.linear_probe` (C on validation).

It also times the fine-tuned classifier on the validation and test clips, one clip at a time both ways
(half-overlapping windows read about twice the frames). Prints a
markdown table and writes `--output_dir/results.json`.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from musicoder_hf import MusiCoderEmbedder
from musicoder_hf.audio import load_audio
from musicoder_hf.data.labeled import MULTI_LABEL, label_info, load_labeled_dataset
from musicoder_hf.evaluation import compute_metrics, linear_probe
from musicoder_hf.finetuning import SHIPPED_CHECKPOINT, FinetuningArguments, finetune, references_of
from musicoder_hf.modeling_musicoder import masked_pool

SPLITS = ("train", "validation", "test")


def half_overlapping_windows(num_samples: int, hop_length: int, window: int) -> list[tuple[int, int, int, int]]:
    """The earlier audio windows: `(first_frame, stop_frame, first_sample, stop_sample)`, windows of `window` frames
    every `window // 2` frames, the last one aligned to the end; a clip that fits is one window."""
    total = 1 + num_samples // hop_length
    if total <= window:
        spans = [(0, total)]
    else:
        starts = list(range(0, total - window + 1, window // 2))
        if starts[-1] + window < total:
            starts.append(total - window)
        spans = [(start, start + window) for start in starts]
    return [(a, b, a * hop_length, min(num_samples, b * hop_length - 1)) for a, b in spans]


@torch.no_grad()
def overlapping_logits(model, extractor, waveform: np.ndarray) -> np.ndarray:
    """The earlier pipeline: each audio window featurised on its own, the mean of the windows' logits."""
    logits = []
    for _, _, start, stop in half_overlapping_windows(len(waveform), extractor.hop_length,
                                                      model.config.max_position_embeddings):
        inputs = extractor(waveform[start:stop], sampling_rate=extractor.sampling_rate, return_tensors="pt")
        logits.append(model(**inputs).logits[0].float())
    return torch.stack(logits).mean(0).numpy()


@torch.no_grad()
def overlapping_embedding(encoder, extractor, waveform: np.ndarray, pooling: str) -> np.ndarray:
    """The earlier embedder: each frame's hidden states averaged over the windows that cover it, then pooled."""
    windows = half_overlapping_windows(len(waveform), extractor.hop_length, encoder.config.max_position_embeddings)
    total = windows[-1][1]
    sums = torch.zeros(encoder.config.num_hidden_layers + 1, total, encoder.config.hidden_size)
    coverage = torch.zeros(total, 1)
    for first, stop, start, stop_sample in windows:
        inputs = extractor(waveform[start:stop_sample], sampling_rate=extractor.sampling_rate, return_tensors="pt")
        hidden = torch.cat(encoder(**inputs, output_hidden_states=True).hidden_states).float()
        sums[:, first:stop] += hidden
        coverage[first:stop] += 1
    return masked_pool(sums / coverage, None, pooling).flatten().numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="labeled audio folder")
    parser.add_argument("--model", default=SHIPPED_CHECKPOINT, help="checkpoint folder")
    parser.add_argument("--output_dir", default=None, help="default: runs/windowing/<folder name>")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir or f"runs/windowing/{Path(args.data_dir).name}")
    audio = load_labeled_dataset(args.data_dir)
    info = label_info(audio)
    multi_label = info.problem_type == MULTI_LABEL
    labels = {s: references_of(audio[s], info.label_column, info.num_labels, multi_label) for s in SPLITS}
    embedder = MusiCoderEmbedder.from_pretrained(args.model)
    extractor = embedder.feature_extractor
    waveforms = {s: [load_audio({"array": a["array"], "sampling_rate": a["sampling_rate"]}, extractor.sampling_rate)
                     for a in audio[s]["audio"]] for s in SPLITS}
    rows, seconds = {}, {}

    metrics = finetune(FinetuningArguments(data_dir=args.data_dir, output_dir=str(output_dir / "finetune"),
                                           model_name_or_path=args.model))
    from transformers import AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(output_dir / "finetune" / "best").eval()
    for name, score in (("model's windows", lambda w: model(**extractor(w, sampling_rate=extractor.sampling_rate,
                                                                              return_tensors="pt")).logits[0].numpy()),
                        ("half-overlapping audio windows", lambda w: overlapping_logits(model, extractor, w))):
        for split in ("validation", "test"):
            started = time.time()
            with torch.no_grad():
                logits = np.stack([score(w) for w in waveforms[split]])
            seconds[f"fine-tuned, {name}, {split}"] = time.time() - started
            rows[f"fine-tuned, {name} ({split})"] = compute_metrics(logits, labels[split], info.problem_type)
    print("training/finetune.py's own test scores:", json.dumps(metrics["test"], default=float))

    pooling = embedder.resolve_pooling("auto")
    for name, embed in (("model's windows", lambda w: embedder(w, pooling=pooling).embeddings.flatten().numpy()),
                        ("half-overlapping audio windows",
                         lambda w: overlapping_embedding(embedder.encoder, extractor, w, pooling))):
        features = {s: np.stack([embed(w) for w in waveforms[s]]) for s in SPLITS}
        probe = linear_probe(features, labels, info.problem_type)
        for split in ("validation", "test"):
            rows[f"frozen embeddings, {name} ({split})"] = probe[split]

    metric_names = [m for m in ("accuracy", "roc_auc_macro") if m in next(iter(rows.values()))]
    counts = ", ".join(f"{s} {len(audio[s])}" for s in SPLITS)
    lines = [f"`{args.data_dir}` ({info.num_labels} classes; clips: {counts}), checkpoint `{args.model}` "
             f"(window {embedder.encoder.config.max_position_embeddings} frames)", "",
             "| row | " + " | ".join(metric_names) + " |", "|---|" + "---|" * len(metric_names)]
    lines += [f"| {row} | " + " | ".join(f"{scores[m]:.3f}" for m in metric_names) + " |"
              for row, scores in rows.items()]
    report = "\n".join(lines)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps({"rows": rows, "seconds": seconds, "report": report},
                                                        indent=1, default=float))
    print(report)
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
