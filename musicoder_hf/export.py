"""Exported graphs of MusiCoder encoders and classifiers: `torch.export` programs and ONNX models.

    from musicoder_hf.export import export_onnx, export_program

    program = export_program(model)                 # torch.export.ExportedProgram; program.module()(**inputs)
    export_onnx(model, "musicoder.onnx")            # ONNX, checked against PyTorch with ONNX Runtime

or, for a saved checkpoint, from the command line (ONNX needs `pip install "musicoder-hf[onnx]"`):

    musicoder-export --model_name_or_path pretrained/musicoder-small --output_dir onnx/musicoder-small

The graph is the model only, inside one window. Feature extraction stays outside it (`MusiCoderFeatureExtractor`, in
PyTorch), and so does the windowing of inputs longer than the model's window, which the eager model does in `forward`:
to run a long clip through a graph, cut its frames with `modeling_musicoder.window_spans` and run each window (a
classifier graph then pools each window on its own, where the eager model pools over every frame of the clip).
Inputs: `input_features` `(batch, frames, feature_size)` float32 and `attention_mask` `(batch, frames)` int32 (what the
feature extractor returns), both dynamic in batch and frames. Frames run from 2 to `config.max_position_embeddings`:
`torch.export` records that range and refuses other shapes; an ONNX runtime fails on the position-table addition above
it (`export_onnx` writes the limit into the model's metadata as `max_position_embeddings`). Every attention-mask row
needs at least one valid frame, as the feature extractor guarantees: the graph cannot raise on data the way eager mode
does.
"""

import copy
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from .configuration_musicoder import MusiCoderConfig
from .utils import command_line_parser, parse_command_line

# torch.export refuses to specialise a dynamic size that the example gives as 0 or 1; a clip of one frame is shorter
# than the feature extractor's shortest (3 frames) anyway.
MIN_EXPORT_FRAMES = 2
# Tolerance of the ONNX Runtime check against PyTorch (float32 logits or hidden states).
ONNX_TOLERANCE = 1e-4


