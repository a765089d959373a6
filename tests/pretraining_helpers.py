"""Tiny pre-training runs shared by the pre-training tests: a small config, a synthetic featurised corpus."""

import numpy as np
from datasets import Array2D, Dataset, DatasetDict, Features, Value

from musicoder_hf.pretraining import PretrainingArguments

TINY = "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64"


def structured_clips(count, seed):
    """Smooth, low-rank frames: a masked frame is predictable from its neighbours, so the loss can really fall."""
    basis = np.random.default_rng(1234).standard_normal((4, 324)).astype(np.float32)  # shared by all splits
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        frames = int(rng.integers(40, 90))
        t = np.arange(frames)[:, None]
        weights = np.sin(t * rng.uniform(0.05, 0.3, size=4) + rng.uniform(0, 6.3, size=4))
        clips.append((weights @ basis + 0.05 * rng.standard_normal((frames, 324))).astype(np.float32))
    return clips


def save_features_dataset(path, train_clips=48, validation_clips=8):
    """Write a featurised DatasetDict (train/validation, `input_features` + `num_frames`) with `save_to_disk`."""
    features = Features({"input_features": Array2D(shape=(None, 324), dtype="float32"), "num_frames": Value("int32")})
    splits = {}
    for name, count, seed in (("train", train_clips, 0), ("validation", validation_clips, 1)):
        clips = structured_clips(count, seed)
        splits[name] = Dataset.from_dict({"input_features": clips, "num_frames": [len(c) for c in clips]}, features)
    DatasetDict(splits).save_to_disk(path)
    return path


def argument_values(features_dir, output_dir, **overrides):
    """Keyword values of a small, fast CPU run (20 steps of batch 8, a checkpoint every 5)."""
    values = dict(
        data_dir=str(features_dir),
        output_dir=str(output_dir),
        config_overrides=TINY,
        per_device_train_batch_size=8,
        warmup_steps=10,
        lr_scale=0.5,
        log_every=2,
        eval_every=10,
        save_every=5,
        report_to="none",
        cpu=True,
        max_steps=20,
    )
    values.update(overrides)
    return values


def arguments(features_dir, output_dir, **overrides):
    return PretrainingArguments(**argument_values(features_dir, output_dir, **overrides))


def command_line(features_dir, output_dir, **overrides):
    """The same run as `arguments(...)`, as `training/pretrain.py` command-line arguments."""
    argv = []
    for key, value in argument_values(features_dir, output_dir, **overrides).items():
        argv += [f"--{key}", str(value)]  # HfArgumentParser reads booleans as "True"/"False"
    return argv
