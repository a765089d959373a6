"""Audio of any length: windowed classification, embeddings per layer (clip and time step), HEAR API, flat memory."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile
import torch
from test_hub_integration import SAMPLING_RATE, music_like_clip, save_classifier
from transformers import pipeline

from musicoder_hf import MusiCoderEmbedder, MusiCoderFeatureExtractionPipeline, hear
from musicoder_hf.embeddings import pooled_hidden_states
from musicoder_hf.modeling_musicoder import masked_pool

HOP = 1024


@pytest.fixture(scope="module")
def folder_model_extractor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long_audio")
    model, feature_extractor = save_classifier(folder)
    return folder, model, feature_extractor


@pytest.fixture(scope="module")
def long_clip():
    # 50 s of changing chords: 2154 frames, longer than the model's 1600-frame window.
    return np.concatenate([music_like_clip(seconds=10.0, seed=seed) for seed in range(5)])


def test_pipeline_scores_are_the_models_forward_on_the_whole_clip(folder_model_extractor, long_clip):
    """The pipeline featurises the whole track and calls the model once: its scores are exactly those of
    `model(**feature_extractor(clip))`, which reads the 2154 frames in two windows of 1077. In a batch, clips of other
    lengths are padded next to it and each keeps its own scores."""
    folder, model, feature_extractor = folder_model_extractor
    clips = [long_clip, long_clip[: SAMPLING_RATE * 4], long_clip[SAMPLING_RATE * 7 : SAMPLING_RATE * 46]]
    labels = model.config.id2label
    for batch_size in (1, 3):
        classifier = pipeline("audio-classification", model=str(folder), batch_size=batch_size)
        results = classifier(clips, top_k=None)
        for clip, result in zip(clips, results):
            inputs = feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")
            with torch.no_grad():
                expected = model(**inputs).logits[0].softmax(-1)
            for r in result:
                label_id = next(i for i, name in labels.items() if name == r["label"])
                assert r["score"] == pytest.approx(expected[label_id].item(), abs=1e-5)


def test_saved_pipeline_stays_a_builtin_task(folder_model_extractor, tmp_path):
    """Guards the package's one private hook (`register_pipelines`): a pipeline saved with `save_pretrained` must
    reload with plain `pipeline("audio-classification")`, with no `custom_pipelines` entry in its config (which would
    demand trust_remote_code). If a transformers upgrade changes how `register_pipeline` marks custom pipelines, this
    fails."""
    import json

    classifier = pipeline("audio-classification", model=str(folder_model_extractor[0]))
    classifier.save_pretrained(tmp_path)
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())
    reloaded = pipeline("audio-classification", model=str(tmp_path))
    assert type(reloaded).__name__ == "MusiCoderAudioClassificationPipeline"
    clip = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLING_RATE * 3).astype(np.float32)
    assert reloaded(clip, top_k=1)[0]["label"] == classifier(clip, top_k=1)[0]["label"]


def test_window_arguments_of_earlier_versions_get_an_explanation(folder_model_extractor, long_clip):
    folder, model, feature_extractor = folder_model_extractor
    classifier = pipeline("audio-classification", model=str(folder))
    with pytest.raises(ValueError, match="reads inputs longer than its window"):
        classifier(long_clip, window_frames=400)
    with pytest.raises(ValueError, match="reads inputs longer than its window"):
        MusiCoderEmbedder(model, feature_extractor, hop_frames=200)


def test_embeddings_of_a_short_clip_are_the_hidden_states(folder_model_extractor):
    folder, model, feature_extractor = folder_model_extractor
    clip = music_like_clip(seconds=5.0)
    inputs = feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        hidden_states = model.base_model(**inputs, output_hidden_states=True).hidden_states
    embedder = MusiCoderEmbedder.from_pretrained(folder)
    per_frame = embedder(clip, pooling=None)
    assert per_frame.layers == (0, 1, 2)
    assert per_frame.embeddings.shape == (3, inputs["input_features"].shape[1], 32)
    for layer in range(3):
        torch.testing.assert_close(per_frame.embeddings[layer], hidden_states[layer][0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(per_frame.timestamps[:3].numpy(), [0.0, HOP / SAMPLING_RATE, 2 * HOP / SAMPLING_RATE])

    pooled = embedder(clip, layers=[-1, 1])
    assert pooled.layers == (2, 1)
    expected = torch.stack([hidden_states[2][0].mean(0), hidden_states[1][0].mean(0)])
    torch.testing.assert_close(pooled.embeddings, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="Layer 3 does not exist"):
        embedder(clip, layers=3)


@pytest.mark.parametrize("pooling", ["mean", "mean_std"])
def test_embeddings_of_a_long_clip_are_the_models_hidden_states(folder_model_extractor, long_clip, pooling):
    """The embedder reads a long clip window by window, `batch_size` windows at a time, exactly as the model's forward
    reads it, and pools over all its frames, as the classifier pools."""
    folder, model, feature_extractor = folder_model_extractor
    inputs = feature_extractor(long_clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        hidden_states = model.base_model(**inputs, output_hidden_states=True).hidden_states
    embedder = MusiCoderEmbedder.from_pretrained(folder, batch_size=1)
    per_frame = embedder(long_clip, pooling=None).embeddings
    assert per_frame.shape == (3, 1 + len(long_clip) // HOP, 32)
    torch.testing.assert_close(per_frame, torch.cat(hidden_states), atol=1e-5, rtol=1e-5)

    pooled = embedder(long_clip, layers=[-1], pooling=pooling).embeddings[0]
    torch.testing.assert_close(pooled, masked_pool(hidden_states[-1], None, pooling)[0], atol=1e-5, rtol=1e-5)
    frames = inputs["input_features"][0]
    torch.testing.assert_close(
        torch.from_numpy(pooled_hidden_states(model.base_model, [frames], pooling, batch_size=3)[0, -1]), pooled,
        atol=1e-5, rtol=1e-5)


def test_feature_extraction_pipeline_matches_the_embedder(folder_model_extractor, long_clip):
    folder, _, _ = folder_model_extractor
    extractor = pipeline("feature-extraction", model=str(folder), pipeline_class=MusiCoderFeatureExtractionPipeline)
    result = extractor(long_clip, layers=[0, -1], return_tensors=True)
    expected = MusiCoderEmbedder.from_pretrained(folder)(long_clip, layers=[0, -1]).embeddings
    torch.testing.assert_close(result, expected)
    as_lists = extractor({"array": long_clip, "sampling_rate": SAMPLING_RATE}, layers=-1)
    assert len(as_lists) == 1 and len(as_lists[0]) == 32


def test_hear_api(folder_model_extractor):
    folder, _, _ = folder_model_extractor
    model = hear.load_model(str(folder))
    assert model.sample_rate == SAMPLING_RATE
    assert model.scene_embedding_size == model.timestamp_embedding_size == 2 * 32  # layers 1..2, concatenated
    audio = torch.from_numpy(np.stack([music_like_clip(seconds=2.0, seed=0), music_like_clip(seconds=2.0, seed=1)]))

    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (2, 64) and torch.isfinite(scene).all()
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    frames = 1 + audio.shape[1] // HOP
    assert embeddings.shape == (2, frames, 64) and timestamps.shape == (2, frames)
    np.testing.assert_allclose(np.diff(timestamps[0].numpy()), 1000 * HOP / SAMPLING_RATE, rtol=1e-5)
    torch.testing.assert_close(scene, embeddings.mean(1), atol=1e-5, rtol=1e-5)
    # Sounds are embedded independently of their batch neighbours.
    torch.testing.assert_close(hear.get_scene_embeddings(audio[1:], model)[0], scene[1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="local MusiCoder checkpoint"):
        hear.load_model("")


PEAK_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from transformers import pipeline
    import musicoder_hf  # noqa: F401  (registers the pipeline)

    classifier = pipeline("audio-classification", model=sys.argv[1])
    classifier(sys.argv[3], top_k=1)  # warm up on a 3 s clip: lazy imports, allocator pools
    with open("/proc/self/status") as status:  # resident now, KiB
        before = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    result = classifier(sys.argv[2], top_k=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(result[0]["label"], (peak - before) // 1024)  # MiB above the resident size before the call
    """
)


