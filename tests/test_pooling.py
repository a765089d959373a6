"""Statistics pooling (mean and standard deviation over valid frames): the classifier's `classifier_pooling`, the
embedder's `pooling="mean_std"` and `pooled_hidden_states`, all invariant to padding."""

import numpy as np
import pytest
import torch
from test_hub_integration import SAMPLING_RATE, music_like_clip

from musicoder_hf import (
    MusiCoderConfig,
    MusiCoderEmbedder,
    MusiCoderFeatureExtractor,
    MusiCoderForSequenceClassification,
    MusiCoderModel,
)
from musicoder_hf.embeddings import pooled_hidden_states
from musicoder_hf.modeling_musicoder import masked_pool


def tiny_config(**overrides):
    values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return MusiCoderConfig(**{**values, **overrides})


def test_masked_pool_is_mean_and_population_std_of_the_valid_frames():
    hidden = torch.randn(2, 9, 5, dtype=torch.float64)
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    hidden[1, 4:] = 1e6  # padding must not leak in
    pooled = masked_pool(hidden, mask, "mean_std")
    assert pooled.shape == (2, 10)
    for row, length in enumerate((9, 4)):
        valid = hidden[row, :length]
        torch.testing.assert_close(pooled[row, :5], valid.mean(0))
        torch.testing.assert_close(pooled[row, 5:], valid.std(0, unbiased=False))
    torch.testing.assert_close(masked_pool(hidden, mask, "mean"), pooled[:, :5])
    # A constant clip has a finite gradient through the standard deviation.
    constant = torch.ones(1, 6, 5, requires_grad=True)
    masked_pool(constant, None, "mean_std").sum().backward()
    assert torch.isfinite(constant.grad).all()
    with pytest.raises(ValueError, match="'mean' or 'mean_std'"):
        masked_pool(hidden, mask, "max")


def test_classifier_with_statistics_pooling_ignores_padding_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = MusiCoderForSequenceClassification(tiny_config(classifier_pooling="mean_std", num_labels=3)).eval()
    assert model.classifier.in_features == 64
    clip = torch.randn(1, 40, 324)
    padded = torch.cat([clip, torch.zeros(1, 25, 324)], dim=1)
    mask = torch.cat([torch.ones(1, 40), torch.zeros(1, 25)], dim=1).long()
    with torch.no_grad():
        alone = model(clip).logits
        in_padding = model(padded, attention_mask=mask).logits
        hidden = model.musicoder(clip).last_hidden_state[0]
    torch.testing.assert_close(in_padding, alone, atol=1e-5, rtol=1e-5)
    by_hand = model.classifier(torch.cat([hidden.mean(0), hidden.std(0, unbiased=False)]))
    torch.testing.assert_close(alone[0], by_hand, atol=1e-5, rtol=1e-5)

    model.save_pretrained(tmp_path)
    reloaded = MusiCoderForSequenceClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.classifier_pooling == "mean_std"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(clip).logits, alone)


def test_unknown_classifier_pooling_is_refused():
    with pytest.raises(Exception, match="classifier_pooling must be one of"):
        tiny_config(classifier_pooling="max")


@pytest.fixture(scope="module")
def embedder():
    torch.manual_seed(0)
    return MusiCoderEmbedder(MusiCoderModel(tiny_config()).eval(), MusiCoderFeatureExtractor())


