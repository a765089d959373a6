"""Featurise an audio dataset once into Arrow, so training reads 324-dim frames instead of decoding audio."""

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from datasets import Array2D, Audio, Dataset, DatasetDict, Value
from transformers.utils import FEATURE_EXTRACTOR_NAME as FEATURE_EXTRACTOR_FILE

from ..feature_extraction_musicoder import CMVN_STD_FLOOR, MusiCoderFeatureExtractor, to_mono_waveform
from ..utils import command_line_parser, parse_command_line, single_threaded
from ..versions import check_torchcodec


logger = logging.getLogger(__name__)


def waveform_of(audio) -> np.ndarray:
    """Mono float32 samples of a decoded `datasets.Audio` value (a torchcodec decoder or a dict with "array"), read
    as the feature extractor reads arrays (`to_mono_waveform`)."""
    samples = audio["array"] if isinstance(audio, dict) else audio.get_all_samples().data
    return to_mono_waveform(samples)


def featurize_dataset(
    dataset: Dataset | DatasetDict,
    feature_extractor: MusiCoderFeatureExtractor | None = None,
    audio_column: str = "audio",
    keep_audio: bool = False,
    num_proc: int | None = None,
    batch_size: int | None = None,
    desc: str = "Extracting MusiCoder features",
    backend: str | None = None,
    device: str | None = None,
) -> Dataset | DatasetDict:
    """Add `input_features` (frames x 324, float32, CMVN-normalised, unpadded) and `num_frames` columns.

    The audio column is decoded at the extractor's sampling rate, mono (datasets resamples and downmixes), so any
    audio folder works. `map` caches the result in Arrow; call `save_to_disk` to keep it next to your data.

    Each `map` batch of `batch_size` clips (default: 64 with the torch backend on CUDA, 8 otherwise) is one call of
    the extractor, so the torch backend featurises it as padded batches. `backend` ("torch", the default, or
    "librosa") and `device` (torch backend: "cpu" or "cuda") configure the default extractor; to change those of a
    given `feature_extractor`, configure it instead. With `num_proc` > 1 each worker process uses one torch thread
    and one BLAS thread (the workers already share the cores, see `single_threaded`); CUDA extraction runs in one
    process (`num_proc` None or 1).
    """
    if feature_extractor is None:
        feature_extractor = MusiCoderFeatureExtractor(backend=backend or "torch", device=device or "cpu")
    elif (backend is not None and backend != feature_extractor.backend) or (
        device is not None and device != feature_extractor.device
    ):
        raise ValueError(
            f"backend={backend!r} and device={device!r} configure the default feature extractor, but a feature "
            f"extractor with backend={feature_extractor.backend!r} and device={feature_extractor.device!r} was "
            "given: configure that one instead."
        )
    on_cuda = feature_extractor.backend == "torch" and torch.device(feature_extractor.device).type == "cuda"
    if on_cuda and num_proc is not None and num_proc > 1:
        raise ValueError(
            f"num_proc={num_proc} with CUDA feature extraction: forked workers cannot use CUDA, and one process keeps "
            "the GPU busy with padded batches. Use num_proc=None (and a larger batch_size)."
        )
    batch_size = batch_size or (64 if on_cuda else 8)
    check_torchcodec()  # datasets decodes with it: a clear error now rather than a traceback from a worker
    dataset = dataset.cast_column(audio_column, Audio(sampling_rate=feature_extractor.sampling_rate, num_channels=1))

    def extract(batch):
        waveforms = [waveform_of(audio) for audio in batch[audio_column]]
        with single_threaded() if num_proc is not None and num_proc > 1 else contextlib.nullcontext():
            frames = feature_extractor(waveforms, sampling_rate=feature_extractor.sampling_rate, padding=False)[
                "input_features"
            ]
        return {"input_features": frames, "num_frames": [len(f) for f in frames]}

    features = (next(iter(dataset.values())) if isinstance(dataset, DatasetDict) else dataset).features.copy()
    features["input_features"] = Array2D(shape=(None, feature_extractor.feature_size), dtype="float32")
    features["num_frames"] = Value("int32")
    if not keep_audio:
        del features[audio_column]
    return dataset.map(
        extract,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=[] if keep_audio else [audio_column],
        features=features,
        desc=desc,
    )


