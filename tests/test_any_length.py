"""Any length through `forward`: the model reads inputs longer than its window in windows itself, so Trainer, stock
scripts and `model(**feature_extractor(clip))` work on whole tracks, padded batches keep each clip's result, and the
classifier pools over every frame of the clip."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_hub_integration import SAMPLING_RATE, music_like_clip
from test_modeling_musicoder import padded_batch, tiny_config

from musicoder_hf import (
    MusiCoderConfig,
    MusiCoderFeatureExtractor,
    MusiCoderForPreTraining,
    MusiCoderForSequenceClassification,
    MusiCoderModel,
    modeling_musicoder,
)
from musicoder_hf.modeling_musicoder import masked_pool, window_spans

WINDOW = 16


@given(num_frames=st.integers(1, 5000), window=st.integers(1, 400))
def test_window_spans_tile_the_clip_with_the_fewest_equal_windows(num_frames, window):
    spans = window_spans(num_frames, window)
    assert spans[0][0] == 0 and spans[-1][1] == num_frames
    assert all(stop == next_start for (_, stop), (next_start, _) in zip(spans, spans[1:]))
    lengths = [stop - start for start, stop in spans]
    assert len(spans) == -(-num_frames // window)  # the fewest windows that fit
    assert max(lengths) <= window and max(lengths) - min(lengths) <= 1


def test_window_spans_of_a_30_second_clip_in_the_shipped_window():
    assert window_spans(1292, 300) == [(0, 259), (259, 518), (518, 776), (776, 1034), (1034, 1292)]
    assert window_spans(300, 300) == [(0, 300)]
    assert window_spans(301, 300) == [(0, 151), (151, 301)]


def windows_by_hand(encoder, features):
    """Each window of `features` (1, frames, 324) through the encoder alone, concatenated: what forward must do."""
    outputs = [encoder(features[:, start:stop], output_hidden_states=True).hidden_states
               for start, stop in window_spans(features.shape[1], encoder.config.max_position_embeddings)]
    return [torch.cat(per_layer, dim=1) for per_layer in zip(*outputs)]


@torch.no_grad()
def test_long_input_is_read_window_by_window_with_positions_from_zero():
    encoder = MusiCoderModel(tiny_config(max_position_embeddings=WINDOW)).eval()
    features = torch.randn(1, 3 * WINDOW + 5, 324)  # 53 frames: windows of 14, 13, 13, 13
    output = encoder(features, output_hidden_states=True)
    assert output.last_hidden_state.shape == (1, 53, 32)
    assert len(output.hidden_states) == 3
    for got, expected in zip(output.hidden_states, windows_by_hand(encoder, features)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.hidden_states[-1], output.last_hidden_state)
    # Windows are encoded apart: frames at the start of window 2 do not see window 1.
    changed = features.clone()
    changed[:, :14] += 1.0
    after = encoder(changed).last_hidden_state
    assert not torch.allclose(after[:, :14], output.last_hidden_state[:, :14])
    torch.testing.assert_close(after[:, 14:], output.last_hidden_state[:, 14:])


@torch.no_grad()
@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
def test_padded_batch_gives_each_clip_its_unpadded_result(pooling):
    torch.manual_seed(0)
    model = MusiCoderForSequenceClassification(
        tiny_config(max_position_embeddings=WINDOW, num_labels=3, classifier_pooling=pooling)).eval()
    lengths = [50, 9, 33, WINDOW]  # 4 windows, one window shorter than the window, 3 windows, exactly one window
    features, attention_mask = padded_batch(lengths)
    batched = model(features, attention_mask, output_hidden_states=True)
    for row, length in enumerate(lengths):
        alone = model(features[row : row + 1, :length], output_hidden_states=True)
        torch.testing.assert_close(batched.logits[row], alone.logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.hidden_states[-1][row, :length], alone.hidden_states[-1][0],
                                   atol=1e-5, rtol=1e-5)
        assert torch.all(batched.hidden_states[-1][row, length:] == 0)  # padding frames are zeros
    # Left padding, or any other mask: the windows are planned on the valid frames wherever they are.
    shifted = torch.zeros(1, 50, 324)
    shifted[0, 17:] = features[2, :33]
    mask = torch.zeros(1, 50, dtype=torch.long)
    mask[0, 17:] = 1
    torch.testing.assert_close(model(shifted, mask).logits[0], batched.logits[2], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_classifier_pools_over_every_frame_of_the_clip_not_over_window_means():
    torch.manual_seed(0)
    model = MusiCoderForSequenceClassification(
        tiny_config(max_position_embeddings=WINDOW, num_labels=3, classifier_pooling="mean_std")).eval()
    features = torch.randn(1, 45, 324)
    features[:, 30:] *= 3.0  # the last window differs, so a mean of window statistics would be off
    last = windows_by_hand(model.musicoder, features)[-1]
    expected = model.classifier(masked_pool(last, None, "mean_std"))
    torch.testing.assert_close(model(features).logits, expected, atol=1e-5, rtol=1e-5)
    window_means = torch.stack([model(features[:, a:b]).logits for a, b in window_spans(45, WINDOW)]).mean(0)
    assert not torch.allclose(window_means, expected, atol=1e-3)


@torch.no_grad()
def test_windows_go_through_the_encoder_in_bounded_groups(monkeypatch):
    encoder = MusiCoderModel(tiny_config(max_position_embeddings=WINDOW)).eval()
    features = torch.randn(2, 10 * WINDOW, 324)
    expected = encoder(features).last_hidden_state
    passes = []
    encode = MusiCoderModel._encode

    def counting(self, windows, *args, **kwargs):
        passes.append(windows.shape[0] * windows.shape[1])
        return encode(self, windows, *args, **kwargs)

    monkeypatch.setattr(MusiCoderModel, "_encode", counting)
    monkeypatch.setattr(modeling_musicoder, "WINDOWED_FRAMES_PER_PASS", 3 * WINDOW)
    torch.testing.assert_close(encoder(features).last_hidden_state, expected, atol=1e-5, rtol=1e-5)
    assert len(passes) == 7 and max(passes) <= 3 * WINDOW  # 20 windows of 16 frames, 3 at a time


def test_attentions_need_an_input_that_fits_one_window():
    encoder = MusiCoderModel._from_config(tiny_config(max_position_embeddings=WINDOW), attn_implementation="eager")
    assert encoder(torch.randn(1, WINDOW, 324), output_attentions=True).attentions[0].shape == (1, 4, 16, 16)
    with pytest.raises(ValueError, match="output_attentions=True needs an input of at most 16 frames"):
        encoder(torch.randn(1, WINDOW + 1, 324), output_attentions=True)


def test_training_on_inputs_longer_than_the_window_backpropagates_through_every_window():
    torch.manual_seed(0)
    pretraining = MusiCoderForPreTraining(tiny_config(max_position_embeddings=WINDOW))
    features, attention_mask = padded_batch([40, 25])
    output = pretraining(features, attention_mask, labels=features)
    assert output.reconstruction.shape == features.shape and torch.isfinite(output.loss)
    output.loss.backward()
    projection = pretraining.musicoder.embeddings.frame_projection.weight.grad
    assert projection is not None and projection.abs().sum() > 0

    classifier = MusiCoderForSequenceClassification(
        tiny_config(max_position_embeddings=WINDOW, num_labels=2, use_weighted_layer_sum=True))
    classifier(features, attention_mask, labels=torch.tensor([0, 1])).loss.backward()
    assert classifier.layer_weights.grad.abs().sum() > 0
    assert classifier.musicoder.layers[0].attention.q_proj.weight.grad.abs().sum() > 0


def test_freeze_feature_encoder_freezes_the_frame_embedding_only():
    model = MusiCoderForSequenceClassification(tiny_config(max_position_embeddings=WINDOW, num_labels=2))
    model.freeze_feature_encoder()
    features, attention_mask = padded_batch([40, 25])
    model(features, attention_mask, labels=torch.tensor([0, 1])).loss.backward()
    assert all(p.grad is None for p in model.musicoder.embeddings.parameters())
    assert model.musicoder.layers[0].feed_forward.fc1.weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0


# transformers' audio-classification example (examples/pytorch/audio-classification/run_audio_classification.py), its
# data path and Trainer set-up as it writes them, in a process that cannot import musicoder_hf: the checkpoint's own
# code (trust_remote_code) is all it has. Training crops are 2x the window, evaluation clips 3x.
STOCK_EXAMPLE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["musicoder_hf"] = None  # as on a machine without our package
    import json
    from random import randint
    import numpy as np, torch
    import datasets
    from datasets import DatasetDict, load_dataset
    from transformers import (AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification, Trainer,
                              TrainingArguments, set_seed)

    checkpoint, data_dir, output_dir = sys.argv[1:4]
    max_length_seconds = 3.0
    set_seed(0)
    raw = DatasetDict({"train": load_dataset(data_dir, split="train"),
                       "eval": load_dataset(data_dir, split="validation")})
    feature_extractor = AutoFeatureExtractor.from_pretrained(checkpoint, return_attention_mask=True,
                                                             trust_remote_code=True)
    raw = raw.cast_column("audio", datasets.features.Audio(sampling_rate=feature_extractor.sampling_rate))

    def random_subsample(wav, max_length, sample_rate):
        sample_length = int(round(sample_rate * max_length))
        if len(wav) <= sample_length:
            return wav
        offset = randint(0, len(wav) - sample_length - 1)
        return wav[offset : offset + sample_length]

    def train_transforms(batch):
        wavs = [random_subsample(a["array"], max_length_seconds, feature_extractor.sampling_rate)
                for a in batch["audio"]]
        inputs = feature_extractor(wavs, sampling_rate=feature_extractor.sampling_rate)
        return {"input_features": inputs.get("input_features"), "labels": list(batch["label"])}

    def val_transforms(batch):
        inputs = feature_extractor([a["array"] for a in batch["audio"]], sampling_rate=feature_extractor.sampling_rate)
        return {"input_features": inputs.get("input_features"), "labels": list(batch["label"])}

    labels = raw["train"].features["label"].names
    label2id = {label: str(i) for i, label in enumerate(labels)}
    id2label = {str(i): label for i, label in enumerate(labels)}

    def compute_metrics(eval_pred):
        predictions = np.argmax(eval_pred.predictions, axis=1)
        return {"accuracy": float((predictions == eval_pred.label_ids).mean())}

    config = AutoConfig.from_pretrained(checkpoint, num_labels=len(labels), label2id=label2id, id2label=id2label,
                                        finetuning_task="audio-classification", trust_remote_code=True)
    model = AutoModelForAudioClassification.from_pretrained(checkpoint, config=config, trust_remote_code=True,
                                                            ignore_mismatched_sizes=False)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    model.freeze_feature_encoder()
    seen_frames = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen_frames.append(
        (module.training, kwargs["input_features"].shape[1])), with_kwargs=True)
    raw["train"].set_transform(train_transforms, output_all_columns=False)
    raw["eval"].set_transform(val_transforms, output_all_columns=False)
    args = TrainingArguments(output_dir=output_dir, num_train_epochs=20, learning_rate=3e-3,
                             per_device_train_batch_size=4, per_device_eval_batch_size=4, report_to=[],
                             save_strategy="no", seed=0, use_cpu=True,
                             remove_unused_columns=False)  # as in every command of the example's README
    trainer = Trainer(model=model, args=args, train_dataset=raw["train"], eval_dataset=raw["eval"],
                      compute_metrics=compute_metrics, processing_class=feature_extractor)
    train_result = trainer.train()
    trainer.save_model()
    metrics = trainer.evaluate()
    print("RESULT", json.dumps({"train_loss": train_result.metrics["train_loss"], "eval": metrics,
                                "train_frames": max(n for training, n in seen_frames if training),
                                "eval_frames": max(n for training, n in seen_frames if not training)}))
    """
)


