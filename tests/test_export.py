"""`torch.export` of the encoder and the classifier (`musicoder_hf.export.export_program`): batch and frames dynamic
(frames bounded by the model's window), and the exported graph computes what eager mode computes, padding included."""

import pytest
import torch

from musicoder_hf import MusiCoderConfig, MusiCoderForSequenceClassification, MusiCoderModel
from musicoder_hf.export import export_program

CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3,
              max_position_embeddings=120)


@pytest.mark.parametrize("model_class", [MusiCoderModel, MusiCoderForSequenceClassification])
@pytest.mark.parametrize("classifier_pooling", ["mean", "mean_std"])
def test_exported_graph_matches_eager_for_other_batch_and_frame_counts(model_class, classifier_pooling):
    torch.manual_seed(0)
    config = MusiCoderConfig(**CONFIG, classifier_pooling=classifier_pooling)
    model = model_class(config).eval()
    exported = export_program(model).module()
    for batch_size, num_frames in ((3, 70), (1, 120), (5, 9)):
        features = torch.randn(batch_size, num_frames, config.feature_size)
        mask = torch.ones(batch_size, num_frames, dtype=torch.int32)  # as the feature extractor returns it
        mask[-1, num_frames // 2:] = 0  # a padded clip: padding must not leak into attention or pooling
        with torch.no_grad():
            expected = model(input_features=features, attention_mask=mask)
            got = exported(input_features=features, attention_mask=mask)
        name = "logits" if model_class is MusiCoderForSequenceClassification else "last_hidden_state"
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5)


def test_eager_mode_still_refuses_an_empty_mask_row():
    model = MusiCoderModel(MusiCoderConfig(**CONFIG)).eval()
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1] = 0
    with pytest.raises(ValueError, match="at least one valid frame"):
        model(input_features=torch.randn(2, 10, 324), attention_mask=mask)
