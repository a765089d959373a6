"""Fine-tuning loop, chunked evaluation and the shipped metrics."""

import json

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, List, Value, load_from_disk
from sklearn.metrics import average_precision_score, roc_auc_score
from pretraining_helpers import TINY, structured_clips

from musicoder_hf import MusiCoderConfig, MusiCoderForSequenceClassification
from musicoder_hf.evaluation import aggregate_by_group, compute_metrics, predict_logits
from musicoder_hf.finetuning import FinetuningArguments, evaluate_split, finetune, grid_points

NAMES = ["german", "chinese", "irish"]


def labeled_features(path, multi_label=False):
    def split(count, seed):
        clips = structured_clips(count, seed)
        if multi_label:
            tags = [[i % 3] if i % 2 else [i % 3, (i + 1) % 3] for i in range(count)]
            for clip, tag in zip(clips, tags):
                for t in tag:  # each tag lifts its own band of channels
                    clip[:, 100 * t : 100 * t + 100] += 1.0
            label_feature, labels = {"labels": List(ClassLabel(names=NAMES))}, {"labels": tags}
        else:
            classes = [i % 3 for i in range(count)]
            clips = [c + 0.8 * (k - 1) for c, k in zip(clips, classes)]
            label_feature, labels = {"label": ClassLabel(names=NAMES)}, {"label": classes}
        features = Features({"input_features": Array2D(shape=(None, 324), dtype="float32"),
                             "piece_id": Value("int64"), **label_feature})
        return Dataset.from_dict({"input_features": clips, "piece_id": list(range(count)), **labels}, features)

    DatasetDict({"train": split(36, 0), "validation": split(12, 1), "test": split(12, 2)}).save_to_disk(path)
    return path


@pytest.mark.parametrize("multi_label", [False, True])
def test_finetune_learns_keeps_best_and_writes_metrics(tmp_path, multi_label):
    data = labeled_features(tmp_path / "data", multi_label)
    metrics = finetune(FinetuningArguments(
        data_dir=str(data), output_dir=str(tmp_path / "run"), from_scratch=True, config_overrides=TINY,
        learning_rate=1e-3, num_epochs=4, per_device_train_batch_size=8, cpu=True, max_frames=64,
        grid_overrides="learning_rate=1e-3|1e-6", probe_epochs=0,
    ))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["validation"] == metrics["validation"] and "test" in written
    assert len(written["runs"]) == 2 and written["best_hyperparameters"]["learning_rate"] == 1e-3
    model = MusiCoderForSequenceClassification.from_pretrained(tmp_path / "run" / "best")
    assert [model.config.id2label[i] for i in range(3)] == NAMES
    if multi_label:
        assert model.config.problem_type == "multi_label_classification"
        assert metrics["test"]["roc_auc_macro"] > 0.8
    else:
        assert metrics["metric_for_best_model"] == "accuracy"
        assert metrics["test"]["accuracy"] > 0.6  # chance is 1/3
    assert not any(p.name.startswith("run-") for p in (tmp_path / "run").rglob("*"))  # only one model kept


def test_table4_grid_has_the_papers_54_settings():
    points = grid_points(FinetuningArguments(data_dir="-", output_dir="-", grid=True))
    assert len(points) == 54
    assert {p["learning_rate"] for p in points} == {2e-5, 3e-5, 5e-5}
    assert {p["per_device_train_batch_size"] for p in points} == {16, 24, 32}


def test_predict_logits_is_the_models_forward_on_each_whole_clip():
    """Evaluation scores a clip as `model(clip)` does: a clip longer than the window is read in windows by the model,
    and the clips of a padded batch keep their own logits."""
    torch.manual_seed(0)
    model = MusiCoderForSequenceClassification(MusiCoderConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, num_labels=3,
        max_position_embeddings=64, classifier_pooling="mean_std")).eval()
    clips = [torch.randn(150, 324), torch.randn(20, 324), torch.randn(64, 324)]
    logits = predict_logits(model, clips, batch_size=2)
    for clip, row in zip(clips, logits):
        with torch.no_grad():
            np.testing.assert_allclose(row, model(clip[None]).logits[0].numpy(), atol=1e-5)