def write_labeled_folder(root, clips_per_label: dict[str, int], seconds: float) -> None:
    """`root/{train,validation}/<label>/*.wav`: 'tonal' clips are chords, 'noisy' clips are noise bursts."""
    rng = np.random.default_rng(0)
    for split, count in clips_per_label.items():
        for label in ("tonal", "noisy"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                if label == "tonal":
                    clip = music_like_clip(seconds=seconds, seed=index + (100 if split == "validation" else 0))
                else:
                    clip = (0.2 * rng.standard_normal(int(seconds * SAMPLING_RATE))
                            * (np.arange(int(seconds * SAMPLING_RATE)) % 11025 < 5000)).astype(np.float32)
                soundfile.write(folder / f"{label}_{index}.wav", clip, SAMPLING_RATE)


def test_trainer_with_trust_remote_code_trains_and_evaluates_clips_longer_than_the_window(tmp_path):
    import json

    torch.manual_seed(0)
    window = 64  # 1.5 s: training crops of 3 s are 2x the window, evaluation clips of 4.5 s are 3x
    config = MusiCoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                             max_position_embeddings=window, classifier_pooling="mean_std")
    checkpoint = tmp_path / "checkpoint"
    MusiCoderForPreTraining(config).save_pretrained(checkpoint)
    MusiCoderFeatureExtractor().save_pretrained(checkpoint)
    write_labeled_folder(tmp_path / "music", {"train": 8, "validation": 4}, seconds=4.5)

    environment = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                       HF_MODULES_CACHE=str(tmp_path / "modules"), HF_DATASETS_CACHE=str(tmp_path / "datasets"))
    run = subprocess.run(
        [sys.executable, "-c", STOCK_EXAMPLE_SCRIPT, str(checkpoint), str(tmp_path / "music"), str(tmp_path / "out")],
        capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=600, check=False,
    )
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    result = json.loads(run.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert result["train_frames"] == 1 + int(3.0 * SAMPLING_RATE) // 1024 > 2 * window
    assert result["eval_frames"] == 1 + int(4.5 * SAMPLING_RATE) // 1024 > 3 * window
    assert np.isfinite(result["train_loss"]) and np.isfinite(result["eval"]["eval_loss"])
    assert result["eval"]["eval_accuracy"] == 1.0, result  # chords against noise: learnt from 2x-window crops
    assert (tmp_path / "out" / "model.safetensors").exists()
