"""ONNX export (the `onnx` extra, which `dev` installs): ONNX Runtime against PyTorch within 1e-4, named inputs and
outputs, the window limit, and the `musicoder-export` command."""

import numpy as np
import pytest
import torch

from musicoder_hf import MusiCoderConfig, MusiCoderFeatureExtractor, MusiCoderForSequenceClassification, MusiCoderModel
from musicoder_hf.export import example_inputs, export_onnx, export_program, onnx_session
from musicoder_hf.export import main as export_main

pytest.importorskip("onnxruntime", reason="the ONNX export needs the `onnx` extra: pip install 'musicoder-hf[onnx]'")

CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3,
              max_position_embeddings=120)


def run_onnx(path, inputs):
    return onnx_session(path).run(None, {key: value.numpy() for key, value in inputs.items()})


@pytest.mark.parametrize("classifier_pooling", ["mean", "mean_std"])
def test_onnx_classifier_matches_pytorch_within_1e4(tmp_path, classifier_pooling):
    torch.manual_seed(0)
    config = MusiCoderConfig(**CONFIG, classifier_pooling=classifier_pooling)
    model = MusiCoderForSequenceClassification(config).eval()
    path = export_onnx(model, tmp_path / "model.onnx", verify=False)
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ["input_features", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch_size, num_frames in ((4, 33), (1, 120), (2, 3)):
        inputs = example_inputs(config, batch_size, num_frames, seed=num_frames)  # last row half padding
        (logits,) = run_onnx(path, inputs)
        with torch.no_grad():
            expected = model(**inputs).logits.numpy()
        assert logits.shape == (batch_size, config.num_labels)
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_onnx_encoder_outputs_every_hidden_state(tmp_path):
    torch.manual_seed(1)
    config = MusiCoderConfig(**CONFIG)
    model = MusiCoderModel(config).eval()
    path = export_onnx(model, tmp_path / "encoder.onnx", output_hidden_states=True)  # with its own check
    inputs = example_inputs(config, 3, 57)
    last, hidden = run_onnx(path, inputs)
    with torch.no_grad():
        expected = model(**inputs, output_hidden_states=True)
    assert hidden.shape == (3, config.num_hidden_layers + 1, 57, config.hidden_size)
    np.testing.assert_allclose(last, expected.last_hidden_state.numpy(), atol=1e-4, rtol=0)
    for layer, state in enumerate(expected.hidden_states):
        np.testing.assert_allclose(hidden[:, layer], state.numpy(), atol=1e-4, rtol=0)
    # More frames than the model's window fail in the runtime (the position table), never silently truncated.
    too_long = {"input_features": torch.randn(1, 121, config.feature_size),
                "attention_mask": torch.ones(1, 121, dtype=torch.int32)}
    with pytest.raises(Exception, match="broadcast|121|120"):
        run_onnx(path, too_long)


def test_export_leaves_the_callers_model_as_it_was_and_refuses_training_mode(tmp_path):
    model = MusiCoderForSequenceClassification(MusiCoderConfig(**CONFIG)).to(torch.bfloat16).eval()
    export_onnx(model, tmp_path / "model.onnx", verify=False)
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="model.eval()"):
        export_program(model.train())
    with pytest.raises(TypeError, match="MusiCoder model"):
        export_program(torch.nn.Linear(2, 2))


def music_clip(seconds, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 44100)) / 44100
    notes = sum(np.sin(2 * np.pi * f * t) * np.exp(-((t % 0.5) * 6)) for f in rng.uniform(110, 880, 4))
    return (0.2 * notes + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_export_command_writes_a_runnable_onnx_folder_and_a_torch_program(tmp_path, capsys):
    torch.manual_seed(2)
    config = MusiCoderConfig(**CONFIG, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    model = MusiCoderForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "checkpoint")
    MusiCoderFeatureExtractor().save_pretrained(tmp_path / "checkpoint")

    checkpoint = str(tmp_path / "checkpoint")
    assert export_main(["--model_name_or_path", checkpoint, "--output_dir", str(tmp_path / "onnx")]) == 0
    assert '"outputs": ["logits"]' in capsys.readouterr().out
    assert {"model.onnx", "config.json", "preprocessor_config.json"} <= {p.name for p in (tmp_path / "onnx").iterdir()}
    # Features outside the graph: the saved extractor, then ONNX Runtime, as a user serves it.
    extractor = MusiCoderFeatureExtractor.from_pretrained(tmp_path / "onnx")
    inputs = extractor([music_clip(2.0, 0), music_clip(1.2, 1)], sampling_rate=44100, return_tensors="pt")
    (logits,) = run_onnx(tmp_path / "onnx" / "model.onnx", dict(inputs))
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(**inputs).logits.numpy(), atol=1e-4, rtol=0)

    assert export_main(["--model_name_or_path", str(tmp_path / "checkpoint"), "--output_dir", str(tmp_path / "pt2"),
                        "--format", "torch", "--encoder_only"]) == 0
    program = torch.export.load(tmp_path / "pt2" / "model.pt2").module()
    with torch.no_grad():
        expected = MusiCoderModel.from_pretrained(tmp_path / "checkpoint")(**inputs).last_hidden_state
        torch.testing.assert_close(program(**inputs)["last_hidden_state"], expected, atol=1e-5, rtol=1e-5)

    assert export_main(["--model_name_or_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "x")]) == 1
    assert "musicoder-export:" in capsys.readouterr().err


def test_a_missing_onnx_package_is_named_with_the_extra(monkeypatch, tmp_path):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxscript" else find_spec(name, *args))
    model = MusiCoderModel(MusiCoderConfig(**CONFIG)).eval()
    with pytest.raises(ImportError, match=r"onnxscript: pip install \"musicoder-hf\[onnx\]\""):
        export_onnx(model, tmp_path / "model.onnx")
