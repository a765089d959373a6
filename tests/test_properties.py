"""Property tests (hypothesis): any audio and any batch layout give finite features, zero padding and clean masks.

Feature extractor: random lengths (down to the shortest accepted clip), amplitudes from 1e-8 to 1e3 (silence and DC
included) and paddings, on every backend the extractor offers. In-memory audio: every PCM and float dtype, 1 to 8
channels in either layout, as arrays and tensors, through the extractor's conversion and `load_audio`. Collator: random lengths, pre-padded examples,
`pad_to_multiple_of`, CFM/CCM switches and CCM widths.
"""

import inspect

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicoder_hf import MusiCoderConfig, MusiCoderFeatureExtractor
from musicoder_hf import feature_extraction_musicoder as extraction_module
from musicoder_hf.audio import load_audio
from musicoder_hf.data_collator import DataCollatorForMusiCoderPreTraining

# No example database: it would leave a .hypothesis/ folder in the checkout. Failures print a reproduction blob.
SETTINGS = dict(deadline=None, database=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])

SAMPLING_RATE = 44100
MIN_SAMPLES = 2048  # n_fft: the shortest accepted clip (3 frames)

if "backend" in inspect.signature(MusiCoderFeatureExtractor.__init__).parameters:
    BACKENDS = tuple(getattr(extraction_module, "BACKENDS", ("librosa",)))
else:
    BACKENDS = (None,)  # a single-backend extractor

_EXTRACTORS = {}


def extractor_for(backend):
    if backend not in _EXTRACTORS:
        _EXTRACTORS[backend] = MusiCoderFeatureExtractor(**({} if backend is None else {"backend": backend}))
    return _EXTRACTORS[backend]


# ----- feature extractor -----


@st.composite
def clips(draw):
    """One waveform: silence, DC, a sine, noise or a click, at amplitudes from 1e-8 to 1e3."""
    length = draw(st.one_of(st.integers(MIN_SAMPLES, MIN_SAMPLES + 1100), st.integers(MIN_SAMPLES, SAMPLING_RATE)))
    kind = draw(st.sampled_from(["silence", "dc", "sine", "noise", "click"]))
    amplitude = 10.0 ** draw(st.floats(-8, 3))
    seed = draw(st.integers(0, 2**16))
    t = np.arange(length) / SAMPLING_RATE
    if kind == "silence":
        wave = np.zeros(length)
    elif kind == "dc":
        wave = np.full(length, amplitude * draw(st.sampled_from([-1.0, 1.0])))
    elif kind == "sine":
        wave = amplitude * np.sin(2 * np.pi * draw(st.floats(20.0, 20000.0)) * t)
    elif kind == "noise":
        wave = amplitude * np.random.default_rng(seed).uniform(-1, 1, length)
    else:
        wave = np.zeros(length)
        wave[draw(st.integers(0, length - 1))] = amplitude
    return wave.astype(np.float32)