def test_metrics_match_sklearn_and_groups_average():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((40, 4))
    multi_hot = (rng.random((40, 4)) > 0.6).astype(int)
    metrics = compute_metrics(logits, multi_hot, "multi_label_classification")
    scores = 1 / (1 + np.exp(-logits))
    assert metrics["roc_auc_macro"] == pytest.approx(roc_auc_score(multi_hot, scores, average="macro"))
    assert metrics["pr_auc_macro"] == pytest.approx(average_precision_score(multi_hot, scores, average="macro"))
    labels = rng.integers(0, 4, 40)
    assert compute_metrics(logits, labels, "single_label_classification")["accuracy"] == pytest.approx(
        np.mean(logits.argmax(1) == labels))
    groups, means = aggregate_by_group(np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]]), ["a", "b", "a"])
    assert groups == ["a", "b"] and means.tolist() == [[3.0, 2.5], [3.0, 2.0]]


def test_checkpoints_ship_the_feature_extractor_of_their_frames(tmp_path, caplog):
    """Pre-training and fine-tuning save the extractor recorded beside the featurised frames (`save_featurised`), not
    a default one; fine-tuning on frames of another extractor than the pre-trained one's says so."""
    from datasets import load_from_disk
    from pretraining_helpers import arguments, save_features_dataset

    from musicoder_hf import MusiCoderFeatureExtractor
    from musicoder_hf.data.features import save_featurised
    from musicoder_hf.pretraining import pretrain

    corpus_extractor = MusiCoderFeatureExtractor(log_eps=1e-8)
    corpus = save_features_dataset(tmp_path / "corpus")
    save_featurised(load_from_disk(corpus), tmp_path / "corpus_recorded", corpus_extractor)
    pretrain(arguments(tmp_path / "corpus_recorded", tmp_path / "pretrain", max_steps=2))
    shipped = MusiCoderFeatureExtractor.from_pretrained(tmp_path / "pretrain" / "final")
    assert shipped.to_dict() == corpus_extractor.to_dict()

    task_extractor = MusiCoderFeatureExtractor(log_eps=1e-6)
    data = labeled_features(tmp_path / "data")
    save_featurised(load_from_disk(data), tmp_path / "data_recorded", task_extractor)
    with caplog.at_level("WARNING", logger="musicoder_hf.finetuning"):
        finetune(FinetuningArguments(
            data_dir=str(tmp_path / "data_recorded"), output_dir=str(tmp_path / "run"),
            model_name_or_path=str(tmp_path / "pretrain" / "final"), num_epochs=1, probe_epochs=0, cpu=True,
            max_frames=64,
        ))
    assert MusiCoderFeatureExtractor.from_pretrained(tmp_path / "run" / "best").to_dict() == task_extractor.to_dict()
    assert "another feature extractor" in caplog.text


@pytest.fixture(scope="module")
def pretrained_folder(tmp_path_factory):
    from musicoder_hf import MusiCoderFeatureExtractor, MusiCoderForPreTraining

    folder = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    config = MusiCoderConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    MusiCoderForPreTraining(config).save_pretrained(folder)
    MusiCoderFeatureExtractor().save_pretrained(folder)
    return folder


def encoder_and_head(folder):
    model = MusiCoderForSequenceClassification.from_pretrained(folder)
    encoder = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    return encoder, model.classifier.weight.detach().clone()


@pytest.mark.parametrize(("learning_rate", "encoder_moves"), [(1e-3, True), (0.0, False)])
def test_probe_then_whole_model(tmp_path, pretrained_folder, learning_rate, encoder_moves):
    """The default protocol: the head is fitted on the frozen encoder (epoch 0 of the history, `stage` "probe"), then
    the whole model trains from that head; the best of all epochs on validation, the probe included, is kept."""
    data = labeled_features(tmp_path / "data")
    pretrained, _ = encoder_and_head(pretrained_folder)
    metrics = finetune(FinetuningArguments(
        data_dir=str(data), output_dir=str(tmp_path / "run"), model_name_or_path=str(pretrained_folder),
        num_epochs=2, probe_epochs=30, head_learning_rate=1e-2, learning_rate=learning_rate, warmup_ratio=0.0,
        dropout=0.0, cpu=True, max_frames=64,
    ))
    history = metrics["runs"][0]["history"]
    assert [r["stage"] for r in history] == ["probe"] * 30 + ["finetune"] * 2
    probe_best = max(r["validation_accuracy"] for r in history[:30])
    assert probe_best > 0.6  # chance is 1/3: the head learned on the frozen encoder
    # the whole model starts from the probe's head: its first epoch is not back at chance
    assert history[30]["validation_accuracy"] > 0.5
    assert metrics["validation"]["accuracy"] == max(probe_best, *(r["validation_accuracy"] for r in history[30:]))
    encoder, head = encoder_and_head(tmp_path / "run" / "best")
    if metrics["best_epoch"] > 0:
        assert any(not torch.equal(encoder[key], pretrained[key]) for key in pretrained) == encoder_moves
    else:  # the probe won: the saved encoder is the pre-trained one
        assert all(torch.equal(encoder[key], pretrained[key]) for key in pretrained)
    set_seed(0)  # the head `finetune` starts from (seed 0): it has learned
    fresh = MusiCoderForSequenceClassification.from_pretrained(pretrained_folder, num_labels=3).classifier.weight
    assert fresh.shape == head.shape and not torch.equal(head, fresh.detach())


