"""A whole music collection in, embeddings or tags out: `musicoder-embed` and `musicoder-classify`.

    musicoder-embed --model_name_or_path pretrained/musicoder-small --inputs ~/Music --output_dir runs/embeddings
    musicoder-classify --model_name_or_path my-genre-model --inputs ~/Music --output_dir runs/genres --top_k 3

    import datasets
    table = datasets.load_dataset("parquet", data_dir="runs/embeddings/embeddings", split="train")

What it writes in `--output_dir`:

- `embeddings/part-*.parquet`: one row per embedded file: `path` (absolute), `size`, `mtime_ns`, `duration` (seconds),
  `embedding` (the selected layers' pooled vectors, concatenated: `len(layers) x hidden_size`, twice that with
  statistics pooling), and with `--frame_embeddings`, `frame_embeddings` (one such vector per frame) and `timestamps`
  (frame centres, seconds). The layers, pooling and model are in `summary.json` and in each file's schema metadata.
- `failures/part-*.csv` and, merged, `failures.csv`: every file it could not use (missing, unreadable, corrupt, empty,
  silent-by-size, too short) and why. The run goes on; the exit status is 3 when any file failed.
- `summary.json`: counts, hours of audio, x real time, wall time, model and settings, library versions.

`musicoder-classify` runs a fine-tuned checkpoint the same way: its parts (`predictions/part-*.parquet`) hold `path`,
`duration`, `labels` and `scores` (the top `--top_k`, softmax or sigmoid as the checkpoint's `problem_type` says),
merged at the end into `predictions.csv` (or `predictions.parquet` with `--format parquet`).

A run is resumable and exact. Files are keyed by absolute path, size and modification time; a rerun with the same
model and settings skips every file already in a part (embedded or failed) and does the rest. Parts are written
atomically (a temporary file, then a rename), so after `kill -9` at any moment a rerun yields every file exactly once,
redoing at most the part that was being filled (`--files_per_part` files). An output folder holds one model and one
set of settings: another model or settings there is refused.

Decoding and features run in `--num_workers` worker processes (a `torch.utils.data.DataLoader`; by default the cores
beyond two, at most 4), overlapped with the model's batched windows in the main process. Under `accelerate launch`
with N processes (CPUs, GPUs or nodes), the files are split between the processes with accelerate's
`split_between_processes`, and each process writes its own parts.
"""

import csv
import glob
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .audio import load_audio
from .utils import atomic_file, command_line_parser, parse_command_line, write_json

EMBEDDINGS_DIR = "embeddings"
PREDICTIONS_DIR = "predictions"
FAILURES_DIR = "failures"
SUMMARY_FILE = "summary.json"
FAILURES_FILE = "failures.csv"
# Exit status when the run finished but some files could not be used (0: all used; 1: the command failed; 2: usage).
SOME_FILES_FAILED = 3


@dataclass
class CollectionArguments:
    model_name_or_path: str = field(metadata={"help": "A MusiCoder checkpoint folder."})
    inputs: list[str] = field(metadata={
        "help": "Folders (searched recursively for audio files), globs, audio files, or .txt / .csv lists of paths "
                "(one per line; a CSV's `path` column, else its first column)."})
    output_dir: str = field(metadata={"help": "Where the parts, failures.csv and summary.json go."})
    dtype: str = field(default="float32", metadata={
        "help": "The model's dtype: float32 or bfloat16 (about twice as fast on CPUs with bf16 and on GPUs)."})
    batch_size: int = field(default=8, metadata={"help": "Windows per forward pass (clips, for musicoder-classify)."})
    num_workers: int | None = field(default=None, metadata={
        "help": "Processes that decode and featurise files while the model runs (0: in the main process). Default: "
                "the CPU count minus 2 (left to the model), at most 4: 0 on a 2-core machine, where workers only "
                "compete with the model for the cores."})
    files_per_part: int = field(default=256, metadata={
        "help": "Files per Parquet part: what a kill can cost (the part being filled is redone)."})
    min_duration: float = field(default=1.0, metadata={
        "help": "Shorter files are recorded as failures ('too short'), in seconds."})
    frame_stride: int = field(default=1, metadata={
        "help": "Inference patchout: read one frame of every N, each at its own position (about N times less model "
                "work at a small cost in accuracy; see docs/inference.md#patchout). 1 reads every frame."})


