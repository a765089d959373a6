"""Inference speed of a Base-size MusiCoder classifier through the audio-classification pipeline, on a real 30 s file
and a 10-minute file: float32, bfloat16, torch.compile and ONNX Runtime, with peak memory.

    python benchmarks/inference.py                  # a folk clip of data/tasks if built, else synthetic
    python benchmarks/inference.py --audio track.flac --rounds 5
    python benchmarks/inference.py --modes fp32,bf16 --preset musicoder-small
    python benchmarks/inference.py --device cuda --modes fp32,bf16,compiled   # on a GPU
    python benchmarks/inference.py --modes bf16 --frame_strides 1,2,3,4        # inference patchout
    python benchmarks/inference.py --config pretrained/musicoder-small --modes fp32,bf16  # the shipped size

Every mode runs in its own fresh process (its peak memory is its own), the modes alternating over `--rounds` rounds;
each round times `--repeats` calls on the 30 s file after a warm-up call (its fastest call counts) and one call on
the 10-minute file (the 30 s audio repeated, written as a FLAC file). The time of a call is the whole
`pipe(path)`: decoding, features, the model (which reads long files in windows of 1600 frames), post-processing.
The modes:

- `fp32`: `pipeline("audio-classification", model=...)`;
- `bf16`: `pipeline(..., dtype=torch.bfloat16)` (needs bf16 instructions on a CPU: avx512_bf16 or AMX); on a CPU
  its attention is `query_chunked_attention`;
- `bf16-sdpa`: the same with PyTorch's own attention kernel (`MusiCoderAttention.runs_query_chunked` patched off);
- `compiled`: the fp32 pipeline with `torch.compile(pipe.model)` (the warm-up compiles; `bf16-compiled` both);
- `onnx`: the same features and windows (`window_spans`), each window run by ONNX Runtime
  (`musicoder_hf.export.export_onnx`: a graph takes one window), the mean of the windows' logits.

`--frame_strides` runs each mode with the pipeline's `frame_stride=N` (inference patchout: one frame of every N).

It also prints the model's floating-point operations per 30 s window and this machine's rate for a large matrix
product, in float32 and bfloat16: their ratio is what the model's share of the time cannot go below.

The figures are the same file's best call in each mode: seconds per 30 s file and x real time. Peak memory is the
process's peak RSS after the 30 s calls, after a 2-minute file and after the 10-minute file: from 2 to 10 minutes
it should grow by the longer decoded waveform only (flat memory). The weights
are random: speed does not depend on them. Models are made once per run in a temporary folder.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 44100
MODES = ("fp32", "bf16", "bf16-sdpa", "compiled", "bf16-compiled", "onnx")
# A file of several full windows: peak memory after it, and after the long file, shows whether memory grows with the
# length beyond the decoded waveform (4 bytes a sample).
MEDIUM_MINUTES = 2.0
DEFAULT_AUDIO = "data/tasks/folk"


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not `ru_maxrss`: Linux carries `ru_maxrss` over from the parent into a fresh
    process (through fork and exec), so a worker would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def find_audio(path: str | None) -> Path | None:
    candidates = [Path(path)] if path else [Path(DEFAULT_AUDIO)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if candidate.is_dir():
            files = sorted(p for p in candidate.rglob("*") if p.suffix.lower() in (".flac", ".wav", ".ogg", ".mp3"))
            if files:
                return files[0]
    if path:
        raise SystemExit(f"No audio file at {path}.")
    return None


def prepare(args, folder: Path) -> dict:
    """The checkpoint (random weights), its ONNX export, and the 30 s and 10-minute files, in `folder`."""
    import soundfile
    import torch

    from musicoder_hf import MusiCoderConfig, MusiCoderFeatureExtractor, MusiCoderForSequenceClassification
    from musicoder_hf.audio import load_audio

    source = find_audio(args.audio)
    if source is None:
        from benchmarks.features import synthetic_clip
        clip, name = synthetic_clip(30.0, 0), "synthetic 30 s chords"
    else:
        clip, name = load_audio(str(source), SR)[: 30 * SR], str(source)
    soundfile.write(folder / "clip.flac", clip, SR)
    for file_name, minutes in (("medium", MEDIUM_MINUTES), ("long", args.long_minutes)):
        repeats = int(np.ceil(minutes * 60 * SR / len(clip)))
        soundfile.write(folder / f"{file_name}.flac", np.tile(clip, repeats)[: int(minutes * 60 * SR)], SR)

    torch.manual_seed(0)
    labels = [f"label_{i}" for i in range(args.num_labels)]
    label_maps = dict(num_labels=args.num_labels, id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)})
    if args.config:  # a checkpoint's size and window, e.g. the shipped one's (300 frames)
        config = MusiCoderConfig.from_pretrained(args.config, **label_maps)
    else:
        config = MusiCoderConfig.from_preset(args.preset, **label_maps)
    model = MusiCoderForSequenceClassification(config).eval()
    model.save_pretrained(folder / "checkpoint")
    MusiCoderFeatureExtractor().save_pretrained(folder / "checkpoint")
    if "onnx" in args.modes:
        from musicoder_hf.export import export_onnx

        export_onnx(model, folder / "model.onnx")
    frames = 1 + len(clip) // 1024
    torch.set_num_threads(args.threads)
    return {"audio": name, "seconds": len(clip) / SR, "long_seconds": args.long_minutes * 60,
            "parameters": sum(p.numel() for p in model.parameters()), "frames": frames,
            "gflop_per_window": forward_flops(config, frames) / 1e9,
            "gemm_gflops": {"fp32": gemm_gflops(torch.float32), "bf16": gemm_gflops(torch.bfloat16)}}


def forward_flops(config, frames: int) -> float:
    """Multiply-adds x 2 of one forward pass: the encoder's linear layers and the attention products."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 4 * hidden**2 + 2 * hidden * config.intermediate_size
    linear = 2 * frames * (config.feature_size * hidden + layers * per_layer)
    attention = layers * 2 * 2 * frames**2 * hidden
    return linear + attention


