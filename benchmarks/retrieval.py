"""Retrieval precision@k on a labeled folder: a checkpoint's embeddings against hand-crafted statistics.

    python benchmarks/retrieval.py --data_dir data/unseen/games_b [--model pretrained/musicoder-small] [--k 5]

Every clip of the folder (all splits) is a query against all the others: precision@k is the share of its k nearest
neighbours (cosine similarity, `musicoder_hf.search.EmbeddingIndex`: dimensions standardised over the folder, then
L2-normalised) that have its label. Neighbours from the query's own track are left out when the folder says which
track a clip comes from (a `track` column in `clips.csv`, as `benchmarks/unseen_game_folders.py` writes), so that a
clip does not score by finding the rest of its own track. Rows:

1. **embeddings**: `musicoder-embed` with its defaults (every layer, the checkpoint's pooling);
2. **hand-crafted**: mean and standard deviation over time of the un-normalised 324-dim frames (librosa);
3. **chance**: the expected precision of random neighbours (each label's share of the other clips).

Prints a markdown table and writes `--output_dir/results.json`.
"""

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from musicoder_hf import MusiCoderFeatureExtractor
from musicoder_hf.audio import load_audio
from musicoder_hf.collection import EmbedArguments, embed_collection
from musicoder_hf.finetuning import SHIPPED_CHECKPOINT
from musicoder_hf.search import EmbeddingIndex


def labeled_files(data_dir: Path) -> tuple[list[str], list[str], list[str | None]]:
    """Absolute paths, labels (the parent folder's name) and tracks (from clips.csv, else None) of a folder's clips."""
    tracks = {}
    if (data_dir / "clips.csv").exists():
        with open(data_dir / "clips.csv", newline="") as handle:
            tracks = {str((data_dir / row["file_name"]).absolute()): row.get("track")
                      for row in csv.DictReader(handle)}
    suffixes = (".flac", ".wav", ".ogg", ".mp3")
    paths = sorted(str(p.absolute()) for p in data_dir.rglob("*") if p.suffix.lower() in suffixes)
    return paths, [Path(p).parent.name for p in paths], [tracks.get(p) for p in paths]


def precision_at_k(index: EmbeddingIndex, paths, labels, tracks, k: int) -> float:
    """Mean over queries of the share of same-label clips among the k nearest (own track left out)."""
    label_of, track_of = dict(zip(paths, labels)), dict(zip(paths, tracks))
    results = index.search_paths(paths, k=len(paths) - 1)
    scores = []
    for query, found in zip(paths, results):
        kept = [path for path, _ in found if track_of[query] is None or track_of[path] != track_of[query]][:k]
        scores.append(np.mean([label_of[path] == label_of[query] for path in kept]))
    return float(np.mean(scores))


def chance(labels, tracks) -> float:
    """Expected precision of random neighbours among the clips a query may find (the others; other tracks)."""
    labels, tracks = np.array(labels), np.array(tracks, dtype=object)
    shares = []
    for query, (label, track) in enumerate(zip(labels, tracks)):
        allowed = np.arange(len(labels)) != query
        if track is not None:
            allowed &= tracks != track
        shares.append(np.mean(labels[allowed] == label))
    return float(np.mean(shares))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="labeled audio folder (label subfolders, any depth)")
    parser.add_argument("--model", default=SHIPPED_CHECKPOINT, help="checkpoint folder")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--output_dir", default=None, help="default: runs/retrieval/<folder name>")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    output_dir = Path(args.output_dir or f"runs/retrieval/{data_dir.name}")
    paths, labels, tracks = labeled_files(data_dir)
    rows, seconds = {}, {}

    started = time.time()
    embed_collection(EmbedArguments(model_name_or_path=args.model, inputs=[str(data_dir)],
                                    output_dir=str(output_dir / "embeddings")))
    rows["MusiCoder embeddings (`musicoder-embed` defaults)"] = precision_at_k(
        EmbeddingIndex.load(output_dir / "embeddings"), paths, labels, tracks, args.k)
    seconds["embeddings"] = time.time() - started

    started = time.time()
    extractor = MusiCoderFeatureExtractor(do_normalize=False, backend="librosa")
    statistics = []
    for path in paths:
        frames = extractor(load_audio(path, extractor.sampling_rate), sampling_rate=extractor.sampling_rate)
        frames = np.asarray(frames["input_features"][0])
        statistics.append(np.concatenate([frames.mean(0), frames.std(0)]))
    rows["hand-crafted: mean + std of the raw frames"] = precision_at_k(
        EmbeddingIndex(paths, np.stack(statistics)), paths, labels, tracks, args.k)
    seconds["hand-crafted"] = time.time() - started
    rows["chance (random neighbours)"] = chance(labels, tracks)

    excluded = "own track left out" if any(tracks) else "no track information"
    report = "\n".join([
        f"`{data_dir}`: {len(paths)} clips, {len(set(labels))} labels, checkpoint `{args.model}` ({excluded})", "",
        f"| row | precision@{args.k} |", "|---|---|",
        *[f"| {row} | {value:.3f} |" for row, value in rows.items()],
    ])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps({"rows": rows, "seconds": seconds, "report": report},
                                                        indent=1))
    print(report)
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
