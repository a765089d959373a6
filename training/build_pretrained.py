"""Rebuild the shipped checkpoint `pretrained/musicoder-small` from scratch (`make pretrained`):

    python training/build_pretrained.py [--output_dir pretrained/musicoder-small] [--max_steps 4000]

1. the whole embedded corpus: 16 h of game soundtracks from Debian packages (`musicoder-data build-corpus`);
2. its frames, un-normalised, then the per-channel mean and standard deviation of the training split
   (`feature_statistics`): the checkpoint's extractor normalises with these (`normalization="dataset"`), so the
   spectral envelope and loudness of a clip reach the model (per-clip CMVN erases them);
3. CFM + CCM pre-training of a `musicoder-small` encoder (4 layers, H = 256, 3.2M parameters);
4. the Hub folder: weights, feature extractor, code for `trust_remote_code`, and a model card written from the run's
   own figures and, when `--evaluation` names the `results.json` of `training/experiments.py --pretrained_model`,
   the measured downstream metrics in its `model-index`.

Every stage resumes: a rerun reuses the corpus, the frames and the latest pre-training checkpoint.
"""

import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import load_dataset
from huggingface_hub import EvalResult, ModelCardData

import musicoder_hf
from musicoder_hf.builders import corpus
from musicoder_hf.data.features import (
    dataset_normalization_extractor,
    feature_statistics,
    featurize_once,
    normalize_frames,
    save_featurised,
)
from musicoder_hf.feature_extraction_musicoder import MusiCoderFeatureExtractor
from musicoder_hf.pretraining import PretrainingArguments, pretrain
from musicoder_hf.utils import command_line_parser, parse_command_line, write_json


