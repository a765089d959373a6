"""Inference patchout (`frame_stride`): one frame of every N is read, each at its own position in the model's windows;
the same result through the feature extractor + forward, the pipeline, the embedder, the evaluation helpers, HEAR and
the commands; and `frame_stride=1` (the default) bit-identical to reading every frame."""

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hub_integration import LABELS, SAMPLING_RATE, music_like_clip
from test_modeling_musicoder import padded_batch, tiny_config
from transformers import pipeline

from musicoder_hf import (
    MusiCoderEmbedder,
    MusiCoderFeatureExtractor,
    MusiCoderForSequenceClassification,
    MusiCoderModel,
    hear,
)
from musicoder_hf.data_collator import pad_frames
from musicoder_hf.embeddings import pooled_hidden_states
from musicoder_hf.evaluation import predict_logits
from musicoder_hf.modeling_musicoder import position_windows, window_spans

WINDOW = 64  # frames: a 5 s clip (216 frames) is read in 4 windows, or in 4 windows of about 27 frames at N = 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("patchout")
    torch.manual_seed(0)
    config = tiny_config(max_position_embeddings=WINDOW, id2label=dict(enumerate(LABELS)),
                         label2id={label: i for i, label in enumerate(LABELS)}, classifier_pooling="mean_std")
    model = MusiCoderForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    feature_extractor = MusiCoderFeatureExtractor()
    feature_extractor.save_pretrained(folder)
    return folder, model, feature_extractor


@pytest.fixture(scope="module")
def clips():
    return [music_like_clip(seconds=5.0, seed=1), music_like_clip(seconds=2.0, seed=2)]


@given(num_frames=st.integers(1, 3000), window=st.integers(8, 400), stride=st.integers(1, 4))
@settings(max_examples=200, deadline=None)
def test_position_windows_are_the_clips_windows_with_each_kept_frame_once(num_frames, window, stride):
    positions = torch.arange(0, num_frames, stride)
    windows = position_windows(positions, window)
    assert windows[0][0] == 0 and windows[-1][1] == len(positions)
    assert all(stop == next_first for (_, stop, _), (next_first, _, _) in zip(windows, windows[1:]))
    spans = dict(window_spans(int(positions[-1]) + 1, window))
    for first, stop, start in windows:  # each window's frames lie in one of the axis' windows, at positions < window
        local = positions[first:stop] - start
        assert start in spans and int(local[0]) >= 0 and int(positions[stop - 1]) < spans[start]
        assert int(local[-1]) < window
    if stride == 1:
        assert [(first, stop) for first, stop, _ in windows] == window_spans(num_frames, window)


