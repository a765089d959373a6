"""How far bfloat16 and ONNX Runtime are from float32 PyTorch, on real music, for a trained checkpoint.

    python benchmarks/precision.py --model pretrained/musicoder-small --audio_dir data/unseen/games_a/test
    python benchmarks/precision.py --model runs/demo/folk/best --audio_dir data/tasks/folk/test   # a classifier

For each clip (up to `--num_clips` per folder, any length: the model reads long clips in windows):

- embeddings: `MusiCoderEmbedder.from_pretrained(model)` against `from_pretrained(model, dtype=torch.bfloat16)`,
  every layer, statistics pooling (mean and standard deviation over time): cosine similarity and relative L2 error
  per layer;
- a classifier checkpoint: `pipeline("audio-classification", model)` against `pipeline(..., dtype=torch.bfloat16)`:
  the same top-1 label or not, and the largest change of a class probability;
- ONNX Runtime against float32 PyTorch on each window of the clip's features (`window_spans`; an exported graph
  takes one window, `musicoder_hf.export.export_onnx`): the largest absolute difference of the logits (classifier)
  or of every hidden state (encoder).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3")


def clips_of(folder: str, limit: int) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise SystemExit(f"No audio files under {folder}.")
    rng = np.random.default_rng(0)  # an even spread over the folder's labels, whatever the file order
    return [files[i] for i in sorted(rng.choice(len(files), size=min(limit, len(files)), replace=False))]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a MusiCoder checkpoint folder (encoder or classifier)")
    parser.add_argument("--audio_dir", action="append", required=True, help="audio folder (repeat for several)")
    parser.add_argument("--num_clips", type=int, default=40, help="clips per folder")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import musicoder_hf  # noqa: F401 (registers the MusiCoder pipeline)
    from transformers import AutoConfig, pipeline

    from musicoder_hf import MusiCoderEmbedder
    from musicoder_hf.audio import load_audio
    from musicoder_hf.export import GraphOutputs, export_onnx, is_classifier_checkpoint, onnx_session
    from musicoder_hf.modeling_musicoder import window_spans

    config = AutoConfig.from_pretrained(args.model)
    is_classifier = is_classifier_checkpoint(config)
    embedders = {"fp32": MusiCoderEmbedder.from_pretrained(args.model),
                 "bf16": MusiCoderEmbedder.from_pretrained(args.model, dtype=torch.bfloat16)}
    extractor = embedders["fp32"].feature_extractor
    if is_classifier:
        classifiers = {"fp32": pipeline("audio-classification", model=args.model),
                       "bf16": pipeline("audio-classification", model=args.model, dtype=torch.bfloat16)}
        model = classifiers["fp32"].model
    else:
        model = embedders["fp32"].encoder
    graph = GraphOutputs(model, output_hidden_states=not is_classifier).eval()
    with tempfile.TemporaryDirectory() as folder:
        session = onnx_session(export_onnx(model, Path(folder) / "model.onnx", output_hidden_states=not is_classifier))

        rows = []
        for audio_dir in args.audio_dir:
            for path in clips_of(audio_dir, args.num_clips):
                waveform = load_audio(str(path), extractor.sampling_rate)
                row = {"folder": audio_dir, "clip": path.name, "seconds": len(waveform) / extractor.sampling_rate}
                pooled = {name: embedder(waveform, pooling="mean_std").embeddings
                          for name, embedder in embedders.items()}
                row["embedding_cosine"] = cosine(pooled["bf16"], pooled["fp32"]).tolist()  # per layer
                row["embedding_relative_error"] = (
                    (pooled["bf16"] - pooled["fp32"]).norm(dim=-1) / pooled["fp32"].norm(dim=-1)).tolist()
                if is_classifier:
                    scores = {name: {r["label"]: r["score"] for r in classify(str(path), top_k=None)}
                              for name, classify in classifiers.items()}
                    row["same_top1"] = max(scores["fp32"], key=scores["fp32"].get) == max(scores["bf16"],
                                                                                          key=scores["bf16"].get)
                    row["max_probability_change"] = max(abs(scores["bf16"][label] - scores["fp32"][label])
                                                        for label in scores["fp32"])
                features = extractor(waveform, sampling_rate=extractor.sampling_rate, return_tensors="pt")
                onnx_error = 0.0
                for start, stop in window_spans(features["input_features"].shape[1], config.max_position_embeddings):
                    inputs = {key: value[:, start:stop] for key, value in features.items()}
                    with torch.no_grad():
                        expected = graph(**inputs)
                    expected = expected if isinstance(expected, tuple) else (expected,)
                    got = session.run(None, {key: value.numpy() for key, value in inputs.items()})
                    onnx_error = max(onnx_error, *(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)))
                row["onnx_max_abs_error"] = onnx_error
                rows.append(row)
                print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()
                                  if not isinstance(v, list)}), flush=True)

    cosines = np.array([row["embedding_cosine"] for row in rows])
    errors = np.array([row["embedding_relative_error"] for row in rows])
    print(f"\n{args.model}: {len(rows)} clips from {', '.join(args.audio_dir)}")
    print("\n| hidden state | cosine bf16 vs fp32: median / min | relative L2 error: median / max |")
    print("|---|---|---|")
    for layer in range(cosines.shape[1]):
        print(f"| {layer} | {np.median(cosines[:, layer]):.6f} / {cosines[:, layer].min():.6f} | "
              f"{np.median(errors[:, layer]):.2e} / {errors[:, layer].max():.2e} |")
    summary = {"model": args.model, "clips": len(rows), "embedding_cosine_min": float(cosines.min()),
               "embedding_relative_error_max": float(errors.max()),
               "onnx_max_abs_error": max(row["onnx_max_abs_error"] for row in rows)}
    if is_classifier:
        summary["same_top1"] = f"{sum(row['same_top1'] for row in rows)} of {len(rows)}"
        summary["max_probability_change"] = max(row["max_probability_change"] for row in rows)
    print("\n" + json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
