"""The paper-table experiment (training/experiments.py) end to end on tiny synthetic data: every row, the same folds
for every row, per-layer probes, and a rerun with the same seed giving the same numbers."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, List, Value, load_from_disk

from musicoder_hf import MusiCoderFeatureExtractor
from training.experiments import (
    MUSICODER_ROWS,
    PROBE_ENCODERS,
    ROWS,
    SCALES,
    ExperimentScale,
    cmvn_temporal_statistics,
    pool_task,
    pooled_statistics,
    run_experiments,
    split_rows,
    write_outputs,
)

SCALE = ExperimentScale(
    name="test", corpus_minutes=0, tunes_per_class=8, instrument_pieces=24,
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
    pretrain_steps=3, pretrain_batch_size=4, pretrain_max_frames=24, pretrain_lr_scale=0.2, pretrain_warmup_steps=2,
    learning_rates=(1e-3, 3e-3), finetune_epochs=1, finetune_batch_size=8, finetune_max_frames=24, dropout=0.1,
    n_folds=2, logistic_c=(0.1, 1.0), svm_c=(1.0,), probe_alphas=(1e-2,), probe_max_iter=30,
)
FOLK_NAMES = ["a", "b", "c"]
TAGS = ["x", "y", "z"]


def frames(rng, offset, num_frames=30):
    """Raw (un-normalised) frames whose per-channel level depends on the class: the hand-crafted features see it."""
    return (rng.normal(size=(num_frames, 324)) + offset).astype(np.float32)


def synthetic_data():
    rng = np.random.default_rng(0)
    raw = Array2D(shape=(None, 324), dtype="float32")
    folk_rows = {"train": [], "validation": [], "test": []}
    for c in range(len(FOLK_NAMES)):
        for k in range(8):
            split = "train" if k < 6 else "validation" if k == 6 else "test"
            folk_rows[split].append({"label": c, "piece_id": f"{c}-{k}", "fold": k % 2,
                                     "input_features": frames(rng, c * np.linspace(-1, 1, 324))})
    folk_features = Features({"label": ClassLabel(names=FOLK_NAMES), "piece_id": Value("string"),
                              "fold": Value("int64"), "input_features": raw})
    folk = DatasetDict({s: Dataset.from_list(r, features=folk_features) for s, r in folk_rows.items()})

    tag_sets = [[0], [1], [2], [0, 1], [1, 2], [0, 2]]
    inst_rows = {"train": [], "validation": [], "test": []}
    for i in range(24):
        split = "train" if i < 12 else "validation" if i < 18 else "test"
        tags = tag_sets[i % 6]
        offset = sum(np.roll(np.linspace(-1, 1, 324), 100 * t) for t in tags)
        inst_rows[split].append({"labels": tags, "piece_id": f"p{i}", "input_features": frames(rng, offset)})
    inst_features = Features({"labels": List(ClassLabel(names=TAGS)), "piece_id": Value("string"),
                              "input_features": raw})
    instruments = DatasetDict({s: Dataset.from_list(r, features=inst_features) for s, r in inst_rows.items()})

    corpus_features = Features({"input_features": raw})
    corpus = DatasetDict({  # un-normalised, like the tasks: each pre-training variant normalises it its own way
        split: Dataset.from_list([{"input_features": frames(rng, 0.0, 40)} for _ in range(n)],
                                 features=corpus_features)
        for split, n in (("train", 12), ("validation", 4))
    })
    return {"corpus": corpus, "folk": folk, "instruments": instruments}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    data = synthetic_data()
    first = run_experiments(data, tmp_path_factory.mktemp("run1"), SCALE, seed=0, command="test")
    # the rerun (fresh folder: pre-training, fine-tuning, probes all redone) covers one task to keep the test short
    second = run_experiments(data, tmp_path_factory.mktemp("run2"), SCALE, seed=0, command="test", tasks=("folk",))
    return data, first, second


def test_every_row_and_probe_layer_is_reported(two_runs, tmp_path):
    _, results, _ = two_runs
    for task in ("folk", "instruments"):
        task_results = results["tasks"][task]
        assert set(task_results["rows"]) == set(ROWS)
        expected_splits = SCALE.n_folds if task == "folk" else 1
        for row in task_results["rows"].values():
            assert len(row["splits"]) == expected_splits
            metrics = ("accuracy",) if task == "folk" else ("roc_auc_macro", "pr_auc_macro")
            for metric in metrics:
                assert row["summary"][metric]["n"] == expected_splits
                assert 0.0 <= row["summary"][metric]["mean"] <= 1.0
        # one probe score per layer: input embedding + each transformer layer, for every encoder
        assert set(task_results["probes"]) == set(PROBE_ENCODERS)
        for summaries in task_results["probes"].values():
            assert len(summaries) == SCALE.num_hidden_layers + 1
    # the hand-crafted baseline sees the class-dependent channel levels: far above chance (1/3)
    assert results["tasks"]["folk"]["rows"]["handcrafted_logreg"]["summary"]["accuracy"]["mean"] > 0.8
    # every MusiCoder row searched the same grid with the same budget
    for key in MUSICODER_ROWS:
        for result in results["tasks"]["folk"]["rows"][key]["splits"].values():
            assert [h["learning_rate"] for h in result["history"]] == list(SCALE.learning_rates)
            assert all(len(h["epochs"]) == SCALE.finetune_epochs for h in result["history"])
    written = write_outputs(results, tmp_path, tmp_path / "cards")
    table = (tmp_path / "cards" / "paper_results.md").read_text()
    assert all(title in table for title in ROWS.values())
    assert (tmp_path / "cards" / "paper_layer_probe.png").stat().st_size > 1000
    assert written["table"].endswith("paper_results.md")
    assert "## Normalisation and pooling" in table
    json.dumps(results)  # results.json is plain JSON


def test_each_encoder_gets_the_frames_normalised_as_in_its_pretraining(two_runs, tmp_path):
    """The dataset-normalisation variant pre-trains on frames standardised with the corpus's training-split
    statistics, ships that extractor, and its rows are fine-tuned on task frames standardised the same way; the
    paper's variants see per-clip CMVN."""
    from musicoder_hf.data.features import feature_statistics

    data, results, _ = two_runs
    run_dir = Path(results["output_dir"])
    shipped = MusiCoderFeatureExtractor.from_pretrained(run_dir / "pretrain_cfm_ccm_dataset" / "final")
    expected = feature_statistics(data["corpus"]["train"])
    assert shipped.normalization == "dataset"
    np.testing.assert_allclose(shipped.feature_mean, expected["feature_mean"], rtol=1e-6)
    assert MusiCoderFeatureExtractor.from_pretrained(run_dir / "pretrain_cfm_ccm" / "final").normalization == "clip"
    pooled = pool_task(data["folk"])
    first = np.asarray(pooled[0]["input_features"], dtype=np.float64)
    for normalization, reference in (
        ("dataset", (first - np.asarray(shipped.feature_mean)) / np.asarray(shipped.feature_std)),
        ("clip", MusiCoderFeatureExtractor.cmvn(first)),
    ):
        saved = load_from_disk(str(run_dir / "features" / f"folk_{normalization}"))
        np.testing.assert_allclose(np.asarray(saved[0]["input_features"]), reference, rtol=1e-4, atol=1e-4)
    # the 2 x 2 of normalisation and pooling is reported with its paired comparisons
    for task in ("folk", "instruments"):
        assert {"cfm_ccm_dataset|cfm_ccm", "cfm_ccm_dataset_mean_std|cfm_ccm_dataset"} <= \
            set(results["comparisons"][task])


