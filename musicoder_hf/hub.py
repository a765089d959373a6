"""Publishing: a Hub-ready folder (weights, feature extractor, code for `trust_remote_code`, model card with a
`model-index` built from measured metrics) and the upload through the libraries' own `push_to_hub`."""

import json
import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import AutoConfig

from .feature_extraction_musicoder import MusiCoderFeatureExtractor
from .modeling_musicoder import MusiCoderForPreTraining, MusiCoderForSequenceClassification, MusiCoderModel

# Shipped as package data (pyproject.toml), so installed copies find it too.
DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md"
METRIC_NAMES = {"accuracy": "Accuracy", "roc_auc_macro": "ROC-AUC (macro)", "pr_auc_macro": "PR-AUC (macro)"}
MODEL_CLASSES = {cls.__name__: cls for cls in (MusiCoderModel, MusiCoderForPreTraining, MusiCoderForSequenceClassification)}


def load_model(model_dir: str | os.PathLike):
    """The MusiCoder class named in the folder's config (`architectures`), loaded from it."""
    config = AutoConfig.from_pretrained(model_dir)
    name = (config.architectures or ["MusiCoderModel"])[0]
    if name not in MODEL_CLASSES:
        raise ValueError(f"{model_dir} holds a {name}, not a MusiCoder model ({sorted(MODEL_CLASSES)}).")
    return MODEL_CLASSES[name].from_pretrained(model_dir)


def build_model_card(
    model,
    repo_id: str,
    metrics: dict | None = None,
    dataset_name: str | None = None,
    dataset_type: str | None = None,
    pretraining: dict | None = None,
    base_model: str | None = None,
    template: str | os.PathLike = DEFAULT_TEMPLATE,
) -> ModelCard:
    """A model card whose `model-index` holds the test (else validation) metrics of a `finetune` metrics.json."""
    config = model.config
    results = []
    scores = (metrics or {}).get("test") or (metrics or {}).get("validation") or {}
    split = "test" if (metrics or {}).get("test") else "validation"
    for metric, value in scores.items():
        if metric in METRIC_NAMES and value == value:  # skip NaN
            results.append(
                EvalResult(
                    task_type="audio-classification",
                    dataset_type=dataset_type or dataset_name or "custom",
                    dataset_name=dataset_name or "custom",
                    dataset_split=split,
                    metric_type=metric,
                    metric_name=METRIC_NAMES[metric],
                    metric_value=round(float(value), 4),
                )
            )
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        library_name="transformers",
        pipeline_tag="audio-classification" if isinstance(model, MusiCoderForSequenceClassification) else None,
        tags=["audio", "music", "musicoder", "music-information-retrieval"],
        license="apache-2.0",
        base_model=base_model,
        eval_results=results or None,
    )
    table = "\n".join(
        ["| split | metric | value |", "|---|---|---|"]
        + [f"| {split} | {METRIC_NAMES[m]} | {v:.4f} |" for m, v in scores.items() if m in METRIC_NAMES]
    ) if scores else "No evaluation was run for this checkpoint."
    if pretraining:
        training = (
            f"Pre-trained for {pretraining.get('steps')} steps (final masked-reconstruction loss "
            f"{pretraining.get('final_loss')}); masking: CFM={pretraining.get('arguments', {}).get('cfm')}, "
            f"CCM={pretraining.get('arguments', {}).get('ccm')}."
        )
    else:
        training = "See the repository for the pre-training data and settings."
    if metrics:
        training += (
            f" Fine-tuned ({metrics.get('initialisation')}) with {metrics.get('best_hyperparameters')}, best on "
            f"validation by {metrics.get('metric_for_best_model')} at epoch {metrics.get('best_epoch')}."
        )
    labels = [config.id2label[i] for i in range(config.num_labels)] if hasattr(config, "id2label") else []
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        architecture=type(model).__name__,
        model_description=f"Trained on {dataset_name}." if dataset_name else "",
        max_frames=config.max_position_embeddings,
        num_hidden_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        num_parameters=f"{model.num_parameters() / 1e6:.2f}M",
        labels=", ".join(labels) if isinstance(model, MusiCoderForSequenceClassification) else "n/a",
        problem_type=config.problem_type or "n/a",
        training_summary=training,
        evaluation_table=table,
        limitations=(
            "Small demonstration scale unless stated otherwise: metrics come from the data named above and do not "
            "transfer to other collections without evaluation."
        ),
    )


def prepare_hub_folder(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    repo_id: str,
    metrics_file: str | os.PathLike | None = None,
    pretraining_summary_file: str | os.PathLike | None = None,
    **card_kwargs,
) -> Path:
    """Write everything a Hub repo needs into `output_dir`; the folder alone reloads with the Auto classes."""
    output_dir = Path(output_dir)
    model = load_model(model_dir)
    model.save_pretrained(output_dir, safe_serialization=True)  # weights, config with auto_map, code files
    MusiCoderFeatureExtractor.from_pretrained(model_dir).save_pretrained(output_dir)
    metrics = json.loads(Path(metrics_file).read_text()) if metrics_file else None
    pretraining = json.loads(Path(pretraining_summary_file).read_text()) if pretraining_summary_file else None
    card = build_model_card(model, repo_id, metrics=metrics, pretraining=pretraining, **card_kwargs)
    card.save(output_dir / "README.md")
    if metrics:
        (output_dir / "eval_results.json").write_text(json.dumps({k: metrics.get(k) for k in ("validation", "test")}))
    return output_dir


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, private: bool | None = None, token=None) -> list:
    """Upload a prepared folder with the libraries' own `push_to_hub`: model, feature extractor, then our card (last,
    so it replaces the default card that `PreTrainedModel.push_to_hub` writes)."""
    folder = Path(folder)
    model = load_model(folder)
    feature_extractor = MusiCoderFeatureExtractor.from_pretrained(folder)
    commits = [
        model.push_to_hub(repo_id, private=private, token=token, commit_message="Upload MusiCoder model"),
        feature_extractor.push_to_hub(repo_id, private=private, token=token),
        ModelCard((folder / "README.md").read_text()).push_to_hub(repo_id, token=token, commit_message="Add model card"),
    ]
    extra = folder / "eval_results.json"
    if extra.exists():
        from huggingface_hub import upload_file

        commits.append(upload_file(path_or_fileobj=str(extra), path_in_repo=extra.name, repo_id=repo_id, token=token))
    return commits
