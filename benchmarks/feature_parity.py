"""Parity of the torch feature backend with the librosa reference on real music, block by block, and for a classifier.

    python benchmarks/feature_parity.py                                  # the folk task and the corpus, if built
    python benchmarks/feature_parity.py --audio_dir data/tasks/folk --librosa_features data/folk_features

For each audio folder (Hugging Face audiofolder layout), the clips are featurised with the torch backend (the bulk
path: `featurize_dataset(..., backend="torch")`) and compared with the librosa reference's features of the same clips,
read from `--librosa_features` (a saved `featurize_dataset` output, e.g. the demo's) or computed here. Both are
CMVN-normalised, as a model sees them. Per block: the largest absolute difference, the mean one, the 99.99th
percentile, and Pearson's correlation over all values.

Classifier parity (folders with a `label` column): a logistic regression on per-clip statistics of the librosa
features (10th/50th/90th percentile and mean absolute frame-to-frame change of every channel: after per-clip CMVN the
mean and standard deviation carry nothing), trained by cross-validation over the folder's `fold` column (else on
train, tested on validation + test); each held-out clip is classified from its librosa and from its torch features.
"""

import argparse
import os
import time

import datasets
import numpy as np
from datasets import concatenate_datasets, load_dataset, load_from_disk

from musicoder_hf import MusiCoderFeatureExtractor
from musicoder_hf.data.features import featurize_dataset


DEFAULT_PAIRS = [
    ("data/tasks/folk", "data/folk_features"),
    ("data/corpus", "data/corpus_features"),
    ("/tmp/demo_data/tasks/folk", "/tmp/demo_data/folk_features"),
    ("/tmp/demo_data/corpus", "/tmp/demo_data/corpus_features"),
]


def featurised_pair(audio_dir: str, librosa_features: str | None):
    """(librosa, torch) feature datasets of every clip of `audio_dir`, as one Dataset each, rows aligned."""
    audio = load_dataset("audiofolder", data_dir=audio_dir)
    start = time.perf_counter()
    torch_features = featurize_dataset(audio, backend="torch", desc="torch features")
    num_clips = sum(len(split) for split in audio.values())
    print(f"  torch features of {num_clips} clips (decoding included): {time.perf_counter() - start:.1f} s")
    if librosa_features and os.path.isdir(librosa_features):
        reference = load_from_disk(librosa_features)
    else:
        reference = featurize_dataset(audio, backend="librosa", desc="librosa features")
    splits = [split for split in audio if split in reference]
    reference = concatenate_datasets([reference[split] for split in splits])
    torch_features = concatenate_datasets([torch_features[split] for split in splits])
    # Same folder, same order: check it on every metadata column the two share, and on the frame counts.
    shared = [
        column
        for column, feature in reference.features.items()
        if column != "input_features" and torch_features.features.get(column) == feature
    ]
    for column in shared:
        if reference[column] != torch_features[column]:
            raise ValueError(f"{librosa_features} does not hold the clips of {audio_dir} in order (column {column}).")
    return reference.with_format("numpy"), torch_features.with_format("numpy")


def block_parity(reference, candidate, layout) -> None:
    print(f"  {'block':<11} {'max |err|':>10} {'99.99% |err|':>13} {'mean |err|':>11} {'Pearson r':>11}")
    for name, (start, stop) in layout.items():
        ref = np.concatenate([x[:, start:stop].ravel() for x in reference["input_features"]])
        got = np.concatenate([x[:, start:stop].ravel() for x in candidate["input_features"]])
        error = np.abs(ref.astype(np.float64) - got)
        print(f"  {name:<11} {error.max():10.2e} {np.quantile(error, 0.9999):13.2e} {error.mean():11.2e} "
              f"{np.corrcoef(ref, got)[0, 1]:11.7f}")


def clip_statistics(features: np.ndarray) -> np.ndarray:
    percentiles = np.percentile(features, [10, 50, 90], axis=0)
    change = np.abs(np.diff(features, axis=0)).mean(axis=0)
    return np.concatenate([percentiles.ravel(), change])


def classifier_parity(reference, candidate) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(reference["label"])
    x_ref = np.stack([clip_statistics(x) for x in reference["input_features"]])
    x_torch = np.stack([clip_statistics(x) for x in candidate["input_features"]])
    if "fold" in reference.column_names:
        folds = np.asarray(reference["fold"])
        held_out = [folds == fold for fold in np.unique(folds)]
        protocol = f"{len(held_out)}-fold cross-validation"
    else:
        raise ValueError("classifier parity needs a `fold` column")
    predictions = {"librosa": np.empty_like(labels), "torch": np.empty_like(labels)}
    for test in held_out:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        model.fit(x_ref[~test], labels[~test])  # trained on librosa features only
        predictions["librosa"][test] = model.predict(x_ref[test])
        predictions["torch"][test] = model.predict(x_torch[test])
    print(f"  logistic regression trained on librosa features, {protocol}, {len(labels)} clips:")
    for name, predicted in predictions.items():
        print(f"    tested on {name:<8} features: accuracy {np.mean(predicted == labels):.3f}")
    agreement = np.mean(predictions["librosa"] == predictions["torch"])
    print(f"    same prediction from both: {agreement:.3f} of the clips")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio_dir", action="append", help="audiofolder dataset (repeatable)")
    parser.add_argument("--librosa_features", action="append", help="its saved librosa features (same order)")
    args = parser.parse_args()
    datasets.disable_caching()  # measure this code, not features cached by an earlier version of it
    if args.audio_dir:
        pairs = list(zip(args.audio_dir, (args.librosa_features or []) + [None] * len(args.audio_dir)))
    else:
        pairs = [(audio, features) for audio, features in DEFAULT_PAIRS if os.path.isdir(audio)]
    layout = MusiCoderFeatureExtractor().feature_layout
    for audio_dir, librosa_features in pairs:
        print(f"{audio_dir} (librosa reference: {librosa_features or 'computed here'})")
        reference, candidate = featurised_pair(audio_dir, librosa_features)
        block_parity(reference, candidate, layout)
        if "label" in reference.column_names and "fold" in reference.column_names:
            classifier_parity(reference, candidate)


if __name__ == "__main__":
    main()