def test_folds_are_disjoint_and_identical_for_every_row(two_runs):
    data, results, _ = two_runs
    folk = results["tasks"]["folk"]
    num_clips = sum(len(split) for split in data["folk"].values())
    test_rows = []
    for name, rows in folk["splits"].items():
        parts = [set(rows[p]) for p in ("train", "validation", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set().union(*parts) == set(range(num_clips))
        test_rows += rows["test"]
        for row in folk["rows"].values():  # same test clips, in the same order, for every row
            assert len(row["splits"][name]["test_logits"]) == len(rows["test"])
    assert sorted(test_rows) == list(range(num_clips))  # each clip is tested exactly once over the folds
    # a fold's test pieces never appear in its training data (grouped by piece)
    pooled = pool_task(data["folk"])
    pieces = pooled["piece_id"]
    for rows in folk["splits"].values():
        assert not {pieces[i] for i in rows["train"]} & {pieces[i] for i in rows["test"]}
    # the splits are a function of the data and the seed
    again, _ = split_rows(data["folk"], True, SCALE.n_folds, seed=0)
    assert {name: rows for name, rows in again} == folk["splits"]


def test_rerun_with_the_same_seed_gives_the_same_numbers(two_runs):
    _, first, second = two_runs
    assert first["pretraining"]["cfm_ccm"]["final_loss"] == second["pretraining"]["cfm_ccm"]["final_loss"]
    for key in ROWS:
        a, b = first["tasks"]["folk"]["rows"][key], second["tasks"]["folk"]["rows"][key]
        assert a["summary"] == b["summary"], key
        for split in a["splits"]:
            np.testing.assert_array_equal(a["splits"][split]["test_logits"], b["splits"][split]["test_logits"])
    assert first["tasks"]["folk"]["probes"] == second["tasks"]["folk"]["probes"]


def test_handcrafted_features_pool_the_raw_frames_and_cmvn_matches_the_extractor():
    rng = np.random.default_rng(1)
    waveform = (0.1 * rng.normal(size=44100)).astype(np.float32)
    extractor = MusiCoderFeatureExtractor(do_normalize=False)
    raw = extractor(waveform, sampling_rate=44100, padding=False)["input_features"][0]
    normalised = MusiCoderFeatureExtractor()(waveform, sampling_rate=44100, padding=False)["input_features"][0]
    # the default (torch) backend normalises on its device in float32: equal to float32 round-off
    np.testing.assert_allclose(MusiCoderFeatureExtractor.cmvn(raw), normalised, rtol=1e-5, atol=1e-5)
    statistics = pooled_statistics(Dataset.from_dict({"input_features": [raw]}))
    np.testing.assert_allclose(statistics[0, :324], raw.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(statistics[0, 324:], raw.std(axis=0), rtol=1e-4, atol=1e-5)
    # after CMVN the same pooling is constant: why the baseline must use the raw frames
    assert np.allclose(normalised.mean(axis=0), 0, atol=1e-4)
    # the CMVN row summarises the normalised frames the model sees
    cmvn_statistics = pooled_statistics(Dataset.from_dict({"input_features": [raw]}), cmvn_temporal_statistics)[0]
    assert cmvn_statistics.shape == (4 * 324,)
    np.testing.assert_allclose(cmvn_statistics[324:648], np.median(normalised, axis=0), atol=1e-4)
    np.testing.assert_allclose(cmvn_statistics[972:], np.abs(np.diff(normalised, axis=0)).mean(axis=0), atol=1e-4)


def test_default_scale_is_the_same_for_every_musicoder_row():
    scale = SCALES["small"]
    assert scale.n_folds == 10 and scale.probe_hidden_units == 512
    assert len(scale.learning_rates) >= 1


def test_pretrainings_are_reused_only_for_the_same_corpus_and_never_resumed_from_another(tmp_path):
    from safetensors.torch import load_file

    from training.experiments import PRETRAINING_VARIANTS, JobRunner, pretrain_variants

    corpus = synthetic_data()["corpus"]
    corpus_dir, output_dir = tmp_path / "corpus", tmp_path / "runs"
    corpus.save_to_disk(corpus_dir)

    def pretrain(out=output_dir):  # both normalisations read the same folder here: only reuse is under test
        with JobRunner(1) as runner:
            return pretrain_variants({"clip": corpus_dir, "dataset": corpus_dir}, out, SCALE, seed=0, runner=runner)

    first = pretrain()
    assert not any(summary.get("reused") for summary in first.values())
    assert all(summary.get("reused") for summary in pretrain().values())

    # Other clips in the same folder: every variant is pre-trained again from scratch, not resumed from the
    # checkpoints of the old corpus, so it equals a pre-training on the new corpus in an empty folder.
    rng = np.random.default_rng(1)
    changed = corpus.map(lambda row: {"input_features": MusiCoderFeatureExtractor.cmvn(frames(rng, 0.0, 40))})
    changed.save_to_disk(tmp_path / "changed")
    shutil.rmtree(corpus_dir)
    shutil.copytree(tmp_path / "changed", corpus_dir)
    again = pretrain()
    assert not any(summary.get("reused") for summary in again.values())
    reference = pretrain(tmp_path / "empty")
    for variant in PRETRAINING_VARIANTS:
        weights = load_file(output_dir / f"pretrain_{variant}" / "final" / "model.safetensors")
        expected = load_file(tmp_path / "empty" / f"pretrain_{variant}" / "final" / "model.safetensors")
        assert all(torch.equal(weights[k], expected[k]) for k in expected)
        assert again[variant]["final_loss"] == reference[variant]["final_loss"] != first[variant]["final_loss"]


def test_shipped_checkpoint_rows_compare_probes_poolings_random_init_and_handcrafted(tmp_path):
    """`evaluate_shipped` (the rows `make paper` adds for pretrained/musicoder-small) on a tiny checkpoint with a
    dataset-normalising extractor: every layer and all layers for both poolings and a random init of the same
    architecture, the fine-tuned row, paired comparisons of the same names on both tasks, and the card's entries."""
    from musicoder_hf import MusiCoderConfig, MusiCoderModel
    from training.experiments import evaluate_shipped, parse_shipped_probe_key, summarise_shipped

    data = synthetic_data()
    model_dir = tmp_path / "shipped"
    torch.manual_seed(123)  # not the seed of the random-init rows
    MusiCoderModel(MusiCoderConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                   classifier_pooling="mean_std")).save_pretrained(model_dir)
    MusiCoderFeatureExtractor(normalization="dataset", feature_mean=[0.0] * 324, feature_std=[2.0] * 324
                              ).save_pretrained(model_dir)
    scale = SCALE.replace(n_folds=2)
    results = evaluate_shipped(data, model_dir, tmp_path / "run", scale, seed=0, finetune_rows=True)
    for task in ("folk", "instruments"):
        rows = results["tasks"][task]["rows"]
        for encoder in ("pretrained", "random"):
            for pooling in ("mean", "mean_std"):
                expected = {f"{encoder}_{pooling}_layer{k}" for k in range(3)} | {f"{encoder}_{pooling}_all"}
                assert expected <= set(rows)
        assert {"handcrafted_logreg", "handcrafted_cmvn_logreg", "handcrafted_both_logreg", "finetuned"} <= set(rows)
        for row in rows.values():
            assert len(row["splits"]) == (2 if task == "folk" else 1)
        # pre-trained and random-init embeddings differ (the checkpoint's weights are used)
        assert rows["pretrained_mean_all"]["splits"] != rows["random_mean_all"]["splits"]
    assert list(results["comparisons"]["folk"]) == list(results["comparisons"]["instruments"])
    assert "fine-tuned vs best hand-crafted" in results["comparisons"]["folk"]
    assert "p_value" in results["comparisons"]["folk"]["best probe (mean_std) vs best hand-crafted"]
    assert "roc_auc_macro" in results["comparisons"]["instruments"]["best probe (mean_std) vs best hand-crafted"]
    assert {(e["task"], e["metric"]) for e in results["card_results"]} == {
        ("folk", "accuracy"), ("instruments", "roc_auc_macro"), ("instruments", "pr_auc_macro")}
    assert "pre-trained, mean_std, all layers" in results["markdown"]
    assert json.loads((tmp_path / "run" / "shipped_results.json").read_text())["markdown"] == results["markdown"]
    for task in ("folk", "instruments"):  # the best probe of each pooling is one of that pooling's rows
        for pooling, key in results["tasks"][task]["chosen_probes"].items():
            assert parse_shipped_probe_key(key)[:2] == ("pretrained", pooling)
    # the summary is a function of the saved rows; a rerun with the same checkpoint, data and settings reuses them
    saved = json.loads((tmp_path / "run" / "shipped_results.json").read_text())
    expected = json.loads(json.dumps(results["comparisons"], default=float))
    assert summarise_shipped(saved, seed=0)["comparisons"] == expected
    assert evaluate_shipped(data, model_dir, tmp_path / "run", scale, seed=0, finetune_rows=True) == saved


def test_normalised_corpora_are_reused_for_the_same_frames_and_rewritten_for_others(tmp_path):
    from training.experiments import normalised_corpora

    corpus = synthetic_data()["corpus"]
    folders, extractors = normalised_corpora(corpus, tmp_path)
    assert set(folders) == {"clip", "dataset"}
    written = {n: (f / "dataset_dict.json").stat().st_mtime_ns for n, f in folders.items()}
    again, _ = normalised_corpora(corpus, tmp_path)  # the same frames: nothing is rewritten
    assert again == folders
    assert {n: (f / "dataset_dict.json").stat().st_mtime_ns for n, f in folders.items()} == written
    normalised = load_from_disk(folders["dataset"])["train"].with_format("numpy")["input_features"][0]
    np.testing.assert_allclose(normalised, extractors["dataset"].normalize(
        [corpus["train"].with_format("numpy")["input_features"][0]])[0], atol=1e-5)

    changed = corpus.map(lambda row: {"input_features": np.asarray(row["input_features"]) + 1.0})
    folders, extractors = normalised_corpora(changed, tmp_path)  # other frames: both folders are rewritten
    assert all((f / "dataset_dict.json").stat().st_mtime_ns != written[n] for n, f in folders.items())
    normalised = load_from_disk(folders["dataset"])["train"].with_format("numpy")["input_features"][0]
    np.testing.assert_allclose(normalised, extractors["dataset"].normalize(
        [changed["train"].with_format("numpy")["input_features"][0]])[0], atol=1e-5)