def gemm_gflops(dtype, size: int = 2048, repeats: int = 5) -> float:
    """The machine's rate for one large matrix product in `dtype` (the best of `repeats`)."""
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


class OnnxClassifier:
    """What the pipeline does (decode, features, windows, softmax), with each window run by ONNX Runtime: an exported
    graph takes one window, so a long file's logits are the mean of its windows' (the model pools over all frames)."""

    def __init__(self, folder: Path, threads: int):
        from musicoder_hf import MusiCoderFeatureExtractor
        from musicoder_hf.export import onnx_session

        self.session = onnx_session(folder / "model.onnx", num_threads=threads)
        self.extractor = MusiCoderFeatureExtractor.from_pretrained(folder / "checkpoint")
        self.window = json.loads((folder / "checkpoint" / "config.json").read_text())["max_position_embeddings"]

    def __call__(self, path):
        from musicoder_hf.audio import load_audio
        from musicoder_hf.modeling_musicoder import window_spans

        waveform = load_audio(str(path), self.extractor.sampling_rate)
        features = self.extractor(waveform, sampling_rate=self.extractor.sampling_rate, return_tensors="np")
        logits = []
        for start, stop in window_spans(features["input_features"].shape[1], self.window):
            feed = {key: features[key][:, start:stop] for key in ("input_features", "attention_mask")}
            logits.append(self.session.run(None, feed)[0])
        mean = np.mean(logits, axis=0)[0]
        return np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()