def feature_statistics(dataset: Dataset | DatasetDict, column: str = "input_features", batch_size: int = 64) -> dict:
    """Per-channel mean and standard deviation of all frames of a featurised dataset, for `normalization="dataset"`.

    `dataset` is a `Dataset` (or a `DatasetDict`, whose "train" split is used) with a `column` of un-normalised frames
    `(num_frames, feature_size)` per clip, e.g. from `featurize_dataset(..., feature_extractor=
    MusiCoderFeatureExtractor(do_normalize=False))`. Every frame of every clip counts once (longer clips weigh more).
    One streaming pass over batches of `batch_size` clips: float64 per-batch means and sums of squared deviations,
    merged with Chan et al.'s parallel update, so neither memory nor round-off grows with the dataset.

    Returns:
        `dict` with `feature_mean` and `feature_std` (lists of `feature_size` floats; the population standard
        deviation), `num_frames` and `num_clips`. Pass the first two to `MusiCoderFeatureExtractor(
        normalization="dataset", feature_mean=..., feature_std=...)`; a channel constant over the whole dataset has
        std 0, which the extractor refuses (raise it to a small floor).

    Raises:
        `ValueError`: for a `DatasetDict` without a "train" split, a missing column, no frames at all, frames of
        different channel counts, or NaN / infinite frames.
    """
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise ValueError(
                f"feature_statistics takes a Dataset or a DatasetDict with a 'train' split, got splits "
                f"{list(dataset)}: pass the split to compute the statistics on, e.g. dataset['<split>']."
            )
        dataset = dataset["train"]
    if column not in dataset.column_names:
        raise ValueError(
            f"The dataset has no column {column!r} (columns: {dataset.column_names}). Featurise it first with "
            "`featurize_dataset(dataset, feature_extractor=MusiCoderFeatureExtractor(do_normalize=False))`."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")

    count, mean, m2, num_clips, num_channels = 0, None, None, 0, None
    for batch in dataset.select_columns([column]).with_format("numpy").iter(batch_size):
        clips = batch[column]
        num_clips += len(clips)
        shaped = []
        for clip in clips:
            if isinstance(clip, np.ndarray) and clip.dtype == object:  # frames as an array of rows
                clip = np.stack(list(clip)) if len(clip) else np.zeros((0, 0))
            clip = np.asarray(clip)
            if clip.size == 0:
                continue
            if clip.ndim != 2 or (num_channels is not None and clip.shape[1] != num_channels):
                raise ValueError(
                    f"Column {column!r} must hold frames of shape (num_frames, feature_size) with the same "
                    f"feature_size in every clip; got a clip of shape {clip.shape}."
                )
            num_channels = clip.shape[1]
            shaped.append(clip)
        if not shaped:
            continue
        frames = np.concatenate(shaped, axis=0).astype(np.float64)
        if not np.isfinite(frames).all():
            raise ValueError(
                f"Column {column!r} contains NaN or infinite frames; clean or drop those clips before computing "
                "statistics."
            )
        batch_count = frames.shape[0]
        batch_mean = frames.mean(axis=0)
        batch_m2 = np.square(frames - batch_mean).sum(axis=0)
        if count == 0:
            count, mean, m2 = batch_count, batch_mean, batch_m2
        else:  # Chan, Golub & LeVeque: merge (count, mean, M2) of two disjoint sets
            total = count + batch_count
            delta = batch_mean - mean
            mean = mean + delta * (batch_count / total)
            m2 = m2 + batch_m2 + np.square(delta) * (count * batch_count / total)
            count = total
    if count == 0:
        raise ValueError(
            f"Cannot compute feature statistics: the dataset has no frames in column {column!r} "
            f"({num_clips} clips). Pass a non-empty featurised dataset."
        )
    return {
        "feature_mean": mean.tolist(),
        "feature_std": np.sqrt(m2 / count).tolist(),
        "num_frames": int(count),
        "num_clips": int(num_clips),
    }


def dataset_normalization_extractor(statistics: dict, **kwargs) -> MusiCoderFeatureExtractor:
    """A `normalization="dataset"` extractor from the output of [`feature_statistics`] (other settings: `kwargs`). A
    channel that is constant over the whole dataset (e.g. silence in one band) is divided by the CMVN floor, not 0."""
    return MusiCoderFeatureExtractor(
        normalization="dataset", feature_mean=statistics["feature_mean"],
        feature_std=[max(std, CMVN_STD_FLOOR) for std in statistics["feature_std"]], **kwargs,
    )


def normalize_frames(dataset: Dataset | DatasetDict, feature_extractor: MusiCoderFeatureExtractor,
                     column: str = "input_features", keep_in_memory: bool = False) -> Dataset | DatasetDict:
    """Un-normalised frames (featurised with `do_normalize=False`) normalised as `feature_extractor` normalises
    (`MusiCoderFeatureExtractor.normalize`: per-clip CMVN, or dataset statistics): the frames that featurising with
    `feature_extractor` gives, without decoding the audio again. Other columns are kept."""
    features = (next(iter(dataset.values())) if isinstance(dataset, DatasetDict) else dataset).features.copy()

    def normalize(batch):
        return {column: feature_extractor.normalize([np.asarray(f, dtype=np.float32) for f in batch[column]])}

    return dataset.with_format("numpy", columns=[column], output_all_columns=True).map(
        normalize, batched=True, batch_size=32, features=features, keep_in_memory=keep_in_memory,
        desc=f"{feature_extractor.normalization} normalisation",
    ).with_format(None)


# Manifest entries that change on every run of the builders (timings), whatever the data.
VOLATILE_MANIFEST_KEYS = ("build", "build_wall_seconds", "build_cpu_seconds")


def featurize_once(source_dir, target_dir, loader, feature_extractor: MusiCoderFeatureExtractor | None = None,
                   num_proc: int | None = 2) -> DatasetDict:
    """Featurise an audio folder into Arrow once; later calls reuse it while the source's manifest is unchanged.

    `loader(source_dir)` returns the audio `DatasetDict` (e.g. `load_labeled_dataset`). A non-default
    `feature_extractor` (e.g. `do_normalize=False` for un-normalised frames) is part of the stamp, so a folder
    featurised with other settings is redone rather than silently reused.
    """
    from pathlib import Path

    from datasets import load_from_disk

    source_dir, target_dir = Path(source_dir), Path(target_dir)
    # The builders rewrite their build timings on every (resumed) run: leave them out, or nothing would be reused.
    manifest = json.loads((source_dir / "manifest.json").read_text())
    for key in VOLATILE_MANIFEST_KEYS:
        manifest.pop(key, None)
    source_manifest = json.dumps(manifest, indent=1, sort_keys=True)
    if feature_extractor is not None:
        source_manifest += "\n" + feature_extractor.to_json_string()
    stamp = target_dir / "source_manifest.json"
    if not (stamp.exists() and stamp.read_text() == source_manifest):
        feature_extractor = feature_extractor or MusiCoderFeatureExtractor()
        save_featurised(featurize_dataset(loader(source_dir), feature_extractor=feature_extractor, num_proc=num_proc),
                        target_dir, feature_extractor)
        stamp.write_text(source_manifest)
    elif not (target_dir / FEATURE_EXTRACTOR_FILE).exists():  # featurised before the extractor was recorded
        (feature_extractor or MusiCoderFeatureExtractor()).save_pretrained(target_dir)
    return load_from_disk(target_dir)


def save_featurised(dataset: Dataset | DatasetDict, target_dir, feature_extractor: MusiCoderFeatureExtractor) -> None:
    """`dataset.save_to_disk(target_dir)`, with the feature extractor that produced its frames saved beside them
    (`preprocessor_config.json`): a model trained on the folder then ships that very extractor (see
    `feature_extractor_of`)."""
    dataset.save_to_disk(target_dir)
    feature_extractor.save_pretrained(target_dir)


def feature_extractor_of(data_dir) -> MusiCoderFeatureExtractor:
    """The feature extractor that produced the frames of a featurised folder (`save_featurised`). A folder saved
    without one is taken to hold default features, with a warning."""
    from pathlib import Path

    if (Path(data_dir) / FEATURE_EXTRACTOR_FILE).exists():
        return MusiCoderFeatureExtractor.from_pretrained(data_dir)
    logger.warning(
        f"{data_dir} has no {FEATURE_EXTRACTOR_FILE}: its frames are taken to come from the default "
        "MusiCoderFeatureExtractor(), which the trained model will ship. Featurise with `save_featurised` or "
        "`musicoder-data featurize` to record the extractor."
    )
    return MusiCoderFeatureExtractor()


@dataclass
class FeaturizeArguments:
    input_dir: str = field(metadata={"help": "audiofolder dataset (e.g. data/corpus)"})
    output_dir: str = field(metadata={"help": "where to save_to_disk the featurised DatasetDict"})
    num_proc: int | None = field(default=None, metadata={"help": "processes for Dataset.map"})
    backend: Literal["librosa", "torch"] = field(
        default="torch", metadata={"help": "feature backend: the batched torch implementation or the librosa reference"}
    )
    device: str = field(default="cpu", metadata={"help": 'torch backend: "cpu" or "cuda"'})
    batch_size: int | None = field(default=None, metadata={"help": "clips per extractor call (map batch)"})


def main(argv=None) -> int:
    """`musicoder-data featurize`: an audio folder (Hugging Face audiofolder layout) into a saved Arrow dataset, with
    the feature extractor beside it (`save_featurised`)."""
    from datasets import load_dataset

    parser = command_line_parser(
        FeaturizeArguments,
        prog="musicoder-data featurize",
        description="Featurise an audio folder (Hugging Face audiofolder layout) into a saved Arrow dataset.",
    )
    args = parse_command_line(parser, argv)
    dataset = load_dataset("audiofolder", data_dir=args.input_dir)
    feature_extractor = MusiCoderFeatureExtractor(backend=args.backend, device=args.device)
    save_featurised(
        featurize_dataset(dataset, feature_extractor=feature_extractor, num_proc=args.num_proc,
                          batch_size=args.batch_size),
        args.output_dir, feature_extractor,
    )
    print(f"saved features to {args.output_dir}")
    return 0


@dataclass
class StatisticsArguments:
    input_dir: str = field(metadata={"help": "audio folder (Hugging Face audiofolder layout, e.g. data/corpus)"})
    output_dir: str = field(metadata={"help": "where the feature extractor (preprocessor_config.json) is saved"})
    split: str = field(default="train", metadata={"help": "the split whose frames give the statistics"})
    num_proc: int | None = field(default=None, metadata={"help": "processes for the feature extraction"})
    backend: Literal["librosa", "torch"] = field(default="torch", metadata={"help": "feature backend"})


def statistics_main(argv=None) -> int:
    """`musicoder-data feature-stats`: the per-channel mean and standard deviation of an audio folder's frames, saved
    as a `MusiCoderFeatureExtractor(normalization="dataset")` (its `preprocessor_config.json`)."""
    from datasets import load_dataset

    parser = command_line_parser(
        StatisticsArguments,
        prog="musicoder-data feature-stats",
        description="Compute the per-channel statistics of an audio folder's frames in one pass and save a feature "
        "extractor with normalization='dataset' (preprocessor_config.json) into output_dir.",
    )
    args = parse_command_line(parser, argv)
    dataset = load_dataset("audiofolder", data_dir=args.input_dir)
    if args.split not in dataset:
        raise SystemExit(f"feature-stats: error: no split {args.split!r} in {args.input_dir}; it has {list(dataset)}.")
    raw = MusiCoderFeatureExtractor(do_normalize=False, backend=args.backend)
    frames = featurize_dataset(dataset[args.split], feature_extractor=raw, num_proc=args.num_proc)
    statistics = feature_statistics(frames)
    feature_extractor = dataset_normalization_extractor(statistics, backend=args.backend)
    feature_extractor.save_pretrained(args.output_dir)
    print(f"saved a normalization='dataset' feature extractor to {args.output_dir} ({statistics['num_frames']} frames "
          f"of {statistics['num_clips']} clips)")
    return 0