def test_probe_that_wins_is_the_model_kept(tmp_path, pretrained_folder):
    """Fine-tuning at a learning rate that wrecks the model never replaces a better probe."""
    data = labeled_features(tmp_path / "data")
    pretrained, _ = encoder_and_head(pretrained_folder)
    metrics = finetune(FinetuningArguments(
        data_dir=str(data), output_dir=str(tmp_path / "run"), model_name_or_path=str(pretrained_folder),
        num_epochs=1, probe_epochs=30, head_learning_rate=1e-2, learning_rate=10.0, warmup_ratio=0.0,
        max_grad_norm=1e6, dropout=0.0, cpu=True, max_frames=64,
    ))
    assert metrics["best_epoch"] == 0 and metrics["validation"]["accuracy"] > 0.6
    encoder, _ = encoder_and_head(tmp_path / "run" / "best")
    assert all(torch.equal(encoder[key], pretrained[key]) for key in pretrained)
    assert metrics["test"]["accuracy"] > 0.6


@pytest.mark.parametrize(("pooling", "weighted"), [("mean", False), ("mean_std", False), ("mean_std", True)])
def test_probe_trains_the_head_on_frozen_embeddings(tmp_path, pretrained_folder, pooling, weighted):
    """`--probe`: the encoder is untouched, the head learns from embeddings pooled once (of the last layer, or of
    the layers mixed by the initial layer weights), and the saved model scores whole clips exactly as the probe did.
    The head's pooling and layer mix default to the checkpoint's config."""
    import shutil

    data = labeled_features(tmp_path / "data")
    pretrained_folder = shutil.copytree(pretrained_folder, tmp_path / "pretrained")
    pretrained, _ = encoder_and_head(pretrained_folder)
    config = MusiCoderConfig.from_pretrained(pretrained_folder)
    config.classifier_pooling, config.use_weighted_layer_sum = pooling, weighted
    config.save_pretrained(pretrained_folder)
    metrics = finetune(FinetuningArguments(
        data_dir=str(data), output_dir=str(tmp_path / "run"), model_name_or_path=str(pretrained_folder), probe=True,
        probe_epochs=60, head_learning_rate=1e-2, cpu=True,
    ))
    encoder, _ = encoder_and_head(tmp_path / "run" / "best")
    assert all(torch.equal(encoder[key], pretrained[key]) for key in pretrained)
    history = metrics["runs"][0]["history"]
    assert len(history) == 60 and {r["stage"] for r in history} == {"probe"} and metrics["best_epoch"] == 0
    assert max(r["validation_accuracy"] for r in history) == metrics["validation"]["accuracy"] > 0.6  # chance: 1/3
    model = MusiCoderForSequenceClassification.from_pretrained(tmp_path / "run" / "best")
    assert model.config.classifier_pooling == pooling and model.config.use_weighted_layer_sum == weighted
    validation = evaluate_split(model, load_from_disk(data)["validation"], "label", 3, False,
                                "single_label_classification", None, 4)
    assert validation == pytest.approx(metrics["validation"], abs=1e-6)  # the probe scored the same logits
    assert metrics["test"]["accuracy"] > 0.6


