"""Featurise an audio dataset once into Arrow, so training reads 324-dim frames instead of decoding audio."""

import numpy as np
from datasets import Array2D, Audio, Dataset, DatasetDict, Value

from ..feature_extraction_musicoder import MusiCoderFeatureExtractor


def waveform_of(audio) -> np.ndarray:
    """Mono float32 samples of a decoded `datasets.Audio` value (a torchcodec decoder or a dict with "array")."""
    if isinstance(audio, dict):
        samples = np.asarray(audio["array"], dtype=np.float32)
    else:
        samples = audio.get_all_samples().data.numpy()
    return samples.mean(axis=0) if samples.ndim == 2 else samples


def featurize_dataset(
    dataset: Dataset | DatasetDict,
    feature_extractor: MusiCoderFeatureExtractor | None = None,
    audio_column: str = "audio",
    keep_audio: bool = False,
    num_proc: int | None = None,
    batch_size: int = 8,
    desc: str = "Extracting MusiCoder features",
) -> Dataset | DatasetDict:
    """Add `input_features` (frames x 324, float32, CMVN-normalised, unpadded) and `num_frames` columns.

    The audio column is decoded at the extractor's sampling rate, mono (datasets resamples and downmixes), so any
    audio folder works. `map` caches the result in Arrow; call `save_to_disk` to keep it next to your data.
    """
    feature_extractor = feature_extractor or MusiCoderFeatureExtractor()
    dataset = dataset.cast_column(audio_column, Audio(sampling_rate=feature_extractor.sampling_rate, num_channels=1))

    def extract(batch):
        waveforms = [waveform_of(audio) for audio in batch[audio_column]]
        frames = [
            feature_extractor(waveform, sampling_rate=feature_extractor.sampling_rate, padding=False)[
                "input_features"
            ][0]
            for waveform in waveforms
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


def main(argv=None) -> int:
    import argparse

    from datasets import load_dataset

    parser = argparse.ArgumentParser(
        prog="musicoder-data featurize",
        description="Featurise an audio folder (Hugging Face audiofolder layout) into a saved Arrow dataset.",
    )
    parser.add_argument("--input_dir", required=True, help="audiofolder dataset (e.g. data/corpus)")
    parser.add_argument("--output_dir", required=True, help="where to save_to_disk the featurised DatasetDict")
    parser.add_argument("--num_proc", type=int, default=None)
    args = parser.parse_args(argv)
    dataset = load_dataset("audiofolder", data_dir=args.input_dir)
    featurize_dataset(dataset, num_proc=args.num_proc).save_to_disk(args.output_dir)
    print(f"saved features to {args.output_dir}")
    return 0