@torch.no_grad()
@pytest.mark.parametrize("num_frames", [40, 3 * WINDOW + 5])
def test_consecutive_position_ids_are_bit_identical_to_none(num_frames):
    model = MusiCoderForSequenceClassification(tiny_config(max_position_embeddings=WINDOW, num_labels=3)).eval()
    features, attention_mask = padded_batch([num_frames, num_frames // 2])
    positions = torch.arange(num_frames).expand(2, -1) * attention_mask
    plain = model(features, attention_mask=attention_mask, output_hidden_states=True)
    with_positions = model(features, attention_mask=attention_mask, position_ids=positions, output_hidden_states=True)
    assert torch.equal(plain.logits, with_positions.logits)
    valid = attention_mask.bool()  # padding frames are never read; their states may differ
    for a, b in zip(plain.hidden_states, with_positions.hidden_states):
        assert torch.equal(a[valid], b[valid])


@torch.no_grad()
def test_kept_frames_keep_their_own_positions_in_their_windows():
    encoder = MusiCoderModel(tiny_config(max_position_embeddings=WINDOW)).eval()
    features = torch.randn(1, 3 * WINDOW + 5, 324)  # 197 frames, kept: 0, 3, ..., 195
    kept, positions = features[:, ::3], torch.arange(0, 197, 3)[None]
    got = encoder(kept, position_ids=positions).last_hidden_state
    by_hand = []
    for start, stop in window_spans(196, WINDOW):  # the axis up to the last kept frame: 4 windows of 49
        in_window = (positions[0] >= start) & (positions[0] < stop)
        window_out = encoder.embeddings(kept[:, in_window], positions[:, in_window] - start)
        for layer in encoder.layers:
            window_out = layer(window_out, None)[0]
        by_hand.append(window_out)
    torch.testing.assert_close(got, torch.cat(by_hand, dim=1), atol=1e-5, rtol=1e-5)
    # a position past the table is never looked up: a short input with positions inside one window needs no windows
    short = encoder(kept[:, :10], position_ids=positions[:, :10], output_attentions=True)
    assert len(short.attentions) == 2


@torch.no_grad()
def test_padded_batch_with_patchout_gives_each_clip_its_unpadded_result(clips):
    model = MusiCoderForSequenceClassification(tiny_config(max_position_embeddings=WINDOW, num_labels=3)).eval()
    extractor = MusiCoderFeatureExtractor()
    alone = [model(**extractor(clip, sampling_rate=SAMPLING_RATE, frame_stride=3, return_tensors="pt")).logits[0]
             for clip in clips]
    for side in ("right", "left"):
        extractor.padding_side = side
        batch = extractor(clips, sampling_rate=SAMPLING_RATE, frame_stride=3, return_tensors="pt")
        assert batch["position_ids"].dtype == torch.long
        logits = model(**batch).logits
        for row, expected in enumerate(alone):
            torch.testing.assert_close(logits[row], expected, atol=1e-5, rtol=1e-5)


def test_feature_extractor_keeps_every_nth_frame_normalised_over_all_frames(clips):
    extractor = MusiCoderFeatureExtractor()
    full = extractor(clips, sampling_rate=SAMPLING_RATE, padding=False)
    plain = extractor(clips, sampling_rate=SAMPLING_RATE, frame_stride=1, return_tensors="np")
    assert "position_ids" not in plain
    assert np.array_equal(plain["input_features"], extractor(clips, sampling_rate=SAMPLING_RATE,
                                                              return_tensors="np")["input_features"])
    strided = extractor(clips, sampling_rate=SAMPLING_RATE, frame_stride=2, return_tensors="np")
    for row, frames in enumerate(full["input_features"]):
        kept = frames[::2]
        assert np.array_equal(strided["input_features"][row, : len(kept)], kept)
        assert np.array_equal(strided["position_ids"][row, : len(kept)], np.arange(0, len(frames), 2))
        assert strided["attention_mask"][row].sum() == len(kept)
    unpadded = extractor(clips, sampling_rate=SAMPLING_RATE, frame_stride=2, padding=False)
    assert [len(x) for x in unpadded["input_features"]] == [len(x[::2]) for x in full["input_features"]]
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="frame_stride must be a positive integer"):
            extractor(clips[0], sampling_rate=SAMPLING_RATE, frame_stride=bad)


@torch.no_grad()
def test_every_door_gives_the_same_patchout_result(checkpoint, clips, tmp_path):
    folder, model, extractor = checkpoint
    path = tmp_path / "clip.wav"
    soundfile.write(path, clips[0], SAMPLING_RATE, subtype="FLOAT")
    direct = model(**extractor(clips[0], sampling_rate=SAMPLING_RATE, frame_stride=2, return_tensors="pt")).logits[0]
    exact = model(**extractor(clips[0], sampling_rate=SAMPLING_RATE, return_tensors="pt")).logits[0]
    assert not torch.allclose(direct, exact, atol=1e-4)  # patchout reads other frames: not the exact result

    classifier = pipeline("audio-classification", model=str(folder))
    scores = {r["label"]: r["score"] for r in classifier(str(path), top_k=None, frame_stride=2)}
    for index, label in model.config.id2label.items():
        assert scores[label] == pytest.approx(direct.softmax(-1)[index].item(), abs=1e-5)
    exact_scores = {r["label"]: r["score"] for r in classifier(str(path), top_k=None)}
    for index, label in model.config.id2label.items():
        assert exact_scores[label] == pytest.approx(exact.softmax(-1)[index].item(), abs=1e-5)

    features = extractor(clips, sampling_rate=SAMPLING_RATE, padding=False)["input_features"]
    logits = predict_logits(model, features, batch_size=2, frame_stride=2)
    np.testing.assert_allclose(logits[0], direct.numpy(), atol=1e-5)

    # The embedder pools the encoder's hidden states over the kept frames, as the classifier does.
    embedder = MusiCoderEmbedder(model, extractor, frame_stride=2)
    inputs = extractor(clips[0], sampling_rate=SAMPLING_RATE, frame_stride=2, return_tensors="pt")
    hidden = torch.stack(model.musicoder(**inputs, output_hidden_states=True).hidden_states)[:, 0]
    output = embedder(str(path), pooling=None)
    torch.testing.assert_close(output.embeddings, hidden, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(output.timestamps.numpy(),
                               np.arange(0, len(features[0]), 2) * extractor.hop_length / SAMPLING_RATE)
    pooled = embedder(str(path), pooling="mean_std").embeddings
    std = hidden.std(dim=1, unbiased=False)
    torch.testing.assert_close(pooled, torch.cat([hidden.mean(dim=1), std], dim=-1), atol=1e-5, rtol=1e-5)
    stacked = pooled_hidden_states(model.musicoder, features, pooling="mean_std", frame_stride=2)
    np.testing.assert_allclose(stacked[0], pooled.numpy(), atol=1e-5)

    hear_model = hear.load_model(str(folder), frame_stride=2)
    frames, timestamps = hear.get_timestamp_embeddings(torch.as_tensor(clips[0][None], dtype=torch.float32),
                                                       hear_model)
    assert frames.shape[1] == hidden.shape[1]
    np.testing.assert_allclose(timestamps[0].numpy(), output.timestamps.numpy() * 1000, rtol=1e-6)


@torch.no_grad()
def test_frame_stride_one_is_bit_identical_everywhere(checkpoint, clips):
    _, model, extractor = checkpoint
    features = extractor(clips, sampling_rate=SAMPLING_RATE, padding=False)["input_features"]
    assert np.array_equal(predict_logits(model, features), predict_logits(model, features, frame_stride=1))
    batch = pad_frames([torch.as_tensor(x) for x in features])
    assert set(pad_frames([torch.as_tensor(x) for x in features], frame_stride=1)) == set(batch)
    exact, stride_one = MusiCoderEmbedder(model, extractor), MusiCoderEmbedder(model, extractor, frame_stride=1)
    for a, b in zip(exact.embed_features(features, pooling=None), stride_one.embed_features(features, pooling=None)):
        assert torch.equal(a.embeddings, b.embeddings) and torch.equal(a.timestamps, b.timestamps)
    with pytest.raises(ValueError, match="frame_stride"):
        MusiCoderEmbedder(model, extractor, frame_stride=0)
