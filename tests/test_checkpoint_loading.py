"""Loading rules: safetensors only, and a checkpoint whose config and weights disagree fails with a clear message."""

import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from musicoder_hf import MusiCoderConfig, MusiCoderForPreTraining, MusiCoderForSequenceClassification, MusiCoderModel
from musicoder_hf.modeling_musicoder import MusiCoderPreTrainedModel

MismatchError = MusiCoderPreTrainedModel.CheckpointMismatchError
ALL_CLASSES = (MusiCoderModel, MusiCoderForPreTraining, MusiCoderForSequenceClassification)


def tiny_config(**overrides):
    values = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    values.update(overrides)
    return MusiCoderConfig(**values)


def encoder_state(model):
    """The encoder's weights, keyed without the head model's prefix."""
    return {key: value.clone() for key, value in model.base_model.state_dict().items()}


def assert_same_encoder(a, b):
    a, b = encoder_state(a), encoder_state(b)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def pretraining_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = MusiCoderForPreTraining(tiny_config())
    folder = tmp_path_factory.mktemp("pretraining")
    model.save_pretrained(folder)
    return folder, model


def with_config(source, destination, **config_changes):
    """A copy of a checkpoint folder whose config.json was edited, as a hand-edited or mixed-up upload would be."""
    shutil.copytree(source, destination)
    config = json.loads((destination / "config.json").read_text())
    config.update(config_changes)
    (destination / "config.json").write_text(json.dumps(config))
    return destination


# ----- safetensors only -----


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_save_pretrained_writes_safetensors_only(model_class, tmp_path):
    model_class(tiny_config()).save_pretrained(tmp_path)
    weights = sorted(path.name for path in tmp_path.iterdir() if path.suffix in (".safetensors", ".bin", ".pt"))
    assert weights == ["model.safetensors"]
    with pytest.raises(ValueError, match="safetensors files only"):
        model_class(tiny_config()).save_pretrained(tmp_path / "again", safe_serialization=False)