@dataclass
class EmbedArguments(CollectionArguments):
    layers: list[int] | None = field(default=None, metadata={
        "help": "Hidden states to keep (0 is the input embedding, -1 the last layer); default: every layer."})
    pooling: str = field(default="auto", metadata={
        "help": "'auto' (the checkpoint's classifier_pooling), 'mean' or 'mean_std' (mean and standard deviation)."})
    frame_embeddings: bool = field(default=False, metadata={
        "help": "Also store one embedding per frame (23 ms) with its timestamp."})


@dataclass
class ClassifyArguments(CollectionArguments):
    top_k: int = field(default=5, metadata={"help": "Labels (and scores) kept per file, best first."})
    format: str = field(default="csv", metadata={
        "help": "predictions.csv ('csv') or predictions.parquet ('parquet')."})


def default_num_workers() -> int:
    """Decoding workers when `--num_workers` is not given: the cores beyond two (left to the model), at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 2))


def audio_suffixes() -> set[str]:
    from .data.labeled import audio_extensions

    return audio_extensions()


def collect_files(inputs: list[str]) -> list[Path]:
    """The files named by `inputs` (see `EmbedArguments.inputs`), absolute, each once, in a stable order. A named path
    that does not exist is kept: it becomes a failure ('not found'), as a file listed by mistake should."""
    suffixes = audio_suffixes()
    found: dict[str, Path] = {}

    def add(path: Path):
        path = Path(os.path.abspath(path))
        found.setdefault(str(path), path)

    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in suffixes:
                    add(file)
        elif path.suffix.lower() in (".txt", ".csv") and path.is_file():
            for listed in _read_list(path):
                add(listed if listed.is_absolute() else path.parent / listed)
        elif glob.has_magic(item):
            for file in sorted(glob.glob(os.path.expanduser(item), recursive=True)):
                if Path(file).is_file():
                    add(Path(file))
        else:
            add(path)
    return list(found.values())


def _read_list(path: Path) -> list[Path]:
    """Paths listed in a .txt (one per line) or .csv file (its `path` column, else its first column)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        return [Path(line.strip()) for line in text.splitlines() if line.strip() and not line.startswith("#")]
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        return []
    column = rows[0].index("path") if "path" in rows[0] else 0
    body = rows[1:] if "path" in rows[0] else rows
    return [Path(row[column]) for row in body if row and row[column].strip()]


def file_key(path: Path) -> tuple[str, int, int]:
    """(absolute path, size, modification time in ns): a file changed since it was embedded is embedded again."""
    try:
        stat = path.stat()
        return str(path), stat.st_size, stat.st_mtime_ns
    except OSError:
        return str(path), -1, -1


class _DecodedFiles(IterableDataset):
    """Decodes and featurises files in DataLoader workers: yields `{"index", "features", "duration"}`, or
    `{"index", "error"}` for a file that cannot be used."""

    def __init__(self, files: list[Path], feature_extractor, min_duration: float):
        self.files, self.feature_extractor, self.min_duration = files, feature_extractor, min_duration

    def __iter__(self):
        worker = get_worker_info()
        indices = range(len(self.files))
        if worker is not None:
            torch.set_num_threads(1)  # the workers share the cores with each other and with the model
            indices = indices[worker.id :: worker.num_workers]
        extractor = self.feature_extractor
        for index in indices:
            path = self.files[index]
            try:
                if not path.exists():
                    raise FileNotFoundError(f"not found: {path}")
                waveform = load_audio(str(path), extractor.sampling_rate)
                duration = len(waveform) / extractor.sampling_rate
                if duration < self.min_duration:
                    raise ValueError(f"too short: {duration:.2f} s < --min_duration {self.min_duration} s")
                features = extractor(waveform, sampling_rate=extractor.sampling_rate)["input_features"][0]
                yield {"index": index, "features": np.asarray(features, dtype=np.float32), "duration": duration}
            except Exception as error:  # noqa: BLE001 - any reason a file is unusable is recorded; the run goes on
                message = " ".join(str(error).split()) or type(error).__name__
                yield {"index": index, "error": f"{type(error).__name__}: {message}"}


