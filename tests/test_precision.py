"""bfloat16 inference through the usual switches: `from_pretrained(dtype=...)`, `pipeline(..., dtype=...)` (audio
classification and feature extraction) and `MusiCoderEmbedder.from_pretrained(dtype=...)`. Each runs in bfloat16 and
stays close to float32; pooled statistics are computed in float32 whatever the model's dtype."""

import numpy as np
import pytest
import torch
from test_hub_integration import SAMPLING_RATE, music_like_clip, save_classifier
from transformers import AutoModelForAudioClassification, pipeline

from musicoder_hf import MusiCoderEmbedder, MusiCoderFeatureExtractionPipeline
from musicoder_hf.embeddings import pooled_hidden_states
from musicoder_hf.modeling_musicoder import masked_pool


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bf16")
    model, feature_extractor = save_classifier(folder)
    clip = np.concatenate([music_like_clip(seconds=8.0, seed=seed) for seed in range(5)])  # 40 s: two windows
    return folder, model, feature_extractor, clip


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def test_from_pretrained_dtype_runs_the_classifier_in_bfloat16(checkpoint):
    folder, model, feature_extractor, clip = checkpoint
    bf16 = AutoModelForAudioClassification.from_pretrained(folder, dtype=torch.bfloat16).eval()
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    inputs = feature_extractor([clip[: SAMPLING_RATE * 20], clip[: SAMPLING_RATE * 7]], sampling_rate=SAMPLING_RATE,
                               return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits
        got = bf16(input_features=inputs["input_features"].bfloat16(), attention_mask=inputs["attention_mask"]).logits
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.05 * expected.abs().max().item(), rtol=0)
    # The extractor's float32 output feeds the bfloat16 model as it is, as in float32.
    with torch.no_grad():
        torch.testing.assert_close(bf16(**inputs).logits, got)


def test_pipeline_dtype_classifies_in_bfloat16_like_float32(checkpoint):
    folder, _, _, clip = checkpoint
    audio = {"array": clip, "sampling_rate": SAMPLING_RATE}
    fp32 = pipeline("audio-classification", model=str(folder))(audio, top_k=None)
    classifier = pipeline("audio-classification", model=str(folder), dtype=torch.bfloat16)
    assert classifier.model.dtype == torch.bfloat16
    bf16 = classifier(audio, top_k=None)
    assert {row["label"] for row in bf16} == {row["label"] for row in fp32}
    assert abs(sum(row["score"] for row in bf16) - 1) < 1e-5  # probabilities from float32 logits
    by_label = {row["label"]: row["score"] for row in fp32}
    assert max(abs(row["score"] - by_label[row["label"]]) for row in bf16) < 0.02


def test_embedder_and_feature_extraction_pipeline_in_bfloat16(checkpoint):
    folder, _, _, clip = checkpoint
    expected = MusiCoderEmbedder.from_pretrained(folder)(clip, sampling_rate=SAMPLING_RATE, pooling="mean_std")
    embedder = MusiCoderEmbedder.from_pretrained(folder, dtype=torch.bfloat16)
    assert embedder.encoder.dtype == torch.bfloat16
    got = embedder(clip, sampling_rate=SAMPLING_RATE, pooling="mean_std")
    assert got.embeddings.dtype == torch.float32 and got.embeddings.shape == expected.embeddings.shape
    for layer in range(len(expected.layers)):
        assert cosine(got.embeddings[layer], expected.embeddings[layer]) > 0.999

    extractor = pipeline("feature-extraction", model=str(folder), pipeline_class=MusiCoderFeatureExtractionPipeline,
                         dtype=torch.bfloat16)
    assert extractor.model.dtype == torch.bfloat16
    from_pipeline = extractor({"array": clip, "sampling_rate": SAMPLING_RATE}, pooling="mean_std", return_tensors=True)
    torch.testing.assert_close(from_pipeline, got.embeddings)

    # Already-featurised clips (the probes' path) take the encoder's dtype as well.
    frames = embedder.feature_extractor(clip[: SAMPLING_RATE * 10], sampling_rate=SAMPLING_RATE)["input_features"]
    pooled = pooled_hidden_states(embedder.encoder, frames, pooling="mean")
    reference = pooled_hidden_states(MusiCoderEmbedder.from_pretrained(folder).encoder, frames, pooling="mean")
    assert pooled.dtype == np.float32 and cosine(pooled, reference) > 0.999


def test_pooled_statistics_are_float32_inside_a_bfloat16_model():
    torch.manual_seed(0)
    hidden = 3 + torch.randn(2, 1291, 16)  # a frame count that bfloat16 cannot represent
    mask = torch.ones(2, 1291, dtype=torch.int32)
    mask[1, 700:] = 0
    expected = masked_pool(hidden.bfloat16().float(), mask, "mean_std")
    got = masked_pool(hidden.bfloat16(), mask, "mean_std")
    assert got.dtype == torch.bfloat16
    # Only the final rounding to bfloat16 (relative 2**-8) separates the two.
    torch.testing.assert_close(got.float(), expected, rtol=2**-8, atol=1e-6)
