"""Tests of the CFM/CCM pre-training collator against the specification (paper section 3.3)."""

import numpy as np
import pytest
import torch

from musicoder_hf.configuration_musicoder import MusiCoderConfig
from musicoder_hf.data_collator import (
    CFM_POLICY_KEEP,
    CFM_POLICY_RANDOM,
    CFM_POLICY_ZERO,
    DataCollatorForMusiCoderPreTraining,
    cfm_frame_policy,
    cfm_span_length_distribution,
    sample_ccm_bands,
    sample_cfm_spans,
)


FEATURE_SIZE = 324
CLIP_FRAMES = 1292  # a 30 s clip at 44.1 kHz / hop 1024


def truncated_geometric_pmf(p=0.2, low=2, high=7):
    """Geometric(p) on {1, 2, ...} restricted to [low, high] and renormalised, written independently of the package."""
    lengths = np.arange(low, high + 1)
    weights = np.array([p * (1 - p) ** (length - 1) for length in lengths])
    return lengths, weights / weights.sum()


def random_clips(lengths, seed=0, dtype=np.float32):
    """Clips of distinct, non-zero random frames (so a frame can be identified by its values)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((length, FEATURE_SIZE)).astype(dtype) + 10.0 for length in lengths]


def collate(clips, **kwargs):
    kwargs.setdefault("seed", 0)
    return DataCollatorForMusiCoderPreTraining(**kwargs)([{"input_features": clip} for clip in clips])


def band_of(mask_row, block):
    """(start, width) of the single contiguous band of True in `mask_row[block]`, asserting it is contiguous."""
    channels = np.flatnonzero(mask_row[block])
    if channels.size == 0:
        return None, 0
    assert channels[-1] - channels[0] + 1 == channels.size, "CCM band is not contiguous"
    return block.start + channels[0], channels.size


# --- CFM span statistics --------------------------------------------------------------------------------------------


def test_truncated_geometric_mean_is_the_papers_3_87():
    lengths, pmf = truncated_geometric_pmf()
    assert round(float((lengths * pmf).sum()), 2) == 3.87
    package_lengths, package_pmf = cfm_span_length_distribution(MusiCoderConfig())
    np.testing.assert_array_equal(package_lengths.numpy(), lengths)
    np.testing.assert_allclose(package_pmf.numpy(), pmf, rtol=1e-12)


@pytest.fixture(scope="module")
def span_sample():
    rng = np.random.default_rng(1)
    # 2000 full clips plus 500 clips of random length, including very short ones.
    valid_lengths = np.concatenate([np.full(2000, CLIP_FRAMES), rng.integers(1, 1600, size=500)])
    spans = sample_cfm_spans(
        torch.tensor(valid_lengths), MusiCoderConfig(), generator=torch.Generator().manual_seed(0)
    )
    return torch.tensor(valid_lengths), spans


def test_cfm_span_lengths_follow_the_renormalised_truncated_geometric(span_sample):
    _, spans = span_sample
    lengths = spans.lengths[spans.valid].numpy()
    assert lengths.size > 100_000
    assert lengths.min() >= 2 and lengths.max() <= 7
    assert abs(lengths.mean() - 3.87) < 0.1
    support, pmf = truncated_geometric_pmf()
    histogram = np.array([(lengths == length).mean() for length in support])
    # Clipping instead of renormalising would put ~21% on length 7 instead of 8.9%.
    np.testing.assert_allclose(histogram, pmf, atol=0.015)


def test_cfm_selects_15_percent_of_valid_frames_overshooting_by_less_than_one_span(span_sample):
    valid_lengths, spans = span_sample
    selected = spans.lengths.sum(dim=1)
    full = valid_lengths == CLIP_FRAMES
    share = selected[full].sum().item() / valid_lengths[full].sum().item()
    assert abs(share - 0.15) < 0.01
    budgets = torch.round(valid_lengths.double() * 0.15).long()
    roomy = valid_lengths >= 50  # long enough that the spans always fit
    assert bool((selected[roomy] >= budgets[roomy]).all())
    assert bool((selected[roomy] < budgets[roomy] + 7).all())
    # Clips too short for one minimal span get no CFM.
    assert bool((selected[valid_lengths < 2] == 0).all())


def test_cfm_policy_shares_are_70_20_10(span_sample):
    _, spans = span_sample
    policy = spans.policy[spans.valid]
    shares = [
        (policy == code).double().mean().item() for code in (CFM_POLICY_ZERO, CFM_POLICY_RANDOM, CFM_POLICY_KEEP)
    ]
    np.testing.assert_allclose(shares, [0.7, 0.2, 0.1], atol=0.03)
    assert bool((spans.policy[~spans.valid] == -1).all())


def test_cfm_spans_never_overlap_and_stay_inside_the_valid_frames(span_sample):
    valid_lengths, spans = span_sample
    ends = spans.starts + spans.lengths
    assert bool((spans.starts[spans.valid] >= 0).all())
    assert bool((ends <= valid_lengths[:, None]).all())
    # Valid spans are a prefix of each row, sorted by start, each ending before the next starts.
    assert bool((spans.valid[:, 1:] <= spans.valid[:, :-1]).all())
    both_valid = spans.valid[:, 1:] & spans.valid[:, :-1]
    assert bool((spans.starts[:, 1:] >= ends[:, :-1])[both_valid].all())
    # Independent check by painting: no frame is covered twice.
    coverage = torch.zeros(len(valid_lengths), int(valid_lengths.max()) + 1, dtype=torch.long)
    for clip in range(0, len(valid_lengths), 7):
        for start, length in zip(
            spans.starts[clip][spans.valid[clip]], spans.lengths[clip][spans.valid[clip]], strict=True
        ):
            coverage[clip, start : start + length] += 1
    assert int(coverage.max()) == 1


def test_cfm_span_starts_are_spread_over_the_whole_clip(span_sample):
    valid_lengths, spans = span_sample
    full = valid_lengths == CLIP_FRAMES
    centres = (spans.starts + spans.lengths / 2)[full][spans.valid[full]].double() / CLIP_FRAMES
    assert abs(centres.mean().item() - 0.5) < 0.01
    # Roughly uniform: each tenth of the clip holds about a tenth of the spans.
    deciles = torch.histc(centres, bins=10, min=0.0, max=1.0) / centres.numel()
    np.testing.assert_allclose(deciles.numpy(), 0.1, atol=0.01)


def test_cfm_frame_policy_paints_the_spans():
    spans = sample_cfm_spans(torch.tensor([40, 300]), generator=torch.Generator().manual_seed(3))
    frame_policy = cfm_frame_policy(spans, 310)
    expected = torch.full((2, 310), -1)
    for clip in range(2):
        for start, length, policy in zip(
            spans.starts[clip][spans.valid[clip]],
            spans.lengths[clip][spans.valid[clip]],
            spans.policy[clip][spans.valid[clip]],
            strict=True,
        ):
            expected[clip, start : start + length] = policy
    torch.testing.assert_close(frame_policy, expected)


def test_cfm_drops_spans_that_cannot_fit_and_handles_short_clips():
    config = MusiCoderConfig(cfm_mask_ratio=0.9)
    valid_lengths = torch.arange(1, 40)
    for seed in range(20):
        spans = sample_cfm_spans(valid_lengths, config, generator=torch.Generator().manual_seed(seed))
        assert bool((spans.starts + spans.lengths <= valid_lengths[:, None]).all())
        assert bool((spans.lengths.sum(dim=1) <= valid_lengths).all())
    assert sample_cfm_spans(torch.tensor([1, 3]), MusiCoderConfig()).starts.shape == (2, 0)


# --- CFM in the collator ------------------------------------------------------------------------------------------


def test_collator_output_types_padding_and_labels():
    lengths = [1292, 700, 31, 1]
    clips = random_clips(lengths)
    batch = collate(clips)
    assert set(batch) == {"input_features", "attention_mask", "labels", "reconstruction_mask"}
    assert batch["input_features"].dtype == torch.float32 and batch["labels"].dtype == torch.float32
    assert batch["attention_mask"].dtype == torch.long and batch["reconstruction_mask"].dtype == torch.bool
    assert (
        batch["input_features"].shape == batch["labels"].shape == batch["reconstruction_mask"].shape == (4, 1292, 324)
    )
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    padding = batch["attention_mask"] == 0
    for index, clip in enumerate(clips):
        torch.testing.assert_close(batch["labels"][index, : len(clip)], torch.from_numpy(clip), rtol=0, atol=0)
    assert bool((batch["labels"][padding] == 0).all())
    assert bool((batch["input_features"][padding] == 0).all())
    assert not bool(batch["reconstruction_mask"][padding].any())


def test_collator_selects_15_percent_of_valid_frames():
    lengths = [CLIP_FRAMES] * 48 + list(range(200, 1200, 63))
    batch = collate(random_clips(lengths), ccm=False)
    frames = batch["reconstruction_mask"].any(dim=-1)
    share = frames.sum().item() / batch["attention_mask"].sum().item()
    assert abs(share - 0.15) < 0.01


def test_cfm_only_masks_whole_frames():
    batch = collate(random_clips([1292, 500, 77]), ccm=False)
    mask = batch["reconstruction_mask"]
    assert bool((mask.all(dim=-1) == mask.any(dim=-1)).all())
    assert mask.any()
    # Only CFM frames may differ from the originals.
    changed = (batch["input_features"] != batch["labels"]).any(dim=-1)
    assert not bool((changed & ~mask.any(dim=-1)).any())


def test_zero_policy_zeroes_the_selected_frames_exactly():
    config = MusiCoderConfig(cfm_zero_prob=1.0, cfm_random_prob=0.0)
    batch = collate(random_clips([1292, 600]), config=config, ccm=False)
    frames = batch["reconstruction_mask"].all(dim=-1)
    assert bool((batch["input_features"][frames] == 0).all())
    torch.testing.assert_close(batch["input_features"][~frames], batch["labels"][~frames], rtol=0, atol=0)


def test_keep_policy_leaves_frames_unchanged_but_still_reconstructs_them():
    config = MusiCoderConfig(cfm_zero_prob=0.0, cfm_random_prob=0.0)
    batch = collate(random_clips([1292, 600]), config=config, ccm=False)
    torch.testing.assert_close(batch["input_features"], batch["labels"], rtol=0, atol=0)
    share = batch["reconstruction_mask"].all(dim=-1).sum().item() / batch["attention_mask"].sum().item()
    assert 0.14 < share < 0.17


def test_random_policy_copies_valid_frames_of_the_same_clip_uniformly():
    config = MusiCoderConfig(cfm_zero_prob=0.0, cfm_random_prob=1.0)
    lengths = [1292, 1292, 1292, 1292, 400, 90]
    clips = random_clips(lengths)
    batch = collate(clips, config=config, ccm=False)
    frames = batch["reconstruction_mask"].all(dim=-1)
    source_positions = []
    for index, clip in enumerate(clips):
        originals = torch.from_numpy(clip)
        replaced = batch["input_features"][index][frames[index]]
        assert replaced.shape[0] > 0
        # Frames are distinct random vectors: an exact match identifies the source frame.
        matches = (replaced[:, None, :] == originals[None, :, :]).all(dim=-1)
        assert bool((matches.sum(dim=1) == 1).all()), "a replaced frame is not a frame of its own clip"
        source_positions.append(matches.float().argmax(dim=1).double() / len(clip))
        # No frame of another clip is used.
        other = torch.from_numpy(clips[(index + 1) % len(clips)])
        assert not bool((replaced[:, None, :] == other[None, :, :]).all(dim=-1).any())
    # Sources are uniform over the clip's valid frames (mean relative position 1/2), padding never used.
    assert abs(torch.cat(source_positions).mean().item() - 0.5) < 0.05


def test_default_policy_mix_on_collated_frames():
    clips = random_clips([1292] * 12)
    batch = collate(clips, ccm=False)
    counts = {"zero": 0, "keep": 0, "random": 0}
    for index, clip in enumerate(clips):
        originals = torch.from_numpy(clip)
        frames = batch["reconstruction_mask"][index].all(dim=-1).nonzero()[:, 0]
        for frame in frames:
            value = batch["input_features"][index, frame]
            if bool((value == 0).all()):
                counts["zero"] += 1
            elif torch.equal(value, originals[frame]):
                counts["keep"] += 1
            else:
                assert bool((value == originals).all(dim=-1).any()), "neither zero, kept, nor a frame of the clip"
                counts["random"] += 1
    total = sum(counts.values())
    # Frames, not spans, and a random frame may by chance draw itself: loose tolerances around 70/20/10.
    assert abs(counts["zero"] / total - 0.7) < 0.06
    assert abs(counts["random"] / total - 0.2) < 0.05
    assert abs(counts["keep"] / total - 0.1) < 0.05


# --- CCM -------------------------------------------------------------------------------------------------------------


def test_ccm_bands_lie_in_log_mel_and_log_cqt_with_uniform_widths():
    config = MusiCoderConfig()
    bands = sample_ccm_bands(4000, config, generator=torch.Generator().manual_seed(0))
    assert bands.blocks == ("log_mel", "log_cqt")
    for column, block in enumerate(bands.blocks):
        block_slice = config.feature_slice(block)
        block_width = block_slice.stop - block_slice.start
        starts, widths = bands.starts[:, column], bands.widths[:, column]
        assert bool((starts >= block_slice.start).all()) and bool((starts + widths <= block_slice.stop).all())
        # W = the whole block: widths uniform on {0..W}, mean W/2 (std of the mean ~0.7 channel).
        assert int(widths.min()) == 0 and int(widths.max()) == block_width
        assert abs(widths.double().mean().item() - block_width / 2) < 3.0
        # Start uniform where the band fits: relative offset averages 1/2.
        room = block_width - widths
        fits = room > 0
        relative = (starts - block_slice.start)[fits].double() / room[fits]
        assert abs(relative.mean().item() - 0.5) < 0.03


def test_ccm_max_width_is_respected_and_widths_are_uniform():
    config = MusiCoderConfig(ccm_max_width=10)
    bands = sample_ccm_bands(5000, config, generator=torch.Generator().manual_seed(1))
    widths = bands.widths.flatten()
    assert int(widths.max()) == 10 and int(widths.min()) == 0
    frequencies = torch.bincount(widths, minlength=11).double() / widths.numel()
    np.testing.assert_allclose(frequencies.numpy(), 1 / 11, atol=0.015)
    # A W wider than a block is capped at the block width.
    narrow = MusiCoderConfig(ccm_max_width=1000, ccm_feature_blocks=["chroma"])
    assert int(sample_ccm_bands(2000, narrow, generator=torch.Generator().manual_seed(2)).widths.max()) == 12


def test_ccm_only_zeroes_one_band_per_block_on_all_valid_frames():
    config = MusiCoderConfig()
    lengths = [1292, 300, 20] + [64] * 200
    batch = collate(random_clips(lengths), ccm=True, cfm=False)
    mask = batch["reconstruction_mask"]
    widths = {"log_mel": [], "log_cqt": []}
    for index, length in enumerate(lengths):
        valid = mask[index, :length]
        # Whole clip: every valid frame has the same masked channels; padding none.
        assert bool((valid == valid[0]).all())
        assert not bool(mask[index, length:].any())
        channels = valid[0].numpy()
        maskable = np.zeros(FEATURE_SIZE, dtype=bool)
        for block in widths:
            maskable[config.feature_slice(block)] = True
            widths[block].append(band_of(channels, config.feature_slice(block))[1])
        assert not channels[~maskable].any(), "CCM touched a channel outside log-mel/log-CQT"
        assert bool((batch["input_features"][index, :length][:, channels] == 0).all())
        torch.testing.assert_close(
            batch["input_features"][index, :, ~channels], batch["labels"][index, :, ~channels], rtol=0, atol=0
        )
    assert abs(np.mean(widths["log_mel"]) - 64) < 8 and abs(np.mean(widths["log_cqt"]) - 72) < 9


def test_ccm_max_width_in_the_collator():
    config = MusiCoderConfig(ccm_max_width=5)
    batch = collate(random_clips([50] * 300), config=config, cfm=False)
    channel_mask = batch["reconstruction_mask"][:, 0].numpy()
    widths = [band_of(row, config.feature_slice(block))[1] for row in channel_mask for block in ("log_mel", "log_cqt")]
    assert max(widths) == 5 and min(widths) == 0


def test_cfm_and_ccm_together_reconstruct_their_union():
    lengths = [1292, 800, 100]
    clips = random_clips(lengths)
    batch = collate(clips, seed=5)
    frames_only = collate(clips, seed=5, ccm=False)["reconstruction_mask"]
    mask = batch["reconstruction_mask"]
    # Frames fully masked are CFM frames (a CCM band can never cover a whole frame: chroma is never CCM-masked).
    cfm_frames = mask.all(dim=-1)
    assert cfm_frames.any()
    for index, length in enumerate(lengths):
        other_frames = ~cfm_frames[index, :length]
        ccm_channels = mask[index, :length][other_frames]
        assert bool((ccm_channels == ccm_channels[0]).all()), "non-CFM frames must share one CCM channel mask"
        expected = cfm_frames[index, :, None] | (
            ccm_channels[0][None, :] & batch["attention_mask"][index, :, None].bool()
        )
        torch.testing.assert_close(mask[index], expected)
        assert bool((batch["input_features"][index, :length][:, ccm_channels[0]] == 0).all())
    # Everything that changed is marked for reconstruction.
    assert not bool(((batch["input_features"] != batch["labels"]) & ~mask).any())
    assert frames_only.shape == mask.shape


# --- determinism, inputs, errors -------------------------------------------------------------------------------------


def assert_batches_equal(first, second):
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


def test_same_seed_gives_the_same_masks_call_after_call():
    examples = [{"input_features": clip} for clip in random_clips([300, 200, 123])]
    first, second = DataCollatorForMusiCoderPreTraining(seed=7), DataCollatorForMusiCoderPreTraining(seed=7)
    call_one, call_two = first(examples), first(examples)
    assert_batches_equal(call_one, second(examples))
    assert_batches_equal(call_two, second(examples))
    # The stream advances: a second call masks differently, as does another seed.
    assert not torch.equal(call_one["reconstruction_mask"], call_two["reconstruction_mask"])
    other = DataCollatorForMusiCoderPreTraining(seed=8)(examples)
    assert not torch.equal(call_one["reconstruction_mask"], other["reconstruction_mask"])


def test_dataloader_workers_get_distinct_reproducible_streams():
    clip = random_clips([200])[0]
    dataset = [{"input_features": clip}] * 4
    collator = DataCollatorForMusiCoderPreTraining(seed=3)
    collator([dataset[0]])  # a generator made in the parent must not be replayed by the forked workers

    def masks():
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=collator)
        return [batch["reconstruction_mask"] for batch in loader]

    first = masks()
    # Batches 0 and 1 come from workers 0 and 1: same input, different streams.
    assert not torch.equal(first[0], first[1])
    for mask_a, mask_b in zip(first, masks(), strict=True):
        torch.testing.assert_close(mask_a, mask_b, rtol=0, atol=0)


def test_without_seed_the_global_rng_is_used():
    examples = [{"input_features": clip} for clip in random_clips([300, 200])]
    collator = DataCollatorForMusiCoderPreTraining()
    torch.manual_seed(11)
    first = collator(examples)
    torch.manual_seed(11)
    assert_batches_equal(first, collator(examples))


def test_numpy_list_and_torch_inputs_give_the_same_batch():
    clips = random_clips([90, 60], dtype=np.float64)
    as_numpy = collate(clips)
    as_list = collate([clip.tolist() for clip in clips])
    as_torch = collate([torch.from_numpy(clip) for clip in clips])
    assert_batches_equal(as_numpy, as_list)
    assert_batches_equal(as_numpy, as_torch)
    assert as_numpy["input_features"].dtype == torch.float32


def test_other_keys_are_ignored_and_np_tensors_can_be_returned():
    examples = [{"input_features": clip, "label": 3, "path": "a.ogg"} for clip in random_clips([50, 40])]
    batch = DataCollatorForMusiCoderPreTraining(seed=0, return_tensors="np")(examples)
    assert isinstance(batch["input_features"], np.ndarray) and batch["input_features"].shape == (2, 50, 324)
    assert batch["reconstruction_mask"].dtype == np.bool_


def test_pad_to_multiple_of():
    batch = collate(random_clips([1292, 10]), pad_to_multiple_of=128)
    assert batch["input_features"].shape[1] == 1408
    assert batch["attention_mask"].sum(dim=1).tolist() == [1292, 10]
    assert not bool(batch["reconstruction_mask"][:, 1292:].any())


def test_examples_with_attention_mask_use_their_valid_frames():
    clips = random_clips([120, 70])
    padded = []
    for clip in clips:
        features = np.full((150, FEATURE_SIZE), 123.0, dtype=np.float32)  # garbage padding must be dropped
        features[: len(clip)] = clip
        padded.append({"input_features": features, "attention_mask": np.arange(150) < len(clip)})
    from_padded = DataCollatorForMusiCoderPreTraining(seed=4)(padded)
    from_unpadded = collate(clips, seed=4)
    assert_batches_equal(from_padded, from_unpadded)
    assert from_padded["input_features"].shape == (2, 120, 324)


@pytest.mark.parametrize(
    "examples, message",
    [
        ([], "empty"),
        ([{"input_features": np.zeros((0, FEATURE_SIZE))}], "0 valid frames"),
        ([{"input_features": np.ones((10, FEATURE_SIZE)), "attention_mask": np.zeros(10)}], "0 valid frames"),
        ([{"input_features": np.ones((10, 300))}], r"\(frames, 324\).*\(10, 300\)"),
        ([{"input_features": np.ones(FEATURE_SIZE)}], r"\(frames, 324\)"),
        ([{"input_features": np.full((10, FEATURE_SIZE), np.nan)}], "NaN or infinite"),
        (
            [{"input_features": np.ones((5, FEATURE_SIZE))}, {"input_features": np.full((4, FEATURE_SIZE), np.inf)}],
            r"\[1\].*NaN or infinite",
        ),
        ([{"features": np.ones((5, FEATURE_SIZE))}], "no 'input_features'"),
        ([{"input_features": np.ones((5, FEATURE_SIZE)), "attention_mask": [0, 1, 1, 1, 1]}], "prefix"),
    ],
)
def test_bad_inputs_raise_clear_errors(examples, message):
    with pytest.raises(ValueError, match=message):
        DataCollatorForMusiCoderPreTraining(seed=0)(examples)


def test_switching_both_objectives_off_is_an_error():
    with pytest.raises(ValueError, match="cfm=True or ccm=True"):
        DataCollatorForMusiCoderPreTraining(cfm=False, ccm=False)


def test_config_is_the_single_source_of_truth():
    config = MusiCoderConfig(cfm_mask_ratio=0.3, ccm_feature_blocks=["log_mel"])
    collator = DataCollatorForMusiCoderPreTraining(config=config, seed=0)
    batch = collator([{"input_features": clip} for clip in random_clips([1292] * 4)])
    cfm_share = batch["reconstruction_mask"].all(dim=-1).double().mean().item()
    assert abs(cfm_share - 0.3) < 0.02
    partially = batch["reconstruction_mask"] & ~batch["reconstruction_mask"].all(dim=-1, keepdim=True)
    assert not bool(partially[..., config.feature_slice("log_cqt")].any())
    assert DataCollatorForMusiCoderPreTraining().config.cfm_mask_ratio == 0.15
