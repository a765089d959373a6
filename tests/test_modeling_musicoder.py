"""MusiCoder model tests: transformers' own conformance suite plus the paper-specific behaviour."""

import contextlib
import tempfile
import unittest
import unittest.mock

import pytest
import safetensors.torch
import torch
from transformers import AutoModel, AutoModelForAudioClassification, AutoModelForPreTraining
from transformers_tests.test_configuration_common import ConfigTester
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor

from musicoder_hf import (
    MusiCoderConfig,
    MusiCoderForPreTraining,
    MusiCoderForSequenceClassification,
    MusiCoderModel,
)
from musicoder_hf.modeling_musicoder import (
    MusiCoderPreTrainedModel,
    masked_huber_loss,
    sinusoidal_position_table,
)


class MusiCoderModelTester:
    def __init__(
        self,
        parent,
        batch_size=3,
        seq_length=24,
        feature_size=324,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=3,
        is_training=True,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.feature_size = feature_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_labels = num_labels
        self.is_training = is_training

    def get_config(self):
        return MusiCoderConfig(
            feature_size=self.feature_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=64,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs(self):
        input_features = floats_tensor([self.batch_size, self.seq_length, self.feature_size])
        attention_mask = torch.ones(self.batch_size, self.seq_length, dtype=torch.long)
        attention_mask[0, self.seq_length // 2 :] = 0  # a padded example, so every test sees real padding
        return self.get_config(), input_features, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, input_features, attention_mask = self.prepare_config_and_inputs()
        return config, {"input_features": input_features, "attention_mask": attention_mask}


class MusiCoderModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (MusiCoderModel, MusiCoderForPreTraining, MusiCoderForSequenceClassification)
    test_resize_embeddings = False
    test_torch_exportable = False

    def setUp(self):
        self.model_tester = MusiCoderModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=MusiCoderConfig, has_text_modality=False, hidden_size=36, num_attention_heads=4
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        # Our classes are registered at run time, so the mixin's static name tables do not know which labels they take.
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is MusiCoderForSequenceClassification:
            inputs["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
        elif return_labels and model_class is MusiCoderForPreTraining:
            inputs["labels"] = inputs["input_features"].clone()
            inputs["reconstruction_mask"] = inputs["attention_mask"].bool().unsqueeze(-1).expand_as(inputs["labels"])
        return inputs

    @contextlib.contextmanager
    def _only_classes_with_a_loss(self):
        # The mixin skips base models by looking them up in transformers' static MODEL_MAPPING_NAMES table.
        all_model_classes = self.all_model_classes
        self.all_model_classes = (MusiCoderForPreTraining, MusiCoderForSequenceClassification)
        try:
            yield
        finally:
            self.all_model_classes = all_model_classes

    def test_training(self):
        with self._only_classes_with_a_loss():
            super().test_training()

    def test_training_gradient_checkpointing(self):
        with self._only_classes_with_a_loss():
            super().test_training_gradient_checkpointing()

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        with self._only_classes_with_a_loss():
            super().test_training_gradient_checkpointing_use_reentrant_false()

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        with self._only_classes_with_a_loss():
            super().test_training_gradient_checkpointing_use_reentrant_true()

    def test_model_get_set_embeddings(self):
        # The mixin expects a token embedding table; MusiCoder's input "embedding" is the frame projection.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            projection = model.get_input_embeddings()
            self.assertIsInstance(projection, torch.nn.Linear)
            self.assertEqual((projection.in_features, projection.out_features), (324, config.hidden_size))
            self.assertIs(projection, model.base_model.embeddings.frame_projection)
            replacement = torch.nn.Linear(324, config.hidden_size)
            model.set_input_embeddings(replacement)
            self.assertIs(model.get_input_embeddings(), replacement)

    def test_disk_offload_bin(self):
        # The mixin loads pickled .bin weights (use_safetensors=False); MusiCoder refuses them by design.
        self.skipTest(reason="MusiCoder loads safetensors only (test_checkpoint_loading.py checks .bin is refused)")

    def test_model_weights_reload_no_missing_tied_weights(self):
        # The mixin loads a checkpoint holding none of the weights, which MusiCoder refuses (the config's encoder is
        # missing from it): check that, then run the mixin's own check of the reported missing keys without the guard.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        with tempfile.TemporaryDirectory() as folder:
            MusiCoderModel(config).save_pretrained(folder)
            safetensors.torch.save_file({"tensor": torch.tensor([1, 2])}, f"{folder}/model.safetensors")
            with pytest.raises(MusiCoderModel.CheckpointMismatchError, match="Missing from the checkpoint"):
                MusiCoderModel.from_pretrained(folder)
        with unittest.mock.patch.object(MusiCoderPreTrainedModel, "_check_weights_match_config", lambda *args: None):
            super().test_model_weights_reload_no_missing_tied_weights()


def tiny_config(**overrides):
    values = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    values.update(overrides)
    return MusiCoderConfig(**values)


def padded_batch(lengths, num_frames=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    num_frames = num_frames or max(lengths)
    features = torch.randn(len(lengths), num_frames, 324, generator=generator)
    attention_mask = torch.zeros(len(lengths), num_frames, dtype=torch.long)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
        features[row, length:] = 0.0
    return features, attention_mask


def encoder_parameter_count(layers, hidden, intermediate, features=324):
    attention = 4 * (hidden * hidden + hidden)
    feed_forward = hidden * intermediate + intermediate + intermediate * hidden + hidden
    layer_norms = 2 * 2 * hidden
    embeddings = features * hidden + hidden + 2 * hidden  # frame projection + LayerNorm
    return embeddings + layers * (attention + feed_forward + layer_norms)


def reconstruction_head_parameter_count(hidden, features=324):
    return hidden * hidden + hidden + 2 * hidden + hidden * features + features


class TestPresets:
    def test_base_matches_paper_parameter_count(self):
        config = MusiCoderConfig.from_preset("musicoder-base")
        with torch.device("meta"):
            model = MusiCoderForPreTraining(config)
        total = model.num_parameters()
        # The paper's 29.3M counts the encoder with its reconstruction head (the encoder alone is 28.6M).
        assert abs(total - 29.3e6) / 29.3e6 < 0.01, total
        assert model.musicoder.num_parameters() == encoder_parameter_count(4, 768, 3072)
        assert total == encoder_parameter_count(4, 768, 3072) + reconstruction_head_parameter_count(768)

    def test_large_count_is_the_standard_4h_transformer(self):
        config = MusiCoderConfig.from_preset("musicoder-large")
        assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (8, 1024, 16)
        with torch.device("meta"):
            model = MusiCoderForPreTraining(config)
        total = model.num_parameters()
        print(f"musicoder-large: {total / 1e6:.2f}M parameters (paper: 93.1M)")
        assert total == encoder_parameter_count(8, 1024, 4096) + reconstruction_head_parameter_count(1024)

    def test_unknown_preset_and_overrides(self):
        assert MusiCoderConfig.from_preset("musicoder-base", num_labels=7).num_labels == 7
        with pytest.raises(ValueError, match="musicoder-large"):
            MusiCoderConfig.from_preset("musicoder-huge")


class TestConfigValidation:
    @pytest.mark.parametrize(
        "overrides, message",
        [
            ({"hidden_size": 100, "num_attention_heads": 12}, "divisible"),
            ({"feature_size": 300}, "feature_size"),
            ({"feature_layout": {"a": [0, 100], "b": [120, 324]}}, "tile"),
            ({"ccm_feature_blocks": ["log_spec"]}, "ccm_feature_blocks"),
            ({"cfm_min_span": 8}, "cfm_min_span"),
            ({"cfm_zero_prob": 0.9, "cfm_random_prob": 0.2}, "sum to at most 1"),
            ({"cfm_mask_ratio": 1.5}, "cfm_mask_ratio"),
        ],
    )
    def test_invalid_settings_are_rejected_with_a_clear_message(self, overrides, message):
        with pytest.raises(Exception, match=message):
            MusiCoderConfig(**overrides)

    def test_layout_survives_json_round_trip_in_channel_order(self, tmp_path):
        config = MusiCoderConfig()
        config.save_pretrained(tmp_path)
        reloaded = MusiCoderConfig.from_pretrained(tmp_path)
        assert list(reloaded.feature_layout) == ["chroma", "mfcc", "mfcc_delta", "log_mel", "log_cqt"]
        assert reloaded.feature_slice("log_cqt") == slice(180, 324)


class TestHuberLoss:
    def test_matches_paper_equation_3_by_hand(self):
        reconstruction = torch.tensor([[[0.5, 3.0, -2.0, 0.0]]])
        labels = torch.tensor([[[0.0, 0.0, 0.0, 10.0]]])
        mask = torch.tensor([[[True, True, True, False]]])
        # 0.5 * 0.5^2 = 0.125 ; |3| - 0.5 = 2.5 ; |-2| - 0.5 = 1.5 ; the unmasked 10-unit error must not count.
        expected = (0.125 + 2.5 + 1.5) / 3
        assert masked_huber_loss(reconstruction, labels, mask).item() == pytest.approx(expected)

    def test_model_loss_is_huber_over_altered_elements_only(self):
        torch.manual_seed(0)
        model = MusiCoderForPreTraining(tiny_config()).eval()
        features, attention_mask = padded_batch([20, 12])
        labels = features + torch.randn_like(features)
        mask = torch.rand(features.shape) < 0.2
        mask &= attention_mask.bool().unsqueeze(-1)
        output = model(features, attention_mask=attention_mask, labels=labels, reconstruction_mask=mask)
        diff = (output.reconstruction - labels)[mask]
        by_hand = torch.where(diff.abs() < 1, 0.5 * diff**2, diff.abs() - 0.5).mean()
        torch.testing.assert_close(output.loss, by_hand)

    def test_nothing_to_reconstruct_gives_zero_not_nan(self):
        model = MusiCoderForPreTraining(tiny_config())
        features, attention_mask = padded_batch([8])
        output = model(features, attention_mask, labels=features, reconstruction_mask=torch.zeros_like(features).bool())
        assert output.loss.item() == 0.0


class TestEncoder:
    @pytest.mark.parametrize("implementation", ["sdpa", "flex_attention"])
    def test_attention_implementations_agree_with_eager_on_padded_batches(self, implementation):
        # Heads of 32 dims: torch's CPU flex-attention kernel reads garbage below 32 (8 or 16 dims give wrong values or
        # NaN, nondeterministically); every preset has 64.
        config = tiny_config(hidden_size=64, num_attention_heads=2)
        torch.manual_seed(0)
        eager = MusiCoderModel._from_config(config, attn_implementation="eager").eval()
        other = MusiCoderModel._from_config(config, attn_implementation=implementation).eval()
        other.load_state_dict(eager.state_dict())
        assert other.config._attn_implementation == implementation
        features, attention_mask = padded_batch([40, 25, 7])
        with torch.no_grad():
            expected = eager(features, attention_mask=attention_mask).last_hidden_state
            got = other(features, attention_mask=attention_mask).last_hidden_state
        valid = attention_mask.bool()
        assert (expected[valid] - got[valid]).abs().max() < 1e-5

    @pytest.mark.parametrize("implementation", ["eager", "sdpa"])
    def test_padding_does_not_change_valid_frames(self, implementation):
        torch.manual_seed(0)
        model = MusiCoderModel._from_config(tiny_config(), attn_implementation=implementation).eval()
        features, _ = padded_batch([30])
        padded = torch.cat([features, torch.randn(1, 50, 324)], dim=1)  # garbage, not zeros, in the padding
        attention_mask = torch.cat([torch.ones(1, 30), torch.zeros(1, 50)], dim=1).long()
        with torch.no_grad():
            alone = model(features).last_hidden_state
            with_padding = model(padded, attention_mask=attention_mask).last_hidden_state[:, :30]
        assert (alone - with_padding).abs().max() < 1e-5

    def test_hidden_states_and_attentions(self):
        model = MusiCoderModel._from_config(tiny_config(), attn_implementation="eager")
        features, attention_mask = padded_batch([10, 6])
        output = model(features, attention_mask, output_hidden_states=True, output_attentions=True)
        assert len(output.hidden_states) == 3  # embeddings + 2 layers
        assert torch.equal(output.hidden_states[-1], output.last_hidden_state)
        assert output.attentions[0].shape == (2, 4, 10, 10)
        assert output.attentions[0][1, :, :, 6:].abs().max() == 0  # nobody attends to padding

    @pytest.mark.parametrize(
        "features, mask, message",
        [
            (torch.zeros(1, 5, 128), None, "feature_size|324"),
            (torch.zeros(5, 324), None, "shape"),
            (torch.zeros(2, 5, 324), torch.tensor([[1] * 5, [0] * 5]), "at least one valid frame"),
            (torch.zeros(1, 5, 324), torch.ones(1, 4), "attention_mask"),
        ],
    )
    def test_bad_inputs_raise_clear_errors(self, features, mask, message):
        with pytest.raises(ValueError, match=message):
            MusiCoderModel(tiny_config())(features, attention_mask=mask)

    def test_main_input_is_the_first_forward_argument_of_every_class(self):
        import inspect

        for model_class in (MusiCoderModel, MusiCoderForPreTraining, MusiCoderForSequenceClassification):
            assert model_class.main_input_name == "input_features"
            assert list(inspect.signature(model_class.forward).parameters)[1] == "input_features"

    def test_position_table_is_the_vaswani_sinusoid(self):
        table = sinusoidal_position_table(50, 8)
        position, channel = 7, 3  # odd channel: cos(pos / 10000^(2*1/8))
        assert table[position, channel].item() == pytest.approx(torch.cos(torch.tensor(7 / 10000 ** (2 / 8))).item())
        assert table[position, 2].item() == pytest.approx(torch.sin(torch.tensor(7 / 10000 ** (2 / 8))).item())


class TestSaveLoad:
    @pytest.mark.parametrize("model_class", [MusiCoderModel, MusiCoderForPreTraining, MusiCoderForSequenceClassification])
    def test_round_trip_is_exact_and_keeps_the_sinusoid_table(self, tmp_path, model_class):
        torch.manual_seed(0)
        model = model_class(tiny_config(num_labels=4)).eval()
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists()
        assert not list(tmp_path.glob("*.bin"))
        reloaded = model_class.from_pretrained(tmp_path).eval()
        for (name, tensor), (_, reloaded_tensor) in zip(model.state_dict().items(), reloaded.state_dict().items()):
            assert torch.equal(tensor, reloaded_tensor), name
        assert torch.equal(
            reloaded.base_model.embeddings.position_table, sinusoidal_position_table(128, 32)
        ), "non-persistent sinusoid buffer must be refilled on load"
        features, attention_mask = padded_batch([12, 9])
        with torch.no_grad():
            assert torch.equal(model(features, attention_mask)[0], reloaded(features, attention_mask)[0])

    def test_auto_classes_resolve_to_musicoder(self, tmp_path):
        model = MusiCoderForSequenceClassification(tiny_config(num_labels=2))
        model.save_pretrained(tmp_path)
        assert type(AutoModel.from_pretrained(tmp_path)) is MusiCoderModel
        assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is MusiCoderForPreTraining
        assert type(AutoModelForAudioClassification.from_pretrained(tmp_path)) is MusiCoderForSequenceClassification
        assert type(AutoModel.from_config(tiny_config())) is MusiCoderModel


class TestSequenceClassification:
    def test_pooling_ignores_padding(self):
        torch.manual_seed(0)
        model = MusiCoderForSequenceClassification(tiny_config(num_labels=3)).eval()
        features, _ = padded_batch([15])
        padded = torch.cat([features, torch.randn(1, 20, 324)], dim=1)
        attention_mask = torch.cat([torch.ones(1, 15), torch.zeros(1, 20)], dim=1).long()
        with torch.no_grad():
            torch.testing.assert_close(model(features).logits, model(padded, attention_mask).logits, atol=1e-5, rtol=0)

    def test_single_label_uses_cross_entropy(self):
        model = MusiCoderForSequenceClassification(tiny_config(num_labels=3)).eval()
        features, attention_mask = padded_batch([10, 7])
        labels = torch.tensor([2, 0])
        output = model(features, attention_mask, labels=labels)
        assert model.config.problem_type == "single_label_classification"
        torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, labels))

    def test_multi_label_uses_bce_with_logits(self):
        model = MusiCoderForSequenceClassification(
            tiny_config(num_labels=4, problem_type="multi_label_classification")
        ).eval()
        features, attention_mask = padded_batch([10, 7])
        labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
        output = model(features, attention_mask, labels=labels)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(output.logits, labels)
        torch.testing.assert_close(output.loss, expected)

    def test_weighted_layer_sum_learns_layer_weights(self):
        model = MusiCoderForSequenceClassification(tiny_config(num_labels=2, use_weighted_layer_sum=True))
        assert model.layer_weights.shape == (3,)
        features, attention_mask = padded_batch([10, 7])
        model(features, attention_mask, labels=torch.tensor([0, 1])).loss.backward()
        assert model.layer_weights.grad is not None and model.layer_weights.grad.abs().sum() > 0

    def test_freeze_base_model_trains_only_the_head(self):
        model = MusiCoderForSequenceClassification(tiny_config(num_labels=2))
        model.freeze_base_model()
        features, attention_mask = padded_batch([10, 7])
        model(features, attention_mask, labels=torch.tensor([0, 1])).loss.backward()
        assert all(p.grad is None for p in model.musicoder.parameters())
        assert model.classifier.weight.grad.abs().sum() > 0
