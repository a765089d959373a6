"""MusiCoder masked-reconstruction pre-training (CFM + CCM) with Accelerate.

`training/pretrain.py` is the command line; this module is the loop, importable so that tests and users can run it
in-process (e.g. under `accelerate.debug_launcher`). Data: a featurised `DatasetDict` saved with `save_to_disk` (see
`musicoder-data featurize`), whose `input_features` column holds (frames, 324) arrays.

Exact resume: batches are padded in DataLoader workers and masked in the loop on the accelerator, with a generator
seeded from (seed, epoch, batch index, process); dropout is seeded the same way and the sampler by (seed, epoch). A
killed run resumed from its last checkpoint therefore sees the same batches, masks and dropout as an uninterrupted
one, and reaches the same weights.
"""

import functools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from datasets import load_from_disk
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModelForPreTraining

from .checkpointing import latest_checkpoint, load_checkpoint, remove_incomplete_checkpoints, save_checkpoint
from .configuration_musicoder import MusiCoderConfig
from .data_collator import DataCollatorForMusiCoderPreTraining, random_crop
from .data.features import feature_extractor_of
from .optimization import create_noam_optimizer_and_schedule
from .training_utils import build_accelerator, check_finite_loss, clip_and_check_gradients, total_optimizer_steps
from .utils import derive_seed, write_json

logger = logging.getLogger(__name__)