def write_track(path, minutes, sampling_rate=48000):
    """A stereo 48 kHz track written block by block (the test process never holds it whole)."""
    block = music_like_clip(seconds=30.0)
    with soundfile.SoundFile(path, "w", samplerate=sampling_rate, channels=2, subtype="PCM_16") as track:
        for index in range(int(minutes * 2)):
            mono = np.roll(block, index * 4410)[: 30 * sampling_rate]
            track.write(np.stack([mono, 0.8 * mono], axis=1))


def test_ten_minute_track_needs_memory_for_its_waveform_and_features_only(folder_model_extractor, tmp_path):
    folder = folder_model_extractor[0]
    warm_up = tmp_path / "warm_up.wav"
    soundfile.write(warm_up, music_like_clip(seconds=3.0), SAMPLING_RATE)
    growth = {}
    for minutes in (0.5, 10):
        path = tmp_path / f"track_{minutes}.wav"
        write_track(path, minutes)
        command = [sys.executable, "-c", PEAK_MEMORY_SCRIPT, str(folder), str(path), str(warm_up)]
        run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        growth[minutes] = int(run.stdout.split()[-1])
    print(f"peak memory growth: 30 s track {growth[0.5]} MiB, 10 min track {growth[10]} MiB")
    # What may grow: the decoded 10-minute mono waveform, 101 MiB at 44.1 kHz float32 (the file is decoded, downmixed
    # and resampled block by block), and the track's features, 32 MiB (25,840 frames x 324 float32), of which the
    # extractor holds up to three copies for a moment (its output, normalised, as a tensor). Features are computed
    # block by block and the model reads windows in bounded groups: a full-length forward pass would need the
    # 25,840-frame attention matrix, about 10 GiB per layer for this 4-head model.
    assert growth[10] - growth[0.5] < 101 + 3 * 32 + 30, growth