def example_inputs(config: MusiCoderConfig, batch_size: int = 2, num_frames: int = 64, seed: int = 0) -> dict:
    """Inputs of the exported graph's form: standard-normal frames (normalised features have that scale) and a mask
    whose last row is half padding, so that a check also covers padding."""
    num_frames = max(MIN_EXPORT_FRAMES, min(num_frames, config.max_position_embeddings))
    generator = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(batch_size, num_frames, dtype=torch.int32)  # as the feature extractor returns it
    attention_mask[-1, max(1, num_frames // 2):] = 0
    features = torch.randn(batch_size, num_frames, config.feature_size, generator=generator)
    return {"input_features": features * attention_mask[..., None], "attention_mask": attention_mask}


def dynamic_shapes(config: MusiCoderConfig) -> dict:
    """Batch and frames dynamic; frames bounded by the model's window (`max_position_embeddings`)."""
    batch = torch.export.Dim("batch", min=1)
    frames = torch.export.Dim("frames", min=MIN_EXPORT_FRAMES, max=config.max_position_embeddings)
    return {"input_features": {0: batch, 1: frames}, "attention_mask": {0: batch, 1: frames}}


class GraphOutputs(nn.Module):
    """A MusiCoder model with plain tensor outputs, for graph formats that name outputs (ONNX): `logits` for a
    classifier, `last_hidden_state` for an encoder; with `output_hidden_states`, also `hidden_states`, every layer's
    output stacked as `(batch, num_hidden_layers + 1, frames, hidden_size)` (index 0 is the input embedding, as in
    `MusiCoderEmbedder`)."""

    def __init__(self, model: nn.Module, output_hidden_states: bool = False):
        super().__init__()
        self.model = model
        self.output_hidden_states = output_hidden_states

    @property
    def output_names(self) -> list[str]:
        main = "logits" if hasattr(self.model, "classifier") else "last_hidden_state"
        return [main, "hidden_states"] if self.output_hidden_states else [main]

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor):
        outputs = self.model(
            input_features=input_features, attention_mask=attention_mask,
            output_hidden_states=self.output_hidden_states, return_dict=True,
        )
        main = outputs.logits if "logits" in outputs else outputs.last_hidden_state
        if self.output_hidden_states:
            return main, torch.stack(outputs.hidden_states, dim=1)
        return main


def is_classifier_checkpoint(config) -> bool:
    """Whether a saved configuration is a sequence classifier's (its `architectures`), not an encoder's."""
    return any("SequenceClassification" in name for name in (config.architectures or []))


def _check_exportable(model: nn.Module) -> MusiCoderConfig:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "musicoder":
        raise TypeError(f"Expected a MusiCoder model (MusiCoderModel or MusiCoderForSequenceClassification), got "
                        f"{type(model).__name__}.")
    if model.training:
        raise ValueError("Call model.eval() before exporting: a graph in training mode would keep dropout.")
    return config


def export_program(model: nn.Module, example: dict | None = None) -> torch.export.ExportedProgram:
    """
    `torch.export` of a MusiCoder encoder or classifier (in eval mode), dynamic in batch and frames.

    Args:
        model (`MusiCoderModel` or `MusiCoderForSequenceClassification`): the model, in eval mode, on the device and
            in the dtype the program is for.
        example (`dict`, *optional*): example `input_features` and `attention_mask` (default: `example_inputs`).

    Returns:
        `torch.export.ExportedProgram`; `program.module()(input_features=..., attention_mask=...)` returns the
        model's output (`logits` or `last_hidden_state`, as in eager mode).
    """
    config = _check_exportable(model)
    parameter = next(model.parameters())
    example = example or {
        key: value.to(parameter.device, parameter.dtype if value.is_floating_point() else value.dtype)
        for key, value in example_inputs(config).items()
    }
    return torch.export.export(model, (), example, dynamic_shapes=dynamic_shapes(config))


def _require(*modules: str) -> None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: pip install \"musicoder-hf[onnx]\".")


def onnx_session(path: str | Path, num_threads: int | None = None):
    """An ONNX Runtime CPU session of an exported model (`num_threads`: intra-op threads, default ONNX Runtime's)."""
    _require("onnxruntime")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_onnx_difference(path: str | Path, model: nn.Module, inputs: dict, output_hidden_states: bool = False) -> float:
    """Largest absolute difference between ONNX Runtime's outputs and PyTorch's for `inputs` (eval mode, float32)."""
    with torch.no_grad():
        expected = GraphOutputs(model, output_hidden_states)(**inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = onnx_session(path).run(None, {key: value.cpu().numpy() for key, value in inputs.items()})
    return max(float(np.abs(g - e.float().cpu().numpy()).max()) for g, e in zip(got, expected))


def export_onnx(
    model: nn.Module,
    path: str | Path,
    output_hidden_states: bool = False,
    verify: bool = True,
    opset_version: int | None = None,
) -> Path:
    """
    ONNX export of a MusiCoder encoder or classifier (float32, eval mode), dynamic in batch and frames, through
    `torch.onnx.export(dynamo=True)` (needs `onnx` and `onnxscript`; the check needs `onnxruntime`).

    Args:
        model (`MusiCoderModel` or `MusiCoderForSequenceClassification`): the model, in eval mode.
        path (`str` or `Path`): the `.onnx` file to write (the weights are inside it).
        output_hidden_states (`bool`, *optional*, defaults to `False`): also output `hidden_states`, every layer's
            output stacked as `(batch, num_hidden_layers + 1, frames, hidden_size)`, for embeddings.
        verify (`bool`, *optional*, defaults to `True`): run the file with ONNX Runtime on two batches of other sizes
            (padding included) and raise if any output differs from PyTorch's by more than `ONNX_TOLERANCE` (1e-4).
        opset_version (`int`, *optional*): ONNX opset (default: torch's).

    Returns:
        The path written. Its metadata holds `model_type`, `max_position_embeddings` and `config` (the JSON config).
    """
    config = _check_exportable(model)
    _require("onnx", "onnxscript", *(["onnxruntime"] if verify else []))
    parameter = next(model.parameters())
    if parameter.dtype != torch.float32 or parameter.device.type != "cpu":
        model = copy.deepcopy(model).float().cpu()  # the caller's model stays where and as it is
    wrapped = GraphOutputs(model, output_hidden_states).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        wrapped, (), kwargs=example_inputs(config), dynamic_shapes=dynamic_shapes(config), dynamo=True,
        input_names=["input_features", "attention_mask"], output_names=wrapped.output_names,
        opset_version=opset_version, verbose=False,
    )
    program.model.metadata_props.update({
        "model_type": "musicoder",
        "max_position_embeddings": str(config.max_position_embeddings),
        "config": config.to_json_string(use_diff=False),
    })
    program.save(str(path))
    if verify:
        for batch_size, num_frames in ((3, 97), (1, config.max_position_embeddings)):
            inputs = example_inputs(config, batch_size, num_frames, seed=batch_size)
            difference = max_onnx_difference(path, model, inputs, output_hidden_states)
            if not difference <= ONNX_TOLERANCE:
                raise RuntimeError(f"The ONNX model at {path} differs from PyTorch by {difference:.2e} (batch "
                                   f"{batch_size}, {num_frames} frames), above {ONNX_TOLERANCE:g}.")
    return path