@dataclass
class PretrainingArguments:
    data_dir: str = field(metadata={"help": "Featurised DatasetDict (save_to_disk) with an input_features column."})
    output_dir: str = field(metadata={"help": "Checkpoints, logs, history.json and the final model (final/)."})
    preset: str = field(default="musicoder-base", metadata={"help": "musicoder-base or musicoder-large."})
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma list of config fields, e.g. 'hidden_size=256,num_hidden_layers=2'."}
    )
    cfm: bool = field(default=True, metadata={"help": "Contiguous Frames Masking."})
    ccm: bool = field(default=True, metadata={"help": "Contiguous Channels Masking."})
    train_split: str = "train"
    eval_split: str = field(default="validation", metadata={"help": "Split for validation loss; skipped if absent."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Paper: 64 in total."})
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; overrides num_epochs when > 0."})
    num_epochs: float = 1.0
    warmup_steps: int = field(default=8000, metadata={"help": "Noam warm-up (paper: 8000)."})
    lr_scale: float = field(default=1.0, metadata={"help": "Multiplies the Noam learning rate H^-0.5 * min(...)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping; 0 disables."})
    max_frames: int | None = field(
        default=None, metadata={"help": "Random crop of each training clip to at most this many frames (faster "
                                "runs); validation clips are cut to their first max_frames frames."}
    )
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no, fp16 or bf16; default: what `accelerate launch` was configured with."}
    )
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    seed: int = 0
    num_workers: int = 0
    streaming: bool = field(
        default=False, metadata={"help": "Read the data as an IterableDataset split across processes."}
    )
    log_every: int = 10
    eval_every: int = 200
    save_every: int = 500
    keep_checkpoints: int = 3
    resume: bool = field(default=False, metadata={"help": "Continue from the latest complete checkpoint."})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard, trackio, all or none."})
    cpu: bool = False


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=0.5,c=gelu' -> {'a': 1, 'b': 0.5, 'c': 'gelu'} (JSON values where they parse)."""
    overrides = {}
    for item in filter(None, (text or "").split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    return overrides


class CropAndPad:
    """DataLoader collate: random crop to `max_frames` (seeded per example, so it is resumable) and zero-padding."""

    def __init__(self, collator: DataCollatorForMusiCoderPreTraining, max_frames: int | None, seed: int):
        self.collator, self.max_frames, self.seed = collator, max_frames, seed
        self.epoch = 0

    def __call__(self, examples):
        return self.collator.pad([
            {"input_features": random_crop(example["input_features"], self.max_frames, self.seed, self.epoch,
                                           int(example["example_index"]))}
            for example in examples
        ])


def pad_first_frames(examples, collator: DataCollatorForMusiCoderPreTraining, max_frames: int | None):
    """DataLoader collate for validation: each clip's first `max_frames` frames (all with None), padded."""
    return collator.pad([{"input_features": example["input_features"][:max_frames]} for example in examples])


def pretrain(args: PretrainingArguments) -> dict:
    """Run pre-training; returns the summary also written to `output_dir/summary.json`."""
    output_dir = Path(args.output_dir)
    accelerator = build_accelerator(
        args.output_dir, args.mixed_precision, args.gradient_accumulation_steps, args.report_to, args.cpu
    )
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_incomplete_checkpoints(output_dir)

    config = MusiCoderConfig.from_preset(args.preset, **parse_overrides(args.config_overrides))
    model = AutoModelForPreTraining.from_config(config, attn_implementation=args.attn_implementation)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    collator = DataCollatorForMusiCoderPreTraining(config=config, cfm=args.cfm, ccm=args.ccm)
    pad_train = CropAndPad(collator, args.max_frames, args.seed)

    data = load_from_disk(args.data_dir)
    feature_extractor = feature_extractor_of(args.data_dir)  # shipped with the model: the frames' own extractor
    if feature_extractor.feature_size != config.feature_size:
        raise ValueError(
            f"The frames in {args.data_dir} have {feature_extractor.feature_size} channels but the model's "
            f"feature_size is {config.feature_size}: set feature_size in --config_overrides or featurise again."
        )
    train_data = data[args.train_split].select_columns(["input_features"])
    train_data = train_data.add_column("example_index", list(range(len(train_data))))
    if args.streaming:
        train_data = train_data.to_iterable_dataset(num_shards=max(accelerator.num_processes * 4, 1))
        train_data = split_dataset_by_node(train_data, accelerator.process_index, accelerator.num_processes)
        train_data = train_data.shuffle(seed=args.seed, buffer_size=1000).with_format("numpy")
        train_loader = DataLoader(
            train_data, batch_size=args.per_device_train_batch_size, collate_fn=pad_train, num_workers=args.num_workers
        )
        batches_per_epoch = None
    else:
        train_loader = DataLoader(
            train_data.with_format("numpy"),
            batch_size=args.per_device_train_batch_size,
            shuffle=True,
            collate_fn=pad_train,
            num_workers=args.num_workers,
            drop_last=False,
        )
    eval_loader = None
    if args.eval_split in data:
        # With --max_frames, validation clips are cut to their first max_frames frames: the model never trains on
        # longer sequences, and the loss on longer ones measures length extrapolation, not masked reconstruction.
        eval_loader = DataLoader(
            data[args.eval_split].select_columns(["input_features"]).with_format("numpy"),
            batch_size=args.per_device_eval_batch_size,
            collate_fn=functools.partial(pad_first_frames, collator=collator, max_frames=args.max_frames),
        )

    optimizer, schedule = create_noam_optimizer_and_schedule(
        model, config.hidden_size, warmup_steps=args.warmup_steps, scale=args.lr_scale
    )
    if args.streaming:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
        batches_per_epoch = len(train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    accelerator.register_for_checkpointing(schedule)
    total_steps = total_optimizer_steps(
        args.max_steps, args.num_epochs, batches_per_epoch, args.gradient_accumulation_steps
    )

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "history": []}
    checkpoint = latest_checkpoint(output_dir) if args.resume else None
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        logger.info("Resumed from %s at step %d", checkpoint, state["step"])
    accelerator.init_trackers("musicoder-pretraining", config={k: str(v) for k, v in asdict(args).items()})

    def evaluate() -> float:
        model.eval()
        total, count = torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
        for index, batch in enumerate(eval_loader):
            generator = torch.Generator(accelerator.device).manual_seed(derive_seed(args.seed, -1, index))
            masked = collator.mask(batch["input_features"], batch["attention_mask"], generator=generator)
            with torch.no_grad():
                loss = model(**masked).loss
            weight = masked["reconstruction_mask"].sum()
            total += loss * weight
            count += weight
        model.train()
        total, count = accelerator.reduce(total, "sum"), accelerator.reduce(count, "sum")
        return (total / count.clamp(min=1)).item()

    model.train()
    progress = tqdm(total=total_steps, initial=state["step"], disable=not accelerator.is_local_main_process)
    started, frames_seen, window_loss, window_batches = time.time(), 0, 0.0, 0
    # `elapsed_seconds` in the history is training time across resumes: a resumed run continues the clock.
    clock_start = started - next((r["elapsed_seconds"] for r in reversed(state["history"]) if "elapsed_seconds" in r), 0.0)
    while state["step"] < total_steps:
        pad_train.epoch = state["epoch"]
        if args.streaming:
            train_data.set_epoch(state["epoch"])
            loader = iter(train_loader)
            for _ in range(state["batch_in_epoch"]):  # resuming mid-epoch: replay the reader, skip the batches
                next(loader, None)
        else:
            train_loader.set_epoch(state["epoch"])
            loader = accelerator.skip_first_batches(train_loader, state["batch_in_epoch"])
        for batch in loader:
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            batch_seed = derive_seed(args.seed, state["epoch"], state["batch_in_epoch"], accelerator.process_index)
            generator = torch.Generator(accelerator.device).manual_seed(batch_seed)
            masked = collator.mask(batch["input_features"], batch["attention_mask"], generator=generator)
            torch.manual_seed(batch_seed)  # dropout too depends only on (seed, epoch, batch, process): exact resume
            with accelerator.accumulate(model):
                loss = model(**masked).loss
                check_finite_loss(accelerator, loss, state["step"])
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    clip_and_check_gradients(accelerator, model, args.max_grad_norm, state["step"])
                optimizer.step()
                optimizer.zero_grad()
            state["batch_in_epoch"] += 1
            frames_seen += int(batch["attention_mask"].sum())
            window_loss, window_batches = window_loss + loss.item(), window_batches + 1
            if not accelerator.sync_gradients:
                continue
            schedule.step()
            state["step"] += 1
            progress.update(1)
            step = state["step"]
            record = None
            if step % args.log_every == 0 or step == total_steps:
                record = {"step": step, "loss": window_loss / window_batches, "lr": schedule.get_last_lr()[0]}
                window_loss, window_batches = 0.0, 0
            if eval_loader is not None and (step % args.eval_every == 0 or step == total_steps):
                record = record or {"step": step}
                record["eval_loss"] = evaluate()
            if record is not None:
                record["elapsed_seconds"] = round(time.time() - clock_start, 2)
                state["history"].append(record)
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
                progress.set_postfix({k: round(v, 4) for k, v in record.items() if "loss" in k})
            if step % args.save_every == 0 or step == total_steps:
                save_checkpoint(accelerator, output_dir, step, state, keep=args.keep_checkpoints)
            if step >= total_steps:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    progress.close()

    elapsed = time.time() - started
    frames_per_second = accelerator.reduce(torch.tensor(float(frames_seen), device=accelerator.device), "sum").item()
    summary = {
        "steps": state["step"],
        "final_loss": next((r["loss"] for r in reversed(state["history"]) if "loss" in r), None),
        "final_eval_loss": next((r["eval_loss"] for r in reversed(state["history"]) if "eval_loss" in r), None),
        "history": state["history"],
        "train_seconds_this_run": round(elapsed, 2),
        "frames_per_second_this_run": round(frames_per_second / max(elapsed, 1e-9), 1),
        "num_processes": accelerator.num_processes,
        "parameters": accelerator.unwrap_model(model).num_parameters(),
        "arguments": asdict(args),
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = output_dir / "final"
        accelerator.unwrap_model(model).save_pretrained(final, safe_serialization=True)
        feature_extractor.save_pretrained(final)
        write_json(output_dir / "summary.json", summary)
    accelerator.end_training()
    summary["model"] = accelerator.unwrap_model(model)
    return summary
