"""Load a labeled audio folder -- one of our tasks or a user's own -- as a `datasets.DatasetDict`.

One path for everything that fine-tuning reads::

    from musicoder_hf.data.labeled import load_labeled_dataset, label_info
    ds = load_labeled_dataset("data/tasks/folk")          # or "my_music/"
    info = label_info(ds)   # names, problem_type, label_column, id2label, label2id

Accepted layouts (audio: anything `datasets.Audio` decodes -- wav, flac, mp3, ogg, opus, ...):

(a) a task folder written by ``musicoder-data build-tasks``: ``<split>/metadata.jsonl`` + ``labels.json``;
(b) labels as folder names: ``root/<label>/*.wav`` or ``root/<split>/<label>/*.wav``;
(c) a ``metadata.csv`` (or ``metadata.jsonl``) next to the audio, in the root or in each split folder:
    ``file_name,label`` (single-label) or ``file_name,labels`` with ``;``-separated tags (multi-label),
    plus optional grouping columns ``piece_id``/``track_id``/``artist``.

The result always has an ``audio`` column (``Audio(sampling_rate=44100, num_channels=1)``: any file is
decoded, down-mixed and resampled on access) and either ``label`` (``ClassLabel``, single-label) or
``labels`` (``List(ClassLabel)``, multi-label).  ``MusiCoderForSequenceClassification`` wants float
multi-hot vectors for multi-label problems: convert with :func:`to_multi_hot` in your preprocessing.
Splits ``train``/``validation``/``test``; missing ones are carved out of ``train`` (seeded, grouped by
``piece_id``/``track_id``/``artist`` when present so a piece never straddles two splits; a warning
says so).  Works offline (``HF_HUB_OFFLINE=1``, ``HF_DATASETS_OFFLINE=1``): ``audiofolder`` is a
builder packaged with ``datasets``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from ..versions import check_torchcodec

logger = logging.getLogger(__name__)

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
GROUP_COLUMNS = ("piece_id", "track_id", "artist")
SPLITS = ("train", "validation", "test")
METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
TAG_SEPARATOR = ";"


def audio_extensions() -> set[str]:
    from datasets.packaged_modules.audiofolder.audiofolder import AudioFolder

    return {e.lower() for e in AudioFolder.EXTENSIONS}


@dataclasses.dataclass(frozen=True)
class LabelInfo:
    """What a classifier head needs to know about a labeled dataset."""

    names: list[str]
    problem_type: str  # "single_label_classification" | "multi_label_classification"
    label_column: str  # "label" | "labels"

    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}


def label_info(dataset) -> LabelInfo:
    """Names, problem type and label column of a dataset from `load_labeled_dataset` (read from its features)."""
    from datasets import ClassLabel, DatasetDict, List, Sequence

    ds = next(iter(dataset.values())) if isinstance(dataset, DatasetDict) else dataset
    features = ds.features
    if "label" in features and isinstance(features["label"], ClassLabel):
        return LabelInfo(list(features["label"].names), SINGLE_LABEL, "label")
    if "labels" in features:
        feat = features["labels"]
        inner = getattr(feat, "feature", None)
        if isinstance(feat, (List, Sequence)) and isinstance(inner, ClassLabel):
            return LabelInfo(list(inner.names), MULTI_LABEL, "labels")
    raise ValueError(f"no `label` ClassLabel or `labels` List(ClassLabel) column in features {features}")


def to_multi_hot(label_ids, num_labels: int) -> list[float]:
    """[2, 5] -> [0., 0., 1., 0., 0., 1., ...] (length num_labels): the float targets that
    `MusiCoderForSequenceClassification` (problem_type multi_label_classification) expects."""
    out = [0.0] * int(num_labels)
    for i in label_ids:
        if not 0 <= int(i) < num_labels:
            raise ValueError(f"label id {i} out of range for {num_labels} labels")
        out[int(i)] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# folder inspection and clear errors
# ---------------------------------------------------------------------------------------------


def _visible_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).parts
        if p.is_file() and not any(part.startswith((".", "__")) for part in rel):
            out.append(p)
    return out


def _read_metadata_columns(meta: Path) -> tuple[list[str], list[dict]]:
    if meta.suffix == ".csv":
        with open(meta, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return [c.strip() for c in (reader.fieldnames or [])], rows
    rows = []
    for k, line in enumerate(meta.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{meta}: line {k + 1} is not valid JSON ({err})") from None
    columns = list(dict.fromkeys(c for r in rows for c in r))
    return columns, rows


def _check_metadata(root: Path, metas: list[Path], task_labels: dict | None) -> str:
    """Validate metadata files; return the label column ("label" or "labels")."""
    label_columns = set()
    for meta in metas:
        columns, rows = _read_metadata_columns(meta)
        if "file_name" not in columns:
            raise ValueError(
                f"{meta} has no 'file_name' column (columns: {columns}); the first column must be "
                "file_name, the audio path relative to the metadata file"
            )
        present = [c for c in ("label", "labels") if c in columns]
        if not present:
            raise ValueError(
                f"{meta} has no label column (columns: {columns}): add 'label' (single-label) or "
                f"'labels' (multi-label, tags separated by '{TAG_SEPARATOR}')"
            )
        if len(present) == 2:
            raise ValueError(f"{meta} has both 'label' and 'labels' columns: keep one")
        label_columns.add(present[0])
        missing = [r["file_name"] for r in rows if not (meta.parent / str(r.get("file_name") or "")).is_file()]
        if missing:
            raise ValueError(f"{meta}: {len(missing)} file_name entries do not exist next to it, e.g. {missing[:3]}")
        empty = [r["file_name"] for r in rows if r.get(present[0]) in (None, "", [])]
        if empty and present[0] == "label":
            raise ValueError(f"{meta}: rows without a label, e.g. {empty[:3]}")
    if len(label_columns) > 1:
        raise ValueError(f"metadata files under {root} mix 'label' and 'labels' columns")
    return label_columns.pop()


def _inspect(root: Path):
    """Return (kind, label_column, task_labels) after checking the folder; raise clear errors."""
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder: pass the folder that holds the audio")
    files = _visible_files(root)
    if not files:
        raise ValueError(f"{root} is empty")
    sub_tasks = sorted(p.parent.name for p in root.glob("*/labels.json"))
    if sub_tasks and not (root / "labels.json").is_file():
        raise ValueError(
            f"{root} holds {'several tasks' if len(sub_tasks) > 1 else 'a task'} "
            f"({', '.join(sub_tasks)}): pass one, e.g. {root / sub_tasks[0]}"
        )
    exts = audio_extensions()
    audio = [f for f in files if f.suffix.lower() in exts]
    if not audio:
        raise ValueError(
            f"no audio files under {root} (looked for {', '.join(sorted(e for e in exts if len(e) <= 5))} ...)"
        )
    task_labels = None
    if (root / "labels.json").is_file():
        task_labels = json.loads((root / "labels.json").read_text(encoding="utf-8"))
        if task_labels.get("problem_type") not in (SINGLE_LABEL, MULTI_LABEL) or not task_labels.get("names"):
            raise ValueError(f"{root / 'labels.json'} needs 'problem_type' ({SINGLE_LABEL}|{MULTI_LABEL}) and 'names'")
    metas = [f for f in files if f.name in METADATA_NAMES]
    if metas:
        kinds = {m.suffix for m in metas}
        if len(kinds) > 1:
            raise ValueError(f"{root} mixes metadata.csv and metadata.jsonl: keep one format")
        label_column = _check_metadata(root, metas, task_labels)
        if task_labels is not None:
            expected = "label" if task_labels["problem_type"] == SINGLE_LABEL else "labels"
            if label_column != expected:
                raise ValueError(f"labels.json says {task_labels['problem_type']} but metadata has '{label_column}'")
        return ("task" if task_labels else "metadata"), label_column, task_labels
    depths = {len(f.relative_to(root).parts) for f in audio}
    if depths == {1}:
        raise ValueError(
            f"{root} has audio files but no labels: put them in <label>/ subfolders "
            f"(root/<label>/*.wav or root/<split>/<label>/*.wav) or add a metadata.csv with file_name,label"
        )
    return "folders", "label", None


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------


def _split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    counts = {s: int(round(n * f)) for s, f in fractions.items()}
    if n >= len(fractions) + 1:
        counts = {s: max(1, c) for s, c in counts.items()}
    while sum(counts.values()) > n - 1 and any(counts.values()):
        largest = max(counts, key=counts.get)
        counts[largest] -= 1
    return counts


def _carve_splits(train, missing: list[str], seed: int, label_column: str, fractions: dict[str, float]):
    """Split `train` into train + `missing` splits by group (piece_id/track_id/artist, else file)."""
    group_col = next((c for c in GROUP_COLUMNS if c in train.column_names), None)
    groups = list(train[group_col]) if group_col else list(range(len(train)))
    first_row = {}
    for i, g in enumerate(groups):
        first_row.setdefault(g, i)
    # stratify groups by the label of their first row for single-label data
    if label_column == "label":
        labels = train[label_column]
        strata = {}
        for g, i in first_row.items():
            strata.setdefault(labels[i], []).append(g)
    else:
        strata = {None: list(first_row)}
    rng = np.random.default_rng(seed)
    assign = {}
    want = {s: fractions[s] for s in missing}
    for key in sorted(strata, key=lambda k: (k is None, k)):
        gs = strata[key]
        order = [gs[i] for i in rng.permutation(len(gs))]
        counts = _split_counts(len(order), want)
        pos = 0
        for split in missing:
            for g in order[pos : pos + counts[split]]:
                assign[g] = split
            pos += counts[split]
    idx = {s: [] for s in ["train", *missing]}
    for i, g in enumerate(groups):
        idx[assign.get(g, "train")].append(i)
    logger.warning(
        "no %s split found: made a seeded (seed=%d) split of the training data by %s, %s",
        "/".join(missing),
        seed,
        group_col or "file (no piece_id/track_id/artist column)",
        ", ".join(f"{s}={len(v)}" for s, v in idx.items()),
    )
    return {s: train.select(v) for s, v in idx.items()}


# ---------------------------------------------------------------------------------------------
# the loader
# ---------------------------------------------------------------------------------------------


def load_labeled_dataset(
    path,
    sampling_rate: int = 44100,
    mono: bool = True,
    seed: int = 0,
    validation_size: float = 0.15,
    test_size: float = 0.15,
    names=None,
):
    """Load a labeled audio folder as a `DatasetDict` with splits train/validation/test.

    path: a task folder from ``build-tasks`` (``labels.json`` + ``<split>/metadata.jsonl``), a folder
        with labels as subfolders, or a folder with ``metadata.csv`` (see the module docstring).
    sampling_rate: audio is decoded/resampled to this rate on access (default 44100, MusiCoder's).
    mono: down-mix to one channel on decoding.
    seed, validation_size, test_size: for splits the folder does not provide (grouped, stratified).
    names: optional class-name order (default: labels.json order, else sorted names).

    Returns a `datasets.DatasetDict`; `label_info(ds)` gives names and problem type, also stored as
    JSON in every split's ``info.description``.
    """
    from datasets import Audio, ClassLabel, DatasetDict, List, load_dataset

    root = Path(path).expanduser()
    kind, label_column, task_labels = _inspect(root)
    check_torchcodec()  # datasets reads and decodes the audio with it
    data = load_dataset("audiofolder", data_dir=str(root))
    data = DatasetDict({("validation" if k in ("valid", "val", "dev") else k): v for k, v in data.items()})
    unknown = [k for k in data if k not in SPLITS]
    if unknown:
        raise ValueError(f"{root}: unexpected split folder(s) {unknown}; use train/, validation/ and test/")
    if label_column not in data["train" if "train" in data else next(iter(data))].column_names:
        raise ValueError(f"{root}: no '{label_column}' column after loading (layout not recognised)")

    feature = data[next(iter(data))].features[label_column]
    multi = label_column == "labels"
    if multi:

        def _tags(column):
            out = []
            for v in column:
                if v is None:
                    v = []
                elif isinstance(v, str):
                    v = [t.strip() for t in v.split(TAG_SEPARATOR) if t.strip()]
                out.append([str(t) for t in v])
            return {"labels": out}

        inner = getattr(feature, "feature", None)
        if not isinstance(inner, ClassLabel):
            data = data.map(_tags, input_columns="labels", batched=True, desc="parse tags")
        values = sorted(
            {t for ds in data.values() for row in ds["labels"] for t in (row if isinstance(row, list) else [])}
        )
    else:
        if isinstance(feature, ClassLabel):
            values = list(feature.names)
        else:
            data = data.map(
                lambda col: {"label": [str(v) for v in col]}, input_columns="label", batched=True, desc="labels to str"
            )
            values = sorted({str(v) for ds in data.values() for v in ds["label"]})
    if names is None:
        names = list(task_labels["names"]) if task_labels else values
    names = [str(n) for n in names]
    extra = sorted(set(values) - set(names))
    if extra:
        raise ValueError(f"{root}: labels {extra[:10]} are not in the class names {names}")
    if not names:
        raise ValueError(f"{root}: no labels found")

    if multi:
        target = List(ClassLabel(names=names))
        if getattr(feature, "feature", None) != target.feature:
            data = data.cast_column("labels", target)
    else:
        target = ClassLabel(names=names)
        if feature != target:
            if isinstance(feature, ClassLabel):  # re-order the folder-inferred ids to `names`
                features = data[next(iter(data))].features.copy()
                features["label"] = target
                data = data.map(
                    lambda col: {"label": [target.str2int(feature.int2str(v)) for v in col]},
                    input_columns="label",
                    batched=True,
                    features=features,
                    desc="re-order labels",
                )
            else:
                data = data.cast_column("label", target)
    data = data.cast_column("audio", Audio(sampling_rate=sampling_rate, num_channels=1 if mono else None))

    missing = [s for s in ("validation", "test") if s not in data]
    if missing:
        if "train" not in data:
            raise ValueError(f"{root}: no train split (found {list(data)})")
        fractions = {"validation": validation_size, "test": test_size}
        data.update(_carve_splits(data["train"], missing, seed, label_column, fractions))
    data = DatasetDict({s: data[s] for s in SPLITS if s in data})
    problem_type = MULTI_LABEL if multi else SINGLE_LABEL
    if task_labels and task_labels["problem_type"] != problem_type:
        raise ValueError(f"{root}: labels.json problem_type {task_labels['problem_type']} does not match the data")
    description = json.dumps(
        {
            "problem_type": problem_type,
            "names": names,
            "label_column": label_column,
            "source": str(root),
            "layout": kind,
        }
    )
    for ds in data.values():
        ds.info.description = description
    return data


def cross_validation_folds(dataset, n_folds: int = 10, validation_fraction: float = 0.2, seed: int = 0):
    """Yield (fold, DatasetDict(train, validation, test)) for k-fold cross-validation (the GTZAN protocol).

    All splits are pooled; the test part of fold k is the pieces with ``fold == k`` (our folk task
    stores a stratified, piece-level ``fold`` column) or, without that column, a seeded piece-level
    (``piece_id``/``track_id``/``artist``) stratified assignment.  The remaining pieces are divided
    80/20 (``validation_fraction``) into train/validation per class, by piece.
    """
    from datasets import DatasetDict, concatenate_datasets

    pooled = concatenate_datasets(list(dataset.values())) if isinstance(dataset, DatasetDict) else dataset
    info = label_info(pooled)
    group_col = next((c for c in GROUP_COLUMNS if c in pooled.column_names), None)
    groups = list(pooled[group_col]) if group_col else list(range(len(pooled)))
    labels = list(pooled[info.label_column]) if info.label_column == "label" else [None] * len(pooled)
    first = {}
    for i, g in enumerate(groups):
        first.setdefault(g, i)
    rng = np.random.default_rng(seed)
    if "fold" in pooled.column_names:
        folds = list(pooled["fold"])
        fold_of = {g: int(folds[i]) % n_folds for g, i in first.items()}
    else:
        fold_of, by_label = {}, {}
        for g, i in first.items():
            by_label.setdefault(labels[i], []).append(g)
        for key in sorted(by_label, key=lambda k: (k is None, k)):
            gs = by_label[key]
            for j, idx in enumerate(rng.permutation(len(gs))):
                fold_of[gs[idx]] = j % n_folds
    for k in range(n_folds):
        rest = [g for g in first if fold_of[g] != k]
        by_label = {}
        for g in rest:
            by_label.setdefault(labels[first[g]], []).append(g)
        val_groups = set()
        for key in sorted(by_label, key=lambda x: (x is None, x)):
            gs = by_label[key]
            n_val = max(1, int(round(len(gs) * validation_fraction))) if len(gs) > 1 else 0
            val_groups.update(gs[i] for i in rng.permutation(len(gs))[:n_val])
        idx = {"train": [], "validation": [], "test": []}
        for i, g in enumerate(groups):
            split = "test" if fold_of[g] == k else "validation" if g in val_groups else "train"
            idx[split].append(i)
        yield k, DatasetDict({s: pooled.select(v) for s, v in idx.items()})