@pytest.mark.parametrize("weighted", [False, True])
def test_probe_fits_the_head_on_what_the_model_feeds_it(tmp_path, pretrained_folder, weighted):
    """The probe's embeddings of a clip are exactly the input of the classifier in the model's own forward pass: the
    last layer pooled, or, with `use_weighted_layer_sum`, the layers mixed by the current layer weights, then pooled."""
    from musicoder_hf.data.labeled import label_info
    from musicoder_hf.finetuning import fit_head

    data = load_from_disk(labeled_features(tmp_path / "data"))
    model = MusiCoderForSequenceClassification.from_pretrained(
        pretrained_folder, num_labels=3, classifier_pooling="mean_std", use_weighted_layer_sum=weighted).eval()
    if weighted:
        with torch.no_grad():
            model.layer_weights.copy_(torch.linspace(-1.0, 2.0, len(model.layer_weights)))  # far from uniform
    seen = []
    model.classifier.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    args = FinetuningArguments(data_dir="-", output_dir=str(tmp_path / "run"), cpu=True)
    fit_head(args, model, data, label_info(data["train"]), batch_size=8, epochs=1, metric="accuracy")
    probe_validation = seen[-1]  # the last call scores the validation split
    model.eval()
    with torch.no_grad():
        for row, clip in enumerate(data["validation"].with_format("torch")["input_features"][:4]):
            model(clip[None])
            torch.testing.assert_close(seen[-1][0], probe_validation[row], atol=1e-5, rtol=1e-4)


def test_schedule_that_trains_nothing_is_refused_and_the_paper_grid_has_no_probe(tmp_path):
    from musicoder_hf.finetuning import check_schedule

    with pytest.raises(ValueError, match="--probe_epochs of at least 1"):
        check_schedule(FinetuningArguments(data_dir="-", output_dir="-", probe=True, probe_epochs=0))
    with pytest.raises(ValueError, match="--num_epochs must be positive"):  # one grid point of no epochs
        check_schedule(FinetuningArguments(data_dir="-", output_dir="-", grid_overrides="num_epochs=0|10"))
    check_schedule(FinetuningArguments(data_dir="-", output_dir="-", probe=True, num_epochs=0))
    check_schedule(FinetuningArguments(data_dir="-", output_dir="-"))  # the defaults
    data = labeled_features(tmp_path / "data")
    metrics = finetune(FinetuningArguments(
        data_dir=str(data), output_dir=str(tmp_path / "grid"), from_scratch=True,
        config_overrides="hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32",
        grid=True, grid_overrides="per_device_train_batch_size=16,learning_rate=5e-5,num_epochs=2,dropout=0.1",
        cpu=True, max_frames=32,
    ))
    # Table 4's protocol: no probe, one learning rate for the whole model from the first step
    assert metrics["arguments"]["probe_epochs"] == 0
    assert [r["stage"] for r in metrics["runs"][0]["history"]] == ["finetune", "finetune"]


@pytest.mark.parametrize("multi_label", [False, True])
def test_linear_probe_chooses_c_on_validation_and_scores_test(multi_label):
    """`linear_probe`: standardised logistic regression, C chosen on validation only, test scored with that C."""
    from musicoder_hf.evaluation import linear_probe, selection_metric

    rng = np.random.default_rng(0)
    problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    direction = rng.standard_normal((3, 20))
    features, targets = {}, {}
    for split, count in (("train", 90), ("validation", 30), ("test", 30)):
        if multi_label:
            targets[split] = rng.integers(0, 2, size=(count, 3))
            signal = targets[split] @ direction
        else:
            targets[split] = np.arange(count) % 3
            signal = direction[targets[split]]
        # a large, uninformative offset and scale: standardisation must take care of them
        features[split] = 1000.0 + 50.0 * (signal + 1.5 * rng.standard_normal((count, 20)))
    grid = (1e-4, 1e-2, 1.0, 100.0)
    result = linear_probe(features, targets, problem_type, c_values=grid)
    metric = selection_metric(problem_type)
    alone = {c: linear_probe(features, targets, problem_type, c_values=(c,)) for c in grid}
    best = max(alone[c]["validation"][metric] for c in grid)
    assert result["selected"]["value"] == next(c for c in grid if alone[c]["validation"][metric] == best)
    assert result["validation"] == alone[result["selected"]["value"]]["validation"]
    assert result["test"] == alone[result["selected"]["value"]]["test"]  # test is scored, never used to choose
    assert result["test"][metric] > (0.8 if multi_label else 0.7)
    assert np.asarray(result["test_logits"]).shape == (30, 3)
    without_test = linear_probe({s: features[s] for s in ("train", "validation")}, targets, problem_type)
    assert "test" not in without_test and metric in without_test["validation"]
    if not multi_label:  # two classes: scikit-learn gives one score per clip, the probe two logits
        binary = {split: targets[split] < 1 for split in targets}
        result = linear_probe(features, binary, problem_type)
        assert np.asarray(result["test_logits"]).shape == (30, 2) and result["test"]["accuracy"] > 0.7
