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


@pytest.mark.parametrize("mask_kind", [None, "bool", "additive", "additive_keys"])
def test_query_chunked_attention_is_softmax_attention(monkeypatch, mask_kind):
    """The block-by-block attention of bfloat16 CPU inference is exact softmax attention (checked in float64), with
    the masks the `sdpa` mask function gives and a last block shorter than the others."""
    import torch.nn.functional as F

    from musicoder_hf import modeling_musicoder

    monkeypatch.setattr(modeling_musicoder, "ATTENTION_QUERY_CHUNK", 7)  # 30 frames: blocks of 7, the last of 2
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 3, 30, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[1, 20:] = False  # padding of the second clip
    mask = {None: None, "bool": valid[:, None, None, :].expand(2, 1, 30, 30),
            "additive": torch.zeros(2, 1, 30, 30, dtype=torch.float64).masked_fill(~valid[:, None, None, :], -1e300),
            "additive_keys": torch.zeros(2, 1, 1, 30, dtype=torch.float64).masked_fill(~valid[:, None, None, :],
                                                                                     -1e300)}[mask_kind]
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=0.3).transpose(1, 2)
    got = modeling_musicoder.query_chunked_attention(query, key, value, mask, 0.3)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)


def test_bfloat16_cpu_inference_runs_the_chunked_attention_close_to_pytorchs(monkeypatch):
    """bfloat16 inference on CPU with `sdpa` takes `query_chunked_attention` (in every layer), close to PyTorch's
    kernel and padding-invariant; training, float32 and the eager kernel keep PyTorch's attention."""
    from musicoder_hf import MusiCoderConfig, MusiCoderModel, modeling_musicoder

    monkeypatch.setattr(modeling_musicoder, "ATTENTION_QUERY_CHUNK", 16)
    calls = []
    chunked = modeling_musicoder.query_chunked_attention
    monkeypatch.setattr(modeling_musicoder, "query_chunked_attention", lambda *a: calls.append(1) or chunked(*a))
    torch.manual_seed(0)
    config = MusiCoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = MusiCoderModel(config).eval().to(torch.bfloat16)
    frames = torch.randn(2, 50, 324)
    mask = torch.ones(2, 50, dtype=torch.int32)
    mask[1, 35:] = 0
    with torch.no_grad():
        got = model(frames, attention_mask=mask).last_hidden_state.float()
        assert len(calls) == 2  # one per layer
        alone = model(frames[1:, :35]).last_hidden_state.float()  # the padded clip on its own
        torch.testing.assert_close(got[1, :35], alone[0], atol=0.05, rtol=0.02)
        monkeypatch.setattr(modeling_musicoder.MusiCoderAttention, "runs_query_chunked", lambda self, query: False)
        reference = model(frames, attention_mask=mask).last_hidden_state.float()
    assert len(calls) == 4  # PyTorch's kernel for the reference
    valid = mask.bool()
    assert ((got - reference)[valid].norm() / reference[valid].norm()) < 0.01
    monkeypatch.undo()

    attention = model.layers[0].attention
    query = torch.zeros(1, 4, 5, 16, dtype=torch.bfloat16)
    assert attention.runs_query_chunked(query)
    assert not attention.runs_query_chunked(query.float())
    model.train()
    assert not attention.runs_query_chunked(query)
    model.eval()
    model.set_attn_implementation("eager")
    assert not attention.runs_query_chunked(query)
