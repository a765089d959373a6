"""Publishing: the Hub-ready folder, its model card, and exactly what push_to_hub would upload (network mocked)."""

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import EntryNotFoundError
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

from musicoder_hf import MusiCoderConfig, MusiCoderFeatureExtractor, MusiCoderForSequenceClassification
from musicoder_hf.hub import prepare_hub_folder, push_folder_to_hub

EXPECTED_FILES = {
    "README.md",
    "config.json",
    "configuration_musicoder.py",
    "modeling_musicoder.py",
    "feature_extraction_musicoder.py",
    "feature_extraction_musicoder_torch.py",
    "model.safetensors",
    "preprocessor_config.json",
    "eval_results.json",
}


@pytest.fixture
def trained(tmp_path):
    config = MusiCoderConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
        id2label={0: "german", 1: "irish"}, label2id={"german": 0, "irish": 1},
    )
    model = MusiCoderForSequenceClassification(config)
    model.save_pretrained(tmp_path / "best")
    MusiCoderFeatureExtractor().save_pretrained(tmp_path / "best")
    metrics = {
        "validation": {"accuracy": 0.8, "roc_auc_macro": 0.9, "pr_auc_macro": 0.85},
        "test": {"accuracy": 0.75, "roc_auc_macro": 0.88, "pr_auc_macro": 0.81},
        "best_hyperparameters": {"learning_rate": 3e-5}, "metric_for_best_model": "accuracy", "best_epoch": 2,
        "initialisation": "runs/pretrain/final",
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path, model, metrics


def test_hub_folder_has_exactly_the_files_and_reloads(trained):
    root, model, metrics = trained
    folder = prepare_hub_folder(root / "best", root / "hub", "someone/musicoder-folk",
                                metrics_file=root / "metrics.json", dataset_name="musicoder-folk-tradition")
    assert {path.name for path in folder.iterdir()} == EXPECTED_FILES
    reloaded = AutoModelForAudioClassification.from_pretrained(folder)
    assert type(reloaded) is MusiCoderForSequenceClassification
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    assert type(AutoFeatureExtractor.from_pretrained(folder)) is MusiCoderFeatureExtractor

    front_matter = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    results = front_matter["model-index"][0]["results"][0]
    assert results["dataset"] == {"name": "musicoder-folk-tradition", "type": "musicoder-folk-tradition", "split": "test"}
    assert {m["type"]: m["value"] for m in results["metrics"]} == metrics["test"]
    assert front_matter["pipeline_tag"] == "audio-classification"
    assert "german, irish" in (folder / "README.md").read_text()


def test_push_uploads_the_folder_through_push_to_hub(trained):
    root, _, _ = trained
    folder = prepare_hub_folder(root / "best", root / "hub", "someone/musicoder-folk", metrics_file=root / "metrics.json")
    commits = []

    cards = []

    def fake_create_commit(self, repo_id, operations, **kwargs):
        commits.append((repo_id, sorted(op.path_in_repo for op in operations)))
        for op in operations:  # files live in temporary folders: read them now
            if op.path_in_repo == "README.md":
                cards.append(open(op.path_or_fileobj).read())
        return mock.Mock(commit_url="https://hub/commit")

    def fake_create_repo(self, repo_id, **kwargs):
        return mock.Mock(repo_id=repo_id)

    def no_remote_card(*args, **kwargs):  # a new repo has no card yet
        raise EntryNotFoundError("no README.md")

    with mock.patch.object(HfApi, "create_commit", fake_create_commit), \
         mock.patch.object(HfApi, "create_repo", fake_create_repo), \
         mock.patch.object(HfApi, "create_branch", mock.Mock()), \
         mock.patch.object(ModelCard, "load", side_effect=no_remote_card), \
         mock.patch.object(ModelCard, "validate", mock.Mock()):  # validation is an HTTP call to the Hub
        push_folder_to_hub(folder, "someone/musicoder-folk")

    assert all(repo == "someone/musicoder-folk" for repo, _ in commits)
    uploaded = {path for _, paths in commits for path in paths}
    assert uploaded == EXPECTED_FILES
    # The last README.md uploaded is our card (push_to_hub of the model writes a default one first).
    assert cards[-1] == (folder / "README.md").read_text()
    assert "model-index" in cards[-1]


def test_the_card_template_ships_inside_the_package():
    import musicoder_hf
    from musicoder_hf.hub import DEFAULT_TEMPLATE

    assert DEFAULT_TEMPLATE.is_file()
    assert DEFAULT_TEMPLATE.resolve().is_relative_to(Path(musicoder_hf.__file__).resolve().parent)


def test_push_script_writes_the_folder_or_names_the_problem(trained, capsys):
    from training.push import main

    root, _, _ = trained
    argv = ["--model_dir", str(root / "best"), "--output_dir", str(root / "hub"), "--repo_id",
            "someone/musicoder-folk", "--metrics_file", str(root / "metrics.json")]
    assert main(argv) == 0
    assert {path.name for path in (root / "hub").iterdir()} == EXPECTED_FILES
    with pytest.raises(SystemExit) as stop:  # no --model_dir
        main(["--repo_id", "someone/x", "--output_dir", str(root / "hub")])
    assert stop.value.code == 2
    assert "--model_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["--model_dir", str(root / "missing"), "--output_dir", str(root / "hub2"), "--repo_id", "someone/x"])
    assert str(stop.value.code).startswith("push: error:") and "\n" not in str(stop.value.code)