def worker(args) -> None:
    """One mode in this process: prints one JSON line of figures."""
    import torch

    import musicoder_hf  # noqa: F401 (registers the MusiCoder pipeline)
    from transformers import pipeline

    torch.set_num_threads(args.threads)
    folder, mode = Path(args.folder), args.worker
    baseline = peak_rss_mib()
    if mode == "onnx":
        classify = OnnxClassifier(folder, args.threads)
    else:
        dtype = torch.bfloat16 if mode.startswith("bf16") else None
        classify = pipeline("audio-classification", model=str(folder / "checkpoint"), dtype=dtype,
                            device=args.device)
        if mode.endswith("compiled"):
            classify.model = torch.compile(classify.model)
        if mode == "bf16-sdpa":
            from musicoder_hf.modeling_musicoder import MusiCoderAttention

            MusiCoderAttention.runs_query_chunked = lambda self, query: False
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def timed(path):
        start = time.perf_counter()
        with torch.inference_mode():
            result = classify(str(path), **({} if args.frame_stride == 1 else {"frame_stride": args.frame_stride}))
        sync()
        return time.perf_counter() - start, result

    warm_up, _ = timed(folder / "clip.flac")
    short = min(timed(folder / "clip.flac")[0] for _ in range(args.repeats))
    short_peak = peak_rss_mib()
    timed(folder / "medium.flac")
    medium_peak = peak_rss_mib()
    long, _ = timed(folder / "long.flac")
    print(json.dumps({"mode": mode, "frame_stride": args.frame_stride, "warm_up": warm_up, "short": short, "long": long, "baseline_mib": baseline,
                      "short_peak_mib": short_peak, "medium_peak_mib": medium_peak, "long_peak_mib": peak_rss_mib(),
                      "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", help="an audio file or folder (its first file); default: a folk clip, if built")
    parser.add_argument("--preset", default="musicoder-base")
    parser.add_argument("--config", help="a checkpoint folder whose config to use instead of --preset")
    parser.add_argument("--num_labels", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed 30 s calls per round (the fastest counts)")
    parser.add_argument("--long_minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frame_strides", default="1", help="inference patchout: each mode at each N, e.g. 1,2,3,4")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--frame_stride", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    args.modes = [mode for mode in args.modes.split(",") if mode]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        raise SystemExit(f"Unknown modes {sorted(unknown)}; choose among {MODES}.")
    strides = [int(n) for n in args.frame_strides.split(",") if n]
    if "onnx" in args.modes and strides != [1]:
        raise SystemExit("The onnx mode reads every frame (an exported graph takes one window without positions).")
    # a run per (mode, N), named "mode" or "mode, N=n"
    variants = [(mode, n, mode if strides == [1] else f"{mode}, N={n}") for mode in args.modes for n in strides]

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.features for synthetic audio
    with tempfile.TemporaryDirectory() as folder:
        setup = prepare(args, Path(folder))
        print(f"{args.config or args.preset}: {setup['parameters'] / 1e6:.1f} M parameters; audio: {setup['audio']} "
              f"({setup['seconds']:.0f} s, and {setup['long_seconds'] / 60:.0f} min repeated); {args.threads} "
              f"threads on {args.device}", flush=True)
        runs = {name: [] for _, _, name in variants}
        for round_index in range(args.rounds):
            for mode, stride, name in variants:
                command = [sys.executable, __file__, "--worker", mode, "--folder", folder, "--threads",
                           str(args.threads), "--repeats", str(args.repeats), "--device", args.device,
                           "--frame_stride", str(stride)]
                output = subprocess.run(command, capture_output=True, text=True)
                if output.returncode != 0:
                    print(f"{name}: failed\n{output.stderr[-2000:]}", file=sys.stderr)
                    continue
                runs[name].append(json.loads(output.stdout.strip().splitlines()[-1]))
                print(f"round {round_index + 1} {name}: {runs[name][-1]['short']:.3f} s per 30 s file", flush=True)

    rows = []
    reference = None
    for mode, results in runs.items():
        if not results:
            continue
        best = min(results, key=lambda r: r["short"])
        short = min(r["short"] for r in results) * 30 / setup["seconds"]
        long = min(r["long"] for r in results)
        reference = reference or short
        rows.append({"mode": mode, "seconds_per_30s": short, "x_real_time": 30 / short,
                     "speed_up": reference / short, "x_real_time_10min": setup["long_seconds"] / long,
                     "warm_up": best["warm_up"], "peak_mib_30s": max(r["short_peak_mib"] for r in results),
                     "peak_mib_medium": max(r["medium_peak_mib"] for r in results),
                     "peak_mib_long": max(r["long_peak_mib"] for r in results),
                     "cuda_peak_mib": best["cuda_peak_mib"]})
    minutes = setup["long_seconds"] / 60
    print(f"\n| mode | s per 30 s file | x real time | speed-up vs {rows[0]['mode'] if rows else '-'} | "
          f"x real time, {minutes:g} min file | first call (s) | peak RSS after 30 s / {MEDIUM_MINUTES:g} min / "
          f"{minutes:g} min (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['seconds_per_30s']:.3f} | {row['x_real_time']:.0f} | {row['speed_up']:.2f}x | "
              f"{row['x_real_time_10min']:.0f} | {row['warm_up']:.1f} | {row['peak_mib_30s']:.0f} / "
              f"{row['peak_mib_medium']:.0f} / {row['peak_mib_long']:.0f} |")
    waveform_mib = (minutes - MEDIUM_MINUTES) * 60 * SR * 4 / 2**20
    print(f"\nThe decoded {minutes:.0f}-minute waveform is {waveform_mib:.0f} MiB more than the "
          f"{MEDIUM_MINUTES:.0f}-minute one (float32 at {SR} Hz).")
    print(f"Model: {setup['gflop_per_window']:.0f} GFLOP per forward pass of a 30 s window "
          f"({setup['frames']} frames); this machine's matrix products, {args.threads} threads: "
          f"{setup['gemm_gflops']['fp32']:.0f} GFLOP/s float32, {setup['gemm_gflops']['bf16']:.0f} GFLOP/s bfloat16, "
          f"i.e. at least {setup['gflop_per_window'] / setup['gemm_gflops']['bf16']:.3f} s per 30 s window in "
          f"bfloat16 at that rate.")
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": setup, "args": vars(args), "rows": rows, "runs": runs},
                                              indent=2))


if __name__ == "__main__":
    main()