def model_digest(model_name_or_path: str) -> str:
    """sha256 of a checkpoint folder's configs and weights (their content: a copy elsewhere has the same digest)."""
    folder = Path(model_name_or_path)
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
        if name.endswith((".json", ".safetensors")) and (folder / name).is_file():
            digest.update(name.encode())
            with open(folder / name, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()


def with_fingerprint(settings: dict) -> dict:
    """`settings` plus `fingerprint`, a short hash of them: what an output folder's rows depend on."""
    return {**settings, "fingerprint": hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]}


def drop_stale_rows(output_dir: Path, files: list[Path], parts_dir: str) -> int:
    """Remove, from the parts, the rows and failures of files that changed since (another size or modification time),
    so that a changed file has one row, its new one, after this run. Each part is rewritten atomically. Returns how
    many rows went."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    current = {str(path): file_key(path) for path in files}
    dropped = 0
    for part in sorted((output_dir / parts_dir).glob("part-*.parquet")):
        table = pq.read_table(part)
        keys = zip(table["path"].to_pylist(), table["size"].to_pylist(), table["mtime_ns"].to_pylist())
        keep = [key[0] not in current or current[key[0]] == key for key in keys]
        if not all(keep):
            dropped += keep.count(False)
            with atomic_file(part) as temporary:
                pq.write_table(table.filter(pc.equal(np.array(keep), True)), temporary)
    for part in sorted((output_dir / FAILURES_DIR).glob("part-*.csv")):
        with open(part, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows
                if row["path"] not in current or current[row["path"]] == (row["path"], int(row["size"]),
                                                                          int(row["mtime_ns"]))]
        if len(kept) < len(rows):
            dropped += len(rows) - len(kept)
            _write_failures(part, kept)
    return dropped


def _write_failures(path: Path, rows: list[dict]) -> None:
    with atomic_file(path) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["path", "size", "mtime_ns", "reason"])
            writer.writeheader()
            writer.writerows(rows)


def done_keys(output_dir: Path, parts_dir: str, fingerprint: str) -> set[tuple[str, int, int]]:
    """Keys of the files already in the output folder's parts, embedded or failed. Refuses a folder that holds another
    model's or other settings' parts."""
    import pyarrow.parquet as pq

    keys = set()
    for part in sorted((output_dir / parts_dir).glob("part-*.parquet")):
        table = pq.read_table(part, columns=["path", "size", "mtime_ns"])
        found = (table.schema.metadata or {}).get(b"musicoder_fingerprint", b"").decode()
        if found != fingerprint:
            raise ValueError(
                f"{output_dir} holds results of another model or other settings ({part.name}: fingerprint "
                f"{found or 'none'}, this run: {fingerprint}). Use another --output_dir, or remove that one.")
        keys.update(zip(table["path"].to_pylist(), table["size"].to_pylist(), table["mtime_ns"].to_pylist()))
    for part in sorted((output_dir / FAILURES_DIR).glob("part-*.csv")):
        with open(part, newline="", encoding="utf-8") as handle:
            keys.update((row["path"], int(row["size"]), int(row["mtime_ns"])) for row in csv.DictReader(handle))
    return keys


class _PartWriter:
    """Collects rows and failures and writes them as parts, each atomically, every `files_per_part` files."""

    def __init__(self, output_dir: Path, parts_dir: str, run_id: str, files_per_part: int, settings: dict,
                 types: dict):
        self.output_dir, self.parts_dir, self.run_id = output_dir, parts_dir, run_id
        self.files_per_part, self.settings, self.types = files_per_part, settings, types
        self.rows, self.failures, self.parts = [], [], 0

    def add_row(self, row: dict):
        self.rows.append(row)
        self._maybe_flush()

    def add_failure(self, key: tuple[str, int, int], reason: str):
        self.failures.append({"path": key[0], "size": key[1], "mtime_ns": key[2], "reason": reason})
        self._maybe_flush()

    def _maybe_flush(self):
        if len(self.rows) + len(self.failures) >= self.files_per_part:
            self.flush()

    def flush(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = f"part-{self.run_id}-{self.parts:05d}"
        if self.failures:  # written first: a kill between the two files only makes the rows of this part redone
            _write_failures(self.output_dir / FAILURES_DIR / f"{name}.csv", self.failures)
        if self.rows:
            table = pa.table({key: pa.array([row[key] for row in self.rows], type=self.types.get(key))
                              for key in self.rows[0]})
            table = table.replace_schema_metadata({b"musicoder_fingerprint": self.settings["fingerprint"].encode(),
                                                   b"musicoder_settings": json.dumps(self.settings).encode()})
            with atomic_file(self.output_dir / self.parts_dir / f"{name}.parquet") as temporary:
                pq.write_table(table, temporary)
        if self.rows or self.failures:
            self.parts += 1
        self.rows, self.failures = [], []


def merge_failures(output_dir: Path) -> list[dict]:
    """`failures.csv` from every failure part (path order), written atomically; returns its rows."""
    rows = []
    for part in sorted((output_dir / FAILURES_DIR).glob("part-*.csv")):
        with open(part, newline="", encoding="utf-8") as handle:
            rows.extend(csv.DictReader(handle))
    rows.sort(key=lambda row: row["path"])
    with atomic_file(output_dir / FAILURES_FILE) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "reason"])
            writer.writerows([row["path"], row["reason"]] for row in rows)
    return rows


class _EmbedJob:
    """What `musicoder-embed` computes from a batch of featurised files."""

    parts_dir = EMBEDDINGS_DIR

    def __init__(self, args: EmbedArguments, device):
        from .embeddings import MusiCoderEmbedder

        self.args = args
        self.embedder = MusiCoderEmbedder.from_pretrained(
            args.model_name_or_path, dtype=getattr(torch, args.dtype), device=device, batch_size=args.batch_size,
            frame_stride=args.frame_stride)
        self.feature_extractor = self.embedder.feature_extractor
        self.layers = list(self.embedder.resolve_layers(args.layers))
        self.pooling = self.embedder.resolve_pooling(args.pooling)
        self.settings = with_fingerprint({
            "command": "musicoder-embed", "model": _model_name(args),
            "model_sha256": model_digest(args.model_name_or_path), "layers": self.layers, "pooling": self.pooling,
            "frame_embeddings": args.frame_embeddings, "dtype": args.dtype, "min_duration": args.min_duration,
            "frame_stride": args.frame_stride,
        })  # fmt: skip
        import pyarrow as pa

        self.types = {"embedding": pa.list_(pa.float32()), "frame_embeddings": pa.list_(pa.list_(pa.float32())),
                      "timestamps": pa.list_(pa.float32())}

    def rows(self, features: list[np.ndarray]) -> list[dict]:
        from .modeling_musicoder import masked_pool

        frame_level = self.args.frame_embeddings
        outputs = self.embedder.embed_features(features, layers=self.layers, pooling=None if frame_level else
                                               self.pooling)
        rows = []
        for output in outputs:
            if not frame_level:
                rows.append({"embedding": output.embeddings.flatten().numpy()})
                continue
            frames = output.embeddings.movedim(0, 1).flatten(1)  # (frames, layers * hidden)
            pooled = masked_pool(frames[None], None, self.pooling)[0]
            rows.append({"embedding": _layers_concatenated(pooled, len(self.layers), self.pooling),
                         "frame_embeddings": list(frames.numpy()), "timestamps": output.timestamps.numpy()})
        return rows


class _ClassifyJob:
    """What `musicoder-classify` computes from a batch of featurised files: the model's logits on the whole clips
    (its `forward` reads long clips in windows), then the top labels."""

    parts_dir = PREDICTIONS_DIR

    def __init__(self, args: ClassifyArguments, device):
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        self.args = args
        self.model = AutoModelForAudioClassification.from_pretrained(
            args.model_name_or_path, dtype=getattr(torch, args.dtype)).to(device).eval()
        if getattr(self.model.config, "model_type", None) != "musicoder":
            raise ValueError(f"{args.model_name_or_path} is not a MusiCoder classifier checkpoint.")
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(args.model_name_or_path)
        config = self.model.config
        self.multi_label = config.problem_type == "multi_label_classification"
        self.top_k = max(1, min(args.top_k, config.num_labels))
        self.settings = with_fingerprint({
            "command": "musicoder-classify", "model": _model_name(args),
            "model_sha256": model_digest(args.model_name_or_path), "labels": [config.id2label[i] for i in
                                                                                range(config.num_labels)],
            "scores": "sigmoid" if self.multi_label else "softmax", "top_k": self.top_k, "dtype": args.dtype,
            "min_duration": args.min_duration, "frame_stride": args.frame_stride,
        })  # fmt: skip
        import pyarrow as pa

        self.types = {"labels": pa.list_(pa.string()), "scores": pa.list_(pa.float32())}

    @torch.no_grad()
    def rows(self, features: list[np.ndarray]) -> list[dict]:
        from .data_collator import pad_frames

        batch = pad_frames([torch.as_tensor(frames) for frames in features], frame_stride=self.args.frame_stride)
        device = self.model.device
        features = batch.pop("input_features").to(device, self.model.dtype)
        logits = self.model(input_features=features, **{key: value.to(device) for key, value in batch.items()}
                            ).logits.float().cpu()
        scores = logits.sigmoid() if self.multi_label else logits.softmax(-1)
        top = scores.topk(self.top_k, dim=-1)
        id2label = self.model.config.id2label
        return [{"labels": [id2label[int(i)] for i in ids], "scores": values.numpy()}
                for values, ids in zip(top.values, top.indices)]


def _model_name(args) -> str:
    folder = Path(args.model_name_or_path)
    return str(folder.resolve()) if folder.exists() else args.model_name_or_path


def run_collection(args: CollectionArguments, make_job) -> dict:
    """The machinery of both commands (see the module docstring): files, resume, workers, parts, failures, summary.
    `make_job(args, device)` builds what turns featurised files into rows."""
    from accelerate import Accelerator

    from . import __version__
    from .embeddings import check_frame_stride
    from .versions import installed_versions

    if args.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype must be float32 or bfloat16, got {args.dtype!r}.")
    check_frame_stride(args.frame_stride)
    # cpu=True without CUDA: under `accelerate launch --multi_gpu` a CPU-only machine then runs N real processes.
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    started = time.time()
    output_dir = Path(args.output_dir)
    job = make_job(args, accelerator.device)
    settings = job.settings
    files = collect_files(args.inputs)
    if not files:
        raise ValueError(f"No audio files found in {args.inputs}.")
    done_keys(output_dir, job.parts_dir, settings["fingerprint"])  # refuses another model's folder before any change
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        drop_stale_rows(output_dir, files, job.parts_dir)
    accelerator.wait_for_everyone()  # every process reads the same parts before any writes new ones
    done = done_keys(output_dir, job.parts_dir, settings["fingerprint"])
    todo = [path for path in files if file_key(path) not in done]

    workers = args.num_workers if args.num_workers is not None else default_num_workers()
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-p{accelerator.process_index}"
    writer = _PartWriter(output_dir, job.parts_dir, run_id, args.files_per_part, settings, job.types)
    seconds = processed = failed = 0
    with accelerator.split_between_processes(todo) as mine:
        loader = DataLoader(_DecodedFiles(mine, job.feature_extractor, args.min_duration), batch_size=None,
                            num_workers=workers, prefetch_factor=4 if workers else None)
        progress = _progress(len(mine), accelerator.is_local_main_process)
        pending = []

        def run(pending):
            nonlocal seconds, processed
            for item, row in zip(pending, job.rows([item["features"] for item in pending])):
                key = file_key(mine[item["index"]])
                writer.add_row({"path": key[0], "size": key[1], "mtime_ns": key[2], "duration": item["duration"],
                                **row})
                seconds += item["duration"]
            processed += len(pending)
            progress.update(len(pending))
            progress.set_postfix_str(f"{seconds / max(time.time() - started, 1e-9):.0f}x real time")

        for item in loader:
            if "error" in item:
                writer.add_failure(file_key(mine[item["index"]]), item["error"])
                failed += 1
                progress.update(1)
                continue
            pending.append(item)
            if len(pending) >= args.batch_size:
                run(pending)
                pending = []
        if pending:
            run(pending)
        writer.flush()
        progress.close()

    totals = accelerator.gather(torch.tensor([[processed, failed, seconds]], dtype=torch.float64,
                                             device=accelerator.device)).cpu()
    accelerator.wait_for_everyone()
    wall = time.time() - started
    summary = {}
    if accelerator.is_main_process:
        failures = merge_failures(output_dir)
        run_done, run_failed, run_seconds = (float(value) for value in totals.reshape(-1, 3).sum(0))
        in_folder = _count_rows(output_dir, job.parts_dir)
        summary = {
            "files_found": len(files),
            "files_skipped_already_done": len(files) - len(todo),
            "this_run": {"files_done": int(run_done), "files_failed": int(run_failed),
                         "audio_hours": run_seconds / 3600, "wall_seconds": wall,
                         "x_real_time": run_seconds / wall if wall > 0 else None,
                         "processes": accelerator.num_processes},
            "output_folder": {"files_done": in_folder["rows"], "audio_hours": in_folder["seconds"] / 3600,
                              "files_failed": len(failures)},
            "settings": settings,
            "arguments": asdict(args),
            "versions": {"musicoder_hf": __version__, "python": sys.version.split()[0],
                         **{k: v for k, v in installed_versions().items() if v}},
        }
        write_json(output_dir / SUMMARY_FILE, summary)
    accelerator.wait_for_everyone()
    return summary


def embed_collection(args: EmbedArguments) -> dict:
    """`musicoder-embed` (see the module docstring); returns the summary."""
    return run_collection(args, _EmbedJob)


def classify_collection(args: ClassifyArguments) -> dict:
    """`musicoder-classify` (see the module docstring); returns the summary."""
    if args.format not in ("csv", "parquet"):
        raise ValueError(f"--format must be csv or parquet, got {args.format!r}.")
    summary = run_collection(args, _ClassifyJob)
    if summary:  # the main process merges every process's parts
        merge_predictions(Path(args.output_dir), args.format)
    return summary


def merge_predictions(output_dir: Path, format: str) -> Path:
    """`predictions.csv` (path, duration, label_1, score_1, ...) or `predictions.parquet` from the parts, in path
    order, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((output_dir / PREDICTIONS_DIR).glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(part) for part in parts]) if parts else None
    rows = sorted(table.select(["path", "duration", "labels", "scores"]).to_pylist(), key=lambda row: row["path"]) \
        if table is not None else []
    target = output_dir / f"predictions.{format}"
    with atomic_file(target) as temporary:
        if format == "parquet":
            pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({"path": []}), temporary)
        else:
            top_k = max((len(row["labels"]) for row in rows), default=0)
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["path", "duration"] + [f"{name}_{k}" for k in range(1, top_k + 1)
                                                        for name in ("label", "score")])
                for row in rows:
                    cells = [value for pair in zip(row["labels"], row["scores"]) for value in
                             (pair[0], f"{pair[1]:.6f}")]
                    writer.writerow([row["path"], f"{row['duration']:.3f}", *cells])
    return target