@dataclass
class BuildArguments:
    output_dir: str = field(default="pretrained/musicoder-small", metadata={"help": "the Hub folder to write"})
    data_dir: str = field(default="data/full", metadata={"help": "where the corpus and its frames go"})
    run_dir: str = field(default="runs/musicoder-small", metadata={"help": "pre-training checkpoints and logs"})
    preset: str = field(default="musicoder-small", metadata={"help": "encoder size (MusiCoderConfig.from_preset)"})
    max_steps: int = field(default=4000, metadata={"help": "pre-training optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "crops per step"})
    max_frames: int = field(default=300, metadata={"help": "frames per crop (300 frames = 7 s)"})
    warmup_steps: int = field(default=400, metadata={"help": "Noam warm-up steps"})
    lr_scale: float = field(default=0.2, metadata={"help": "multiplies the Noam learning rate"})
    # bf16 autocast pays on GPUs and CPUs with avx512_bf16 / AMX; on a CPU without them (e.g. an AMD EPYC of our CI
    # class) a training step of this model is about 35x slower than in fp32.
    mixed_precision: str = field(default="no", metadata={"help": "no (fp32) or bf16 autocast"})
    classifier_pooling: str = field(default="mean_std", metadata={
        "help": "the pooling the checkpoint's classifier, embedder and HEAR module use (see the card for why)"})
    seed: int = 0
    evaluation: str | None = field(default=None, metadata={
        "help": "shipped_results.json of `training/experiments.py --shipped_only`: its metrics go into the card"})
    card_only: bool = field(default=False, metadata={
        "help": "rewrite the model card of output_dir (and refresh its code files from the package), then stop"})


def processor_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def dataset_normalised_frames(corpus_dir: Path, data_dir: Path) -> tuple[Path, MusiCoderFeatureExtractor]:
    """The corpus's frames normalised with its own training-split statistics, saved with their extractor."""
    audio = lambda path: load_dataset("audiofolder", data_dir=str(path))  # noqa: E731
    raw = featurize_once(corpus_dir, data_dir / "corpus_raw_features", audio,
                         feature_extractor=MusiCoderFeatureExtractor(do_normalize=False, backend="torch"))
    target = data_dir / "corpus_features"
    if (target / "dataset_dict.json").exists():
        feature_extractor = MusiCoderFeatureExtractor.from_pretrained(target)
        if feature_extractor.normalization == "dataset":
            return target, feature_extractor
    statistics = feature_statistics(raw["train"])
    feature_extractor = dataset_normalization_extractor(statistics, backend="torch")
    normalised = normalize_frames(raw, feature_extractor)
    save_featurised(normalised, target, feature_extractor)
    write_json(target / "statistics.json", {"num_frames": statistics["num_frames"],
                                            "num_clips": statistics["num_clips"]})
    return target, feature_extractor


CARD_METRICS = {"accuracy": "Accuracy", "roc_auc_macro": "ROC-AUC (macro)", "pr_auc_macro": "PR-AUC (macro)"}
TASK_TITLES = {"folk": "folk tradition (music21, rendered; 10-fold)", "instruments": "instrument tagging (held-out)"}


def evaluation_section(evaluation: dict) -> tuple[list[EvalResult], str]:
    """model-index entries and markdown of the `shipped_results.json` that `training/experiments.py` writes."""
    results = [
        EvalResult(task_type="audio-classification", dataset_type=f"musicoder-{entry['task']}",
                   dataset_name=TASK_TITLES[entry["task"]], dataset_split="test", metric_type=entry["metric"],
                   metric_name=f"{CARD_METRICS[entry['metric']]}, {entry['protocol']}",
                   metric_value=round(float(entry["value"]), 4))
        for entry in evaluation["card_results"]
    ]
    return results, (verdict(evaluation) + "\n\n"
                     + evaluation["markdown"].replace("## The shipped checkpoint", "### Measured on", 1))


def verdict(evaluation: dict) -> str:
    """One sentence per task from the paired comparisons: does a protocol beat the best hand-crafted row, and does
    pre-training beat random init (p < 0.05 for folds; a 95% bootstrap interval above 0 for a held-out split)?"""
    def difference(comparison):
        if "p_value" in comparison:
            return comparison["mean_difference"], comparison["p_value"] is not None and comparison["p_value"] < 0.05
        entry = comparison["roc_auc_macro"]
        return entry["mean_difference"], entry["ci95"][0] > 0 or entry["ci95"][1] < 0

    def phrase(comparison):
        value, significant = difference(comparison)
        noise = "significant" if significant else "within noise"
        if round(value, 3) == 0:
            return f"level ({noise})"
        return f"{'ahead' if value > 0 else 'behind'} by {abs(value):.3f} ({noise})"

    lines = []
    for task, comparisons in evaluation["comparisons"].items():
        metric = "accuracy" if "p_value" in next(iter(comparisons.values())) else "ROC-AUC"
        parts = [f"{name.split(' vs ')[0]} {phrase(comparison)}" for name, comparison in comparisons.items()
                 if name.endswith("vs best hand-crafted")]
        pretraining = comparisons["all layers (mean_std): pre-trained vs random init"]
        lines.append(f"- **{TASK_TITLES[task]}** ({metric}), against the best hand-crafted row: " + "; ".join(parts)
                     + f". Pre-trained against random init (all layers): {phrase(pretraining)}.")
    return "\n".join(lines)


def refresh_code_files(output_dir: Path) -> None:
    """Copy the package's current model and extractor code over the folder's (what `trust_remote_code` runs)."""
    source = Path(musicoder_hf.__file__).resolve().parent
    for code in output_dir.glob("*.py"):
        shutil.copyfile(source / code.name, code)


def build_pretrained_card(output_dir: Path, training_summary: dict, evaluation: dict | None) -> None:
    """README.md of the Hub folder: data and licences, compute, how to use it, and the measured metrics."""
    config = json.loads((output_dir / "config.json").read_text())
    pretraining, arguments = training_summary["pretraining"], training_summary["arguments"]
    licences = sorted({name for package in training_summary["packages"].values() for name in package["licences"]})
    eval_results, evaluation_text = evaluation_section(evaluation) if evaluation else (
        None, "Not evaluated yet: run `python training/experiments.py --shipped_only` and rebuild the card with "
        "`python training/build_pretrained.py --card_only --evaluation runs/paper/shipped_results.json`.")
    card_data = ModelCardData(
        model_name=output_dir.name, library_name="transformers", pipeline_tag="feature-extraction",
        tags=["audio", "music", "musicoder", "music-information-retrieval", "self-supervised"],
        license="other", license_name="training-data-licences",
        eval_results=eval_results,
    )
    packages = "\n".join(
        f"| {name} ({package['version']}) | {', '.join(sorted(package['licences']))} | {package['tracks']} | "
        f"{package['clips']} | {package['minutes']:.1f} |" for name, package in training_summary["packages"].items())
    losses = [r for r in training_summary["history"] if "eval_loss" in r]
    content = f"""---
{card_data.to_yaml()}
---

# {output_dir.name}

A MusiCoder encoder (4 layers, H = {config['hidden_size']}, {config['num_attention_heads']} heads, FFN
{config['intermediate_size']}; {pretraining['parameters'] / 1e6:.2f}M parameters with the pre-training head) pre-trained by masked reconstruction
(CFM + CCM, the MusiCoder paper) on {training_summary['corpus']['hours']:.1f} h of game soundtracks. It is small enough
to pre-train on a 2-core CPU, and it ships with the repository so that `from_pretrained` has something to load.

```python
from transformers import AutoModel, AutoFeatureExtractor
from musicoder_hf import MusiCoderEmbedder

model = AutoModel.from_pretrained("{output_dir}")                 # or trust_remote_code=True without musicoder_hf
embedder = MusiCoderEmbedder.from_pretrained("{output_dir}")
clip = embedder("track.flac", layers=-1).embeddings              # mean and std over time of the last layer
```

Fine-tune it on a labeled folder with `python training/finetune.py --data_dir my_music --output_dir runs/mine`
(this checkpoint is the default `--model_name_or_path`). The defaults first fit a linear probe on the frozen encoder,
then fine-tune the whole model from that head, and keep the best of both on validation (`docs/training.md`).

## Input features and pooling

- Frames: the paper's 324-dimensional frames (log-Mel, MFCC, chroma, log-CQT and more, 43 frames/s at 44.1 kHz),
  normalised with **fixed per-channel statistics of the pre-training corpus** (`normalization="dataset"` in
  `preprocessor_config.json`), not per clip as in the paper. Per-clip CMVN sets each channel's mean to 0 and variance
  to 1 over the clip, so a clip's spectral envelope and loudness never reach the model; the corpus statistics keep
  them. `make paper` compares both normalisations (and both poolings) paired, at its own small scale: see
  `model_cards/paper_results.md`, section "Normalisation and pooling".
- Pooling: `config.classifier_pooling = "{config.get('classifier_pooling')}"` (mean and standard deviation over time),
  used by the classifier head, `MusiCoderEmbedder` and the HEAR module by default. The measured comparison with mean
  pooling is below.

## Pre-training data

{training_summary['corpus']['clips']} clips of 10-35 s ({training_summary['corpus']['hours']:.1f} h; train
{training_summary['corpus']['splits']['train']['hours']:.1f} h, validation {training_summary['corpus']['splits']['validation']['hours']:.1f} h held out by track) cut from
the music of Debian game packages by `musicoder-data build-corpus` (see `docs/data.md`):

| package (Debian version) | licences | tracks | clips | minutes |
|---|---|---:|---:|---:|
{packages}

Licence of the weights: the training music is under {', '.join(licences)}. Whether weights are a derivative work of
their training data is unsettled; if you redistribute them, do so under terms compatible with these licences (for
example with attribution to the packages above). The code is Apache-2.0.

## Pre-training

- {pretraining['steps']} steps of {arguments['batch_size']} random crops of {arguments['max_frames']} frames (7 s),
  CFM + CCM masking as in the paper, Huber loss, Noam schedule x {arguments['lr_scale']} with {arguments['warmup_steps']}
  warm-up steps, {arguments['mixed_precision'] if arguments['mixed_precision'] != 'no' else 'fp32'}, seed {arguments['seed']}.
- Final loss: train {pretraining['final_loss']:.4f}, validation {pretraining['final_eval_loss']:.4f} (validation at step
  {losses[0]['step']}: {losses[0]['eval_loss']:.4f}).
- Compute: {training_summary['machine']}; pre-training {training_summary['stage_seconds']['pretraining'] / 60:.0f} min
  (about {pretraining['frames_per_second']:.0f} frames/s).
- Rebuild: `{training_summary['command']}`.

## Evaluation

{evaluation_text}

## Limitations

Small by design: a 3.2M-parameter encoder trained for a CPU budget on 16 h of one genre of music (game soundtracks).
Measure it on your own data against hand-crafted statistics (the comparisons above show how) before relying on it.
"""
    (output_dir / "README.md").write_text(content)


def main(argv=None) -> int:
    args = parse_command_line(command_line_parser(BuildArguments, description=__doc__), argv)
    logging.basicConfig(level=logging.WARNING)
    output_dir, data_dir, run_dir = Path(args.output_dir), Path(args.data_dir), Path(args.run_dir)
    evaluation = json.loads(Path(args.evaluation).read_text()) if args.evaluation else None
    if args.card_only:
        refresh_code_files(output_dir)
        build_pretrained_card(output_dir, json.loads((output_dir / "training_summary.json").read_text()), evaluation)
        print(f"rewrote {output_dir / 'README.md'} and refreshed its code files from the package")
        return 0

    timings, started = {}, time.time()
    print("== 1/4 corpus: every package, 16 h", flush=True)
    if corpus.main(["--output_dir", str(data_dir / "corpus"), "--seed", str(args.seed), "--no_progress"]):
        raise SystemExit("build-corpus failed; see the messages above.")
    timings["corpus"] = time.time() - started

    t = time.time()
    print("== 2/4 frames and their per-channel statistics", flush=True)
    features_dir, feature_extractor = dataset_normalised_frames(data_dir / "corpus", data_dir)
    timings["features"] = time.time() - t

    t = time.time()
    print(f"== 3/4 pre-training {args.preset} for {args.max_steps} steps ({args.mixed_precision})", flush=True)
    summary = pretrain(PretrainingArguments(
        data_dir=str(features_dir), output_dir=str(run_dir), preset=args.preset,
        # Attention-probability dropout is off: on CPU it costs more than the attention of 300-frame crops.
        config_overrides="attention_probs_dropout_prob=0.0", per_device_train_batch_size=args.batch_size,
        max_steps=args.max_steps, warmup_steps=args.warmup_steps, lr_scale=args.lr_scale, max_frames=args.max_frames,
        mixed_precision=args.mixed_precision, eval_every=250, save_every=250, log_every=25, report_to="none",
        seed=args.seed, resume=True, cpu=not torch.cuda.is_available(),
    ))
    model = summary.pop("model")
    timings["pretraining"] = time.time() - t
    if summary["history"]:  # training time across resumes (a resumed run continues the clock)
        timings["pretraining"] = summary["history"][-1]["elapsed_seconds"]

    print(f"== 4/4 Hub folder {output_dir}", flush=True)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    model.config.attention_probs_dropout_prob = 0.1  # the default for whoever fine-tunes it
    model.config.classifier_pooling = args.classifier_pooling
    # The encoder only ever saw crops of max_frames frames: on longer sequences its masked-reconstruction loss
    # triples (length extrapolation). Its window is therefore max_frames: the model reads longer clips in windows of
    # at most that length (`window_spans`).
    model.config.max_position_embeddings = args.max_frames
    model.save_pretrained(output_dir, safe_serialization=True)  # with the code files for trust_remote_code
    feature_extractor.save_pretrained(output_dir)
    corpus_manifest = json.loads((data_dir / "corpus" / "manifest.json").read_text())
    training_summary = {
        "command": "make pretrained" if not (sys.argv[1:] if argv is None else argv)
        else "python training/build_pretrained.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "arguments": {k: v for k, v in vars(args).items() if k not in ("card_only", "evaluation")},
        "corpus": {k: corpus_manifest[k] for k in ("clips", "hours", "tracks", "splits")},
        "packages": corpus_manifest["packages"],
        "pretraining": {k: summary[k] for k in ("steps", "final_loss", "final_eval_loss", "parameters")},
        "history": summary["history"],
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "machine": f"{processor_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
                   + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"),
    }
    training_summary["pretraining"]["frames_per_second"] = round(
        summary["steps"] * args.batch_size * args.max_frames / timings["pretraining"], 1)
    write_json(output_dir / "training_summary.json", training_summary)
    build_pretrained_card(output_dir, training_summary, evaluation)
    print(json.dumps(training_summary["pretraining"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