def test_embedder_statistics_pooling_of_one_window_is_exact(embedder):
    clip = music_like_clip(seconds=4.0)
    per_step = embedder(clip, pooling=None).embeddings  # (layers, frames, hidden)
    stats = embedder(clip, pooling="mean_std").embeddings
    assert stats.shape == (3, 64)
    torch.testing.assert_close(stats[:, :32], per_step.mean(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats[:, 32:], per_step.std(1, unbiased=False), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats[:, :32], embedder(clip).embeddings, atol=1e-6, rtol=1e-6)


def with_window(encoder, window):
    """The same encoder weights with a shorter window (the sinusoid positions are the same, only fewer)."""
    shorter = MusiCoderModel(MusiCoderConfig(**(encoder.config.to_dict() | {"max_position_embeddings": window})))
    shorter.load_state_dict(encoder.state_dict())
    return shorter.eval()


def test_embedder_statistics_pooling_over_windows(embedder):
    """A clip of 4 windows: the statistics are those of every time step of the clip, exactly (not a mean of the
    windows' statistics)."""
    clip = np.concatenate([music_like_clip(seconds=7.0, seed=seed) for seed in range(3)])[: 799 * 1024 + 100]
    windowed = MusiCoderEmbedder(with_window(embedder.encoder, 200), embedder.feature_extractor, batch_size=3)
    per_step = windowed(clip, pooling=None).embeddings
    assert per_step.shape[1] == 800
    stats = windowed(clip, pooling="mean_std").embeddings
    torch.testing.assert_close(stats[:, :32], per_step.mean(1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stats[:, 32:], per_step.std(1, unbiased=False), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stats[:, :32], windowed(clip).embeddings, atol=1e-6, rtol=1e-6)


def test_pooled_hidden_states_of_featurised_clips(embedder):
    extractor = embedder.feature_extractor
    clips = [extractor(music_like_clip(seconds=s, seed=i), sampling_rate=SAMPLING_RATE)["input_features"][0]
             for i, s in enumerate((2.0, 3.0))]
    pooled = pooled_hidden_states(embedder.encoder, clips, pooling="mean_std", batch_size=2)
    assert pooled.shape == (2, 3, 64)
    for clip, row in zip(clips, pooled):
        with torch.no_grad():
            hidden = embedder.encoder(torch.as_tensor(clip)[None], output_hidden_states=True).hidden_states
        for layer, states in enumerate(hidden):
            expected = masked_pool(states, None, "mean_std")[0].numpy()
            np.testing.assert_allclose(row[layer], expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pooled_hidden_states(embedder.encoder, clips, pooling=None)


def test_pooled_hidden_states_with_layer_weights_is_the_classifiers_pooled_input(embedder):
    """With `layer_weights`, the layers are mixed frame by frame before pooling: exactly what a classifier with
    `use_weighted_layer_sum` feeds its linear layer (the probe of `training/finetune.py` relies on it)."""
    extractor = embedder.feature_extractor
    clips = [extractor(music_like_clip(seconds=s, seed=i), sampling_rate=SAMPLING_RATE)["input_features"][0]
             for i, s in enumerate((2.0, 3.0))]
    # A window of 64 frames: the 2 s and 3 s clips (87 and 130 frames) are read in windows.
    config = embedder.encoder.config.to_dict() | {"use_weighted_layer_sum": True, "num_labels": 2,
                                                "classifier_pooling": "mean_std", "max_position_embeddings": 64}
    classifier = MusiCoderForSequenceClassification(MusiCoderConfig(**config)).eval()
    classifier.musicoder.load_state_dict(embedder.encoder.state_dict())
    with torch.no_grad():
        classifier.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))  # far from uniform
    captured = []
    classifier.classifier.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    weights = torch.softmax(classifier.layer_weights.detach(), dim=-1)
    pooled = pooled_hidden_states(classifier.base_model, clips, pooling="mean_std", layer_weights=weights)
    assert pooled.shape == (2, 1, 64)
    for clip, row in zip(clips, pooled):
        with torch.no_grad():
            classifier(torch.as_tensor(clip)[None])
        np.testing.assert_allclose(row[0], captured[-1][0].numpy(), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="one weight per hidden state"):
        pooled_hidden_states(classifier.base_model, clips, layer_weights=torch.ones(2) / 2)


def test_embedder_hear_and_pipeline_default_to_the_checkpoints_pooling(tmp_path):
    """pooling="auto" (the default) is `config.classifier_pooling`: a checkpoint trained with statistics pooling is
    embedded with it unless the caller asks otherwise."""
    from transformers import pipeline

    from musicoder_hf import MusiCoderFeatureExtractionPipeline, hear

    torch.manual_seed(0)
    folder = tmp_path / "mean_std_checkpoint"
    MusiCoderModel(tiny_config(classifier_pooling="mean_std")).save_pretrained(folder)
    MusiCoderFeatureExtractor().save_pretrained(folder)
    clip = music_like_clip(seconds=2.0, seed=4)
    embedder = MusiCoderEmbedder.from_pretrained(folder)
    default = embedder(clip, sampling_rate=SAMPLING_RATE).embeddings
    torch.testing.assert_close(default, embedder(clip, sampling_rate=SAMPLING_RATE, pooling="mean_std").embeddings)
    assert default.shape == (3, 64)
    assert embedder(clip, sampling_rate=SAMPLING_RATE, pooling="mean").embeddings.shape == (3, 32)
    with pytest.raises(ValueError, match="auto"):
        embedder(clip, sampling_rate=SAMPLING_RATE, pooling="max")
    model = hear.load_model(str(folder))
    assert (model.scene_embedding_size, model.timestamp_embedding_size) == (2 * 64, 64)
    scene = hear.get_scene_embeddings(torch.from_numpy(clip)[None], model)
    torch.testing.assert_close(scene[0], default[1:].flatten())
    extractor = pipeline("feature-extraction", model=str(folder), pipeline_class=MusiCoderFeatureExtractionPipeline)
    np.testing.assert_allclose(np.asarray(extractor(clip)), default.numpy(), atol=1e-6)
