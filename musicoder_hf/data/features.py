"""Featurise an audio dataset once into Arrow, so training reads 324-dim frames instead of decoding audio."""

import contextlib
import json

import numpy as np
import torch
from datasets import Array2D, Audio, Dataset, DatasetDict, Value

from ..feature_extraction_musicoder import MusiCoderFeatureExtractor, to_mono_waveform
from ..utils import command_line_parser, parse_command_line, single_threaded


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
    the extractor, so the torch backend featurises it as padded batches. `backend` ("librosa", the default, or
    "torch") and `device` (torch backend: "cpu" or "cuda") configure the default extractor; to change those of a
    given `feature_extractor`, configure it instead. With `num_proc` > 1 each worker process uses one torch thread
    and one BLAS thread (the workers already share the cores, see `single_threaded`); CUDA extraction runs in one
    process (`num_proc` None or 1).
    """
    if feature_extractor is None:
        feature_extractor = MusiCoderFeatureExtractor(backend=backend or "librosa", device=device or "cpu")
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
        featurize_dataset(loader(source_dir), feature_extractor=feature_extractor, num_proc=num_proc).save_to_disk(
            target_dir
        )
        stamp.write_text(source_manifest)
    return load_from_disk(target_dir)


def main(argv=None) -> int:
    """`musicoder-data featurize`: an audio folder (Hugging Face audiofolder layout) into a saved Arrow dataset."""
    import dataclasses
    from typing import Literal

    from datasets import load_dataset

    @dataclasses.dataclass
    class FeaturizeArguments:
        input_dir: str = dataclasses.field(metadata={"help": "audiofolder dataset (e.g. data/corpus)"})
        output_dir: str = dataclasses.field(metadata={"help": "where to save_to_disk the featurised DatasetDict"})
        num_proc: int | None = dataclasses.field(default=None, metadata={"help": "processes for Dataset.map"})
        backend: Literal["librosa", "torch"] = dataclasses.field(
            default="librosa",
            metadata={"help": "feature backend: the librosa reference or the batched torch implementation"},
        )
        device: str = dataclasses.field(default="cpu", metadata={"help": 'torch backend: "cpu" or "cuda"'})
        batch_size: int | None = dataclasses.field(
            default=None, metadata={"help": "clips per extractor call (map batch)"}
        )

    parser = command_line_parser(
        FeaturizeArguments,
        prog="musicoder-data featurize",
        description="Featurise an audio folder (Hugging Face audiofolder layout) into a saved Arrow dataset.",
    )
    args = parse_command_line(parser, argv)
    dataset = load_dataset("audiofolder", data_dir=args.input_dir)
    featurize_dataset(
        dataset, num_proc=args.num_proc, batch_size=args.batch_size, backend=args.backend, device=args.device
    ).save_to_disk(args.output_dir)
    print(f"saved features to {args.output_dir}")
    return 0
