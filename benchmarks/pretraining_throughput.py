"""Pre-training throughput of MusiCoder: frames/s, peak memory and model FLOPs utilisation (MFU).

    python benchmarks/pretraining_throughput.py                      # Base, batch 64 x 1292 frames, bf16 on CUDA
    python benchmarks/pretraining_throughput.py --batch_size 4 --num_frames 430 --steps 3   # a quick CPU figure

One optimizer step = CFM + CCM masking on the device, forward, Huber loss, backward, Adam step (the training loop's
work without data loading). MFU counts 6 x parameters x frames (matmuls, forward + backward) plus attention's
12 x layers x hidden x frames^2 per clip, against the device's dense bf16 peak.
"""

import argparse
import time

import torch

from musicoder_hf import DataCollatorForMusiCoderPreTraining, MusiCoderConfig, MusiCoderForPreTraining
from musicoder_hf.optimization import create_noam_optimizer_and_schedule


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' datasheets.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="musicoder-base")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_frames", type=int, default=1292)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--attn_implementation", default="sdpa")
    parser.add_argument("--peak_tflops", type=float, default=None)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = MusiCoderConfig.from_preset(args.preset)
    model = MusiCoderForPreTraining._from_config(config, attn_implementation=args.attn_implementation).to(device)
    optimizer, schedule = create_noam_optimizer_and_schedule(model, config.hidden_size)
    collator = DataCollatorForMusiCoderPreTraining(config=config)
    features = torch.randn(args.batch_size, args.num_frames, config.feature_size, device=device)
    attention_mask = torch.ones(args.batch_size, args.num_frames, dtype=torch.long, device=device)
    generator = torch.Generator(device).manual_seed(0)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.dtype]

    def step():
        batch = collator.mask(features, attention_mask, generator=generator)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps

    frames = args.batch_size * args.num_frames
    parameters = model.num_parameters()
    flops = 6 * parameters * frames + 12 * config.num_hidden_layers * config.hidden_size * args.num_frames * frames
    peak = peak_tflops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; preset {args.preset} ({parameters / 1e6:.2f}M parameters); {args.dtype}; "
          f"{args.attn_implementation} attention; batch {args.batch_size} x {args.num_frames} frames")
    frames_per_audio_second = 44100 / 1024
    print(f"step time: {seconds * 1000:.1f} ms; throughput: {frames / seconds:,.0f} frames/s "
          f"= {frames / seconds / frames_per_audio_second:,.0f}x real time")
    print(f"achieved: {flops / seconds / 1e12:.2f} TFLOP/s" + (f"; MFU {flops / seconds / 1e12 / peak:.1%} of "
          f"{peak:.0f} TFLOP/s bf16 peak" if peak else "; MFU: pass --peak_tflops for this device"))
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