class _RunsCodeWhenUnpickled:
    """A pickle that creates a file when it is loaded: what an attacker's pytorch_model.bin can do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_folder_with_only_pickled_weights_is_refused_without_unpickling(pretraining_checkpoint, tmp_path):
    source, model = pretraining_checkpoint
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(source / "config.json", folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    for model_class in (*ALL_CLASSES, AutoModel):
        with pytest.raises(OSError, match=r"pytorch_model\.bin.*safetensors files only.*arbitrary code"):
            model_class.from_pretrained(folder)

    marker = tmp_path / "code-ran"
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"musicoder.embeddings.frame_projection.weight": _RunsCodeWhenUnpickled(marker)}, handle)
    with pytest.raises(OSError, match="safetensors files only"):
        MusiCoderForPreTraining.from_pretrained(folder)
    assert not marker.exists()
    with pytest.raises(OSError, match="pickled weights file"):  # a path to the file itself
        MusiCoderForPreTraining.from_pretrained(folder / "pytorch_model.bin")
    assert not marker.exists()


def test_use_safetensors_false_is_refused(pretraining_checkpoint):
    folder, _ = pretraining_checkpoint
    with pytest.raises(ValueError, match="use_safetensors=False is not supported"):
        MusiCoderModel.from_pretrained(folder, use_safetensors=False)


def test_safetensors_is_preferred_over_a_pickle_next_to_it(pretraining_checkpoint, tmp_path):
    source, model = pretraining_checkpoint
    folder = shutil.copytree(source, tmp_path / "both")
    marker = tmp_path / "code-ran"
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump(_RunsCodeWhenUnpickled(marker), handle)
    assert_same_encoder(MusiCoderForPreTraining.from_pretrained(folder), model)
    assert not marker.exists()


# ----- config and weights must agree -----


def test_hidden_size_mismatch_names_the_checkpoint_field_and_shapes(pretraining_checkpoint, tmp_path):
    folder = with_config(pretraining_checkpoint[0], tmp_path / "wrong", hidden_size=64, intermediate_size=128)
    for model_class in ALL_CLASSES:
        for ignore in (False, True):  # ignore_mismatched_sizes is for heads; it never re-initialises the encoder
            with pytest.raises(MismatchError) as caught:
                model_class.from_pretrained(folder, ignore_mismatched_sizes=ignore)
            message = str(caught.value)
            assert str(folder) in message
            assert "hidden_size: the config says 64, the checkpoint's weights say 32" in message
            assert "intermediate_size: the config says 128, the checkpoint's weights say 64" in message
            assert "embeddings.frame_projection.weight (checkpoint [32, 324], config [64, 324])" in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, RuntimeError)


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_more_layers_in_config_than_in_weights_is_not_silently_random(model_class, pretraining_checkpoint, tmp_path):
    # transformers alone would load this with a warning and layers 2-3 initialised at random.
    folder = with_config(pretraining_checkpoint[0], tmp_path / "deeper", num_hidden_layers=4)
    with pytest.raises(MismatchError) as caught:
        model_class.from_pretrained(folder, ignore_mismatched_sizes=True)
    message = str(caught.value)
    assert str(folder) in message
    assert "num_hidden_layers: the config says 4, the checkpoint's weights hold 2 layer(s)" in message
    assert "Missing from the checkpoint (32 tensors)" in message
    assert "layers.2.attention.k_proj.bias" in message
    assert "layers.0." not in message


@pytest.mark.parametrize("model_class", ALL_CLASSES)
def test_fewer_layers_in_config_than_in_weights_is_refused(model_class, pretraining_checkpoint):
    folder, _ = pretraining_checkpoint
    with pytest.raises(MismatchError) as caught:
        model_class.from_pretrained(folder, num_hidden_layers=1)  # a config override at load time counts too
    assert "num_hidden_layers: the config says 1, the checkpoint's weights hold 2 layer(s)" in str(caught.value)
    assert "In the checkpoint but not in the config's model (16 tensors)" in str(caught.value)


def test_checkpoint_missing_one_encoder_tensor_is_refused(pretraining_checkpoint, tmp_path):
    folder = shutil.copytree(pretraining_checkpoint[0], tmp_path / "damaged")
    weights = load_file(folder / "model.safetensors")
    del weights["musicoder.layers.1.feed_forward.fc2.weight"]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(MismatchError, match=r"Missing from the checkpoint \(1 tensors\): musicoder\.layers\.1\.feed"):
        MusiCoderForPreTraining.from_pretrained(folder)


# ----- what must keep working -----


def test_classifier_from_pretraining_checkpoint_gets_a_new_head(pretraining_checkpoint):
    folder, pretrained = pretraining_checkpoint
    for weighted in (False, True):
        model, info = MusiCoderForSequenceClassification.from_pretrained(
            folder, num_labels=7, use_weighted_layer_sum=weighted, output_loading_info=True
        )
        expected_missing = {"classifier.weight", "classifier.bias"} | ({"layer_weights"} if weighted else set())
        assert info["missing_keys"] == expected_missing
        assert info["unexpected_keys"] == set()  # the reconstruction head is expected to be left behind
        assert model.classifier.out_features == 7
        assert_same_encoder(model, pretrained)


def test_base_and_pretraining_models_load_each_others_checkpoints(pretraining_checkpoint, tmp_path):
    folder, pretrained = pretraining_checkpoint
    base, info = MusiCoderModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert_same_encoder(base, pretrained)

    base.save_pretrained(tmp_path / "base")
    again, info = MusiCoderForPreTraining.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["missing_keys"] and all(key.startswith("reconstruction_head.") for key in info["missing_keys"])
    assert_same_encoder(again, pretrained)


def test_new_label_count_needs_ignore_mismatched_sizes(tmp_path):
    classifier = MusiCoderForSequenceClassification(tiny_config(num_labels=5))
    classifier.save_pretrained(tmp_path)
    with pytest.raises(MismatchError, match="num_labels: the config says 3, the checkpoint's weights say 5") as caught:
        MusiCoderForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert "ignore_mismatched_sizes=True" in str(caught.value)
    model, info = MusiCoderForSequenceClassification.from_pretrained(
        tmp_path, num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert {key for key, _, _ in info["mismatched_keys"]} == {"classifier.weight", "classifier.bias"}
    assert model.classifier.out_features == 3
    assert_same_encoder(model, classifier)
    # Another task's head in the checkpoint is simply not used.
    assert_same_encoder(MusiCoderModel.from_pretrained(tmp_path), classifier)