@st.composite
def extraction_requests(draw):
    batch = draw(st.lists(clips(), min_size=1, max_size=3))
    longest = max(1 + len(wave) // 1024 for wave in batch)
    padding = draw(st.sampled_from(["longest", "max_length", "multiple"]))
    kwargs = {}
    if padding == "max_length":
        kwargs = {"padding": "max_length", "max_length": longest + draw(st.integers(0, 20))}
    elif padding == "multiple":
        kwargs = {"pad_to_multiple_of": draw(st.integers(1, 16))}
    return batch, kwargs


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=20, **SETTINGS)
@given(request=extraction_requests())
def test_features_are_finite_normalised_and_zero_on_padding(backend, request):
    batch, kwargs = request
    extractor = extractor_for(backend)
    output = extractor(batch, sampling_rate=SAMPLING_RATE, return_tensors="np", **kwargs)
    features, mask = output["input_features"], output["attention_mask"]

    num_frames = [extractor.num_frames(len(wave)) for wave in batch]
    expected_length = kwargs.get("max_length", max(num_frames))
    if "pad_to_multiple_of" in kwargs:
        expected_length = -(-expected_length // kwargs["pad_to_multiple_of"]) * kwargs["pad_to_multiple_of"]
    assert features.shape == (len(batch), expected_length, 324) and features.dtype == np.float32
    assert np.isfinite(features).all()
    for row, frames in enumerate(num_frames):
        assert mask[row].tolist() == [1] * frames + [0] * (expected_length - frames)
        assert not features[row, frames:].any(), "padding frames must be exactly zero"
        valid = features[row, :frames].astype(np.float64)
        # CMVN over the valid frames: zero mean, unit variance, or 0 for a (near-)constant channel.
        assert np.abs(valid.mean(axis=0)).max() < 1e-4
        assert valid.std(axis=0).max() < 1 + 1e-4


# ----- in-memory audio -----


@st.composite
def in_memory_clips(draw):
    """(channels, samples) audio of any PCM or float dtype, with fewer channels than samples."""
    dtype = np.dtype(draw(st.sampled_from(["int8", "int16", "int32", "uint8", "uint16", "float32", "float64"])))
    channels = draw(st.integers(1, extraction_module.MAX_CHANNELS))
    length = draw(st.integers(channels + 1, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if dtype.kind == "f":
        return rng.uniform(-1, 1, (channels, length)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=(channels, length), dtype=dtype, endpoint=True)


@settings(max_examples=60, **SETTINGS)
@given(samples=in_memory_clips())
def test_in_memory_audio_is_read_one_way_whatever_its_layout_or_container(samples):
    to_mono_waveform = extraction_module.to_mono_waveform
    mono = to_mono_waveform(samples)
    assert mono.dtype == np.float32 and mono.shape == (samples.shape[1],)
    if samples.dtype.kind in "iu":  # integer PCM: full scale maps to [-1, 1)
        full_scale = 2.0 ** (8 * samples.dtype.itemsize - 1)
        offset = full_scale if samples.dtype.kind == "u" else 0.0
        expected = ((samples.astype(np.float64) - offset) / full_scale).mean(axis=0)
        assert np.abs(mono).max() <= 1.0
    else:
        expected = samples.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(mono, expected, rtol=1e-6, atol=1e-6)
    # (samples, channels) as soundfile gives it, and the same values as a torch tensor, read alike
    np.testing.assert_allclose(to_mono_waveform(samples.T), mono, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(to_mono_waveform(torch.from_numpy(samples)), mono)
    # `load_audio` (pipelines, embeddings) reads arrays exactly as the feature extractor does
    np.testing.assert_array_equal(load_audio(samples, SAMPLING_RATE), mono)


# ----- collator -----


@st.composite
def collator_requests(draw):
    config_changes = {}
    if draw(st.booleans()):
        config_changes["ccm_max_width"] = draw(st.integers(0, 200))
    cfm, ccm = draw(st.sampled_from([(True, True), (True, False), (False, True)]))
    lengths = draw(st.lists(st.one_of(st.integers(1, 12), st.integers(1, 400)), min_size=1, max_size=4))
    examples = []
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    for length in lengths:
        scale = 10.0 ** draw(st.floats(-6, 3))
        frames = (scale * rng.standard_normal((length, 324))).astype(np.float32)
        if draw(st.booleans()):
            frames[:, draw(st.integers(0, 323))] = 0.0  # a silent channel
        example = {"input_features": frames}
        tail = draw(st.integers(0, 5))
        if tail:  # a pre-padded example whose padding holds garbage: only the masked-valid frames may be used
            garbage = rng.standard_normal((tail, 324)).astype(np.float32) + 7.0
            example = {
                "input_features": np.concatenate([frames, garbage]),
                "attention_mask": np.array([1] * length + [0] * tail),
            }
        examples.append((frames, example))
    pad_to_multiple_of = draw(st.one_of(st.none(), st.integers(1, 16)))
    return config_changes, cfm, ccm, pad_to_multiple_of, examples, draw(st.integers(0, 2**31))


@settings(max_examples=60, **SETTINGS)
@given(request=collator_requests())
def test_collator_keeps_labels_padding_and_masks_apart(request):
    config_changes, cfm, ccm, pad_to_multiple_of, examples, seed = request
    config = MusiCoderConfig(**config_changes)
    collator = DataCollatorForMusiCoderPreTraining(
        config=config, cfm=cfm, ccm=ccm, pad_to_multiple_of=pad_to_multiple_of, seed=seed
    )
    batch = collator([example for _, example in examples])
    inputs, labels = batch["input_features"], batch["labels"]
    attention_mask, reconstruction = batch["attention_mask"], batch["reconstruction_mask"]
    lengths = [len(frames) for frames, _ in examples]
    total = max(lengths) if pad_to_multiple_of is None else -(-max(lengths) // pad_to_multiple_of) * pad_to_multiple_of
    assert inputs.shape == labels.shape == reconstruction.shape == (len(examples), total, 324)
    assert reconstruction.dtype == torch.bool
    assert torch.isfinite(inputs).all()

    maskable = torch.zeros(324, dtype=torch.bool)
    blocks = [config.feature_slice(block) for block in config.ccm_feature_blocks]
    for block in blocks:
        maskable[block] = True
    max_width = config.ccm_max_width

    for row, (frames, _) in enumerate(examples):
        length, original = lengths[row], torch.from_numpy(frames)
        assert attention_mask[row].tolist() == [1] * length + [0] * (total - length)
        assert torch.equal(labels[row, :length], original), "labels must be the original frames"
        assert not labels[row, length:].any() and not inputs[row, length:].any(), "padding must stay zero"
        assert not reconstruction[row, length:].any(), "the reconstruction mask must never touch padding"

        # The mask factorises: CFM frames (all channels) | CCM channels (all valid frames). Channel 0 (chroma) is
        # never CCM-maskable, so it tells the CFM frames.
        cfm_frames = reconstruction[row, :length, 0]
        assert not cfm_frames.any() or cfm
        unselected = ~cfm_frames
        if unselected.any():
            ccm_channels = reconstruction[row, :length][unselected].all(dim=0)
            assert torch.equal(
                reconstruction[row, :length], cfm_frames[:, None] | ccm_channels[None, :]
            ), "reconstruction_mask is not (CFM frames) | (CCM channels)"
            assert not ccm_channels.any() or ccm
            assert not (ccm_channels & ~maskable).any(), "CCM masked a channel outside log-mel / log-CQT"
            for block in blocks:  # one contiguous band per block, at most ccm_max_width wide
                band = ccm_channels[block].nonzero()[:, 0]
                if len(band):
                    assert band[-1] - band[0] + 1 == len(band), "a CCM band is not contiguous"
                    assert max_width is None or len(band) <= max_width
            assert not inputs[row, :length][:, ccm_channels].any(), "CCM channels must be zero on valid frames"
            kept = inputs[row, :length][unselected][:, ~ccm_channels]
            assert torch.equal(kept, original[unselected][:, ~ccm_channels]), "unmasked elements were altered"
        else:  # CFM covers the whole (tiny) clip, so the CCM band is unknown: compare outside the maskable blocks
            ccm_channels = maskable

        # A CFM frame is zero, left unchanged, or a copy of one of the clip's own frames (outside CCM channels).
        sources = original[:, ~ccm_channels]
        for frame in cfm_frames.nonzero()[:, 0]:
            value = inputs[row, frame, ~ccm_channels]
            assert not value.any() or (sources == value).all(dim=1).any(), f"CFM frame {int(frame)} came from nowhere"

        # CFM selects round(15%) of the valid frames, overshooting by less than one span (spans always fit here).
        if cfm and length >= 100:
            budget = round(config.cfm_mask_ratio * length)
            assert budget <= int(cfm_frames.sum()) < budget + config.cfm_max_span
