"""Similar tracks: cosine-similarity search over a `musicoder-embed` output folder, with faiss.

    musicoder-search --index_dir runs/embeddings --query song.mp3 --k 10

    from musicoder_hf.search import EmbeddingIndex

    index = EmbeddingIndex.load("runs/embeddings")
    index.search_audio("song.mp3", k=10)            # [(path, cosine similarity), ...], best first
    index.search_paths(["/music/a.flac"], k=10)     # tracks like one already in the index (itself left out)

The vectors are the folder's `embedding` column, standardised per dimension with the collection's own mean and
standard deviation (so that no layer or statistic dominates by its scale) and L2-normalised; the index is faiss's exact
inner-product index (`IndexFlatIP`), so scores are cosine similarities. A query audio file is embedded with the model
and settings recorded in the folder's `summary.json`. faiss is an optional extra: `pip install "musicoder-hf[search]"`.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .collection import EMBEDDINGS_DIR, SUMMARY_FILE
from .utils import command_line_parser, parse_command_line


def _faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            'Similarity search needs faiss: `pip install "musicoder-hf[search]"` (or `pip install faiss-cpu`).'
        ) from error
    return faiss


class EmbeddingIndex:
    """Exact cosine-similarity search over embeddings (see the module docstring)."""

    def __init__(self, paths: list[str], embeddings: np.ndarray, settings: dict | None = None):
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(paths) or not len(paths):
            raise ValueError(f"Need one embedding per path, got {embeddings.shape} for {len(paths)} paths.")
        self.paths = list(paths)
        self.settings = settings or {}
        self.mean = embeddings.mean(axis=0)
        self.std = embeddings.std(axis=0) + 1e-6
        self.index = _faiss().IndexFlatIP(embeddings.shape[1])
        self.index.add(self._normalised(embeddings))
        self._row_of = {path: row for row, path in enumerate(self.paths)}
        self._embedder = None

    @classmethod
    def load(cls, index_dir: str | Path) -> "EmbeddingIndex":
        """The index of a `musicoder-embed` output folder (all its parts)."""
        import pyarrow.parquet as pq

        index_dir = Path(index_dir)
        parts = sorted((index_dir / EMBEDDINGS_DIR).glob("part-*.parquet"))
        if not parts:
            raise FileNotFoundError(f"{index_dir} holds no embeddings ({EMBEDDINGS_DIR}/part-*.parquet): run "
                                    "musicoder-embed with --output_dir there first.")
        paths, vectors = [], []
        for part in parts:
            table = pq.read_table(part, columns=["path", "embedding"])
            paths.extend(table["path"].to_pylist())
            vectors.append(np.stack(table["embedding"].to_numpy(zero_copy_only=False)))
        summary = index_dir / SUMMARY_FILE
        settings = json.loads(summary.read_text())["settings"] if summary.exists() else {}
        return cls(paths, np.concatenate(vectors), settings)

    def _normalised(self, vectors: np.ndarray) -> np.ndarray:
        vectors = (np.asarray(vectors, dtype=np.float32) - self.mean) / self.std
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def search(self, vectors: np.ndarray, k: int = 10, exclude: list[str | None] | None = None
               ) -> list[list[tuple[str, float]]]:
        """The `k` most similar indexed paths to each of `vectors` `(queries, dim)` (embeddings as the folder holds
        them), best first, with their cosine similarity; `exclude[i]` (a path) is left out of query `i`'s results."""
        return self._search(self._normalised(np.atleast_2d(vectors)), k, exclude)

    def _search(self, normalised: np.ndarray, k: int, exclude: list[str | None] | None):
        exclude = exclude or [None] * len(normalised)
        scores, rows = self.index.search(normalised, min(k + 1, len(self.paths)))
        results = []
        for query_scores, query_rows, skipped in zip(scores, rows, exclude):
            found = [(self.paths[row], float(score)) for score, row in zip(query_scores, query_rows)
                     if row >= 0 and self.paths[row] != skipped]
            results.append(found[:k])
        return results

    def contains(self, path: str) -> bool:
        return path in self._row_of

    def search_paths(self, paths: list[str], k: int = 10) -> list[list[tuple[str, float]]]:
        """Tracks like ones already in the index, each query's own path left out."""
        missing = [path for path in paths if path not in self._row_of]
        if missing:
            raise KeyError(f"Not in the index: {missing}")
        stored = self.index.reconstruct_batch(np.array([self._row_of[path] for path in paths]))
        return self._search(stored, k, exclude=list(paths))

    def search_audio(self, audio, k: int = 10) -> list[tuple[str, float]]:
        """Tracks like `audio` (a path, or anything `MusiCoderEmbedder` takes), embedded with the model and settings
        the index was made with."""
        return self.search(self.embed(audio)[None], k, exclude=[str(Path(audio).absolute()) if isinstance(
            audio, (str, Path)) else None])[0]

    def embed(self, audio) -> np.ndarray:
        """`audio`'s embedding as the folder's were made (model, layers, pooling, dtype from its summary.json)."""
        import torch

        from .embeddings import MusiCoderEmbedder

        if not self.settings.get("model"):
            raise ValueError("This index has no summary.json settings: embed the query yourself and call `search`.")
        if self._embedder is None:
            self._embedder = MusiCoderEmbedder.from_pretrained(
                self.settings["model"], dtype=getattr(torch, self.settings.get("dtype", "float32")))
        output = self._embedder(audio if not isinstance(audio, Path) else str(audio),
                                layers=self.settings["layers"], pooling=self.settings["pooling"])
        return output.embeddings.flatten().numpy()


@dataclass
class SearchArguments:
    index_dir: str = field(metadata={"help": "A musicoder-embed --output_dir."})
    query: list[str] = field(metadata={"help": "Audio files to find similar tracks for (indexed or not)."})
    k: int = field(default=10, metadata={"help": "Results per query."})
    json: bool = field(default=False, metadata={"help": "Print JSON ({query: [[path, score], ...]}) instead."})


def main(argv=None) -> int:
    args = parse_command_line(command_line_parser(SearchArguments, description=__doc__, prog="musicoder-search"), argv)
    try:
        index = EmbeddingIndex.load(args.index_dir)
        results = {}
        for query in args.query:
            absolute = str(Path(query).absolute())
            results[query] = (index.search_paths([absolute], args.k)[0] if index.contains(absolute)
                              else index.search_audio(query, args.k))
    except (ValueError, OSError, ImportError, KeyError) as error:
        print(f"musicoder-search: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for query, found in results.items():
            print(f"{query}:")
            for rank, (path, score) in enumerate(found, 1):
                print(f"  {rank:3d}  {score:.4f}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["EmbeddingIndex", "SearchArguments", "main"]