@dataclass
class ExportArguments:
    model_name_or_path: str = field(metadata={"help": "a MusiCoder checkpoint folder (or Hub id, when online)"})
    output_dir: str = field(metadata={"help": "where model.onnx (or model.pt2), config.json and "
                                              "preprocessor_config.json are written"})
    format: Literal["onnx", "torch"] = field(default="onnx", metadata={
        "help": "onnx (ONNX Runtime and other runtimes) or torch (a torch.export program, model.pt2)"})
    output_hidden_states: bool = field(default=False, metadata={"help": "ONNX: also output every layer's hidden "
                                                                        "states (embeddings)"})
    encoder_only: bool = field(default=False, metadata={"help": "export the encoder of a classifier checkpoint "
                                                                "(last_hidden_state) instead of its logits"})


def main(argv=None) -> int:
    """`musicoder-export`: a saved checkpoint as an ONNX model (checked with ONNX Runtime) or a torch.export program,
    next to its config and feature extractor."""
    from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification

    args = parse_command_line(command_line_parser(
        ExportArguments, prog="musicoder-export",
        description="Export a MusiCoder checkpoint as ONNX or a torch.export program (features stay outside).",
    ), argv)
    try:
        config = MusiCoderConfig.from_pretrained(args.model_name_or_path)
        classifier = is_classifier_checkpoint(config) and not args.encoder_only
        loader = AutoModelForAudioClassification if classifier else AutoModel
        model = loader.from_pretrained(args.model_name_or_path).eval()
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        if args.format == "onnx":
            path = export_onnx(model, output_dir / "model.onnx", output_hidden_states=args.output_hidden_states)
        else:
            path = output_dir / "model.pt2"
            torch.export.save(export_program(model), path)
        model.config.save_pretrained(output_dir)
        AutoFeatureExtractor.from_pretrained(args.model_name_or_path).save_pretrained(output_dir)
    except (OSError, ValueError, TypeError, RuntimeError, ImportError) as error:
        print(f"musicoder-export: {error}", file=sys.stderr)
        return 1
    outputs = GraphOutputs(model, args.output_hidden_states).output_names if args.format == "onnx" else ["model"]
    print(json.dumps({"path": str(path), "outputs": outputs,
                      "max_frames": model.config.max_position_embeddings}))
    return 0


__all__ = [
    "GraphOutputs", "example_inputs", "export_onnx", "export_program", "is_classifier_checkpoint",
    "max_onnx_difference", "onnx_session",
]


if __name__ == "__main__":
    raise SystemExit(main())