def _layers_concatenated(pooled: torch.Tensor, num_layers: int, pooling: str) -> np.ndarray:
    """Pooled `(layers * hidden)` frames stats -> the layout of the pooled path: per layer, mean (then std)."""
    if pooling == "mean":
        return pooled.float().numpy()
    mean, std = pooled.float().chunk(2)
    return torch.cat([mean.view(num_layers, -1), std.view(num_layers, -1)], dim=1).flatten().numpy()


def _count_rows(output_dir: Path, parts_dir: str) -> dict:
    import pyarrow.parquet as pq

    rows, seconds = 0, 0.0
    for part in sorted((output_dir / parts_dir).glob("part-*.parquet")):
        durations = pq.read_table(part, columns=["duration"])["duration"].to_numpy()
        rows += len(durations)
        seconds += float(durations.sum())
    return {"rows": rows, "seconds": seconds}


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", disable=not enabled, smoothing=0.1, dynamic_ncols=True)


def _command(arguments_class, run, prog: str, argv) -> int:
    args = parse_command_line(command_line_parser(arguments_class, description=__doc__, prog=prog), argv)
    try:
        summary = run(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    if summary and summary["output_folder"]["files_failed"]:
        failed = summary["output_folder"]["files_failed"]
        print(f"{prog}: {failed} file(s) could not be used: {Path(args.output_dir) / FAILURES_FILE}", file=sys.stderr)
        return SOME_FILES_FAILED
    return 0


def main(argv=None) -> int:
    """`musicoder-embed`."""
    return _command(EmbedArguments, embed_collection, "musicoder-embed", argv)


def classify_main(argv=None) -> int:
    """`musicoder-classify`."""
    return _command(ClassifyArguments, classify_collection, "musicoder-classify", argv)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ClassifyArguments", "EmbedArguments", "classify_collection", "collect_files", "embed_collection",
           "file_key", "main", "classify_main"]
