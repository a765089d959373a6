"""`musicoder-embed` against a plain Python loop over `MusiCoderEmbedder`, on the same files, in one run.

    python benchmarks/embed_collection.py --inputs data --limit 1000 [--model pretrained/musicoder-small]
    python benchmarks/embed_collection.py --inputs data --limit 1000 --dtype bfloat16

The files are the first `--limit` audio files under `--inputs` (`musicoder_hf.collection.collect_files`); when there
are fewer, symbolic links to them fill the count (other paths, the same audio). Each way runs in its own process, the
loop first: the loop embeds one file at a time (`embedder(path)`, pooled as the checkpoint pools; a file it cannot
use is skipped), then the command with its defaults (batched windows, Parquet parts), once per `--num_workers` given
(default 2). Peak memory is the largest proportional set size (PSS) of the process and its children (the command's
workers) together, sampled every 0.1 s. Prints a markdown table.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import soundfile

from musicoder_hf.collection import collect_files
from musicoder_hf.finetuning import SHIPPED_CHECKPOINT

LOOP = """
import sys, time, torch
from musicoder_hf import MusiCoderEmbedder
embedder = MusiCoderEmbedder.from_pretrained(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
for path in open(sys.argv[3]).read().splitlines():
    try:  # a bare loop stops at the first file it cannot use; this one at least goes on, as the command does
        embedder(path).embeddings.numpy()
    except ValueError:
        pass
"""


def tree_memory_mib(pid: int) -> float:
    """Proportional set size (PSS) of `pid` and all its descendants, MiB: pages a forked worker shares with its parent
    count once, split between them (summing their resident sizes would count them twice)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as rollup:
                total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending.extend(int(child) for child in children.read().split())
        except (OSError, StopIteration):
            continue
    return total / 1024


def run_measured(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak memory (MiB, process tree) of `command`."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], tree_memory_mib(process.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode not in (0, 3):  # 3: some files could not be used
        raise RuntimeError(f"{command[:4]} failed ({process.returncode}):\n{stderr[-3000:]}")
    return wall, peak[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", default=["data"], help="folders, globs or lists of audio files")
    parser.add_argument("--limit", type=int, default=1000, help="files to embed")
    parser.add_argument("--model", default=SHIPPED_CHECKPOINT)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--num_workers", type=int, nargs="+", default=[2], help="the command's, one run each")
    args = parser.parse_args(argv)
    found = collect_files(args.inputs)
    if not found:
        raise SystemExit(f"No audio files under {args.inputs}.")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        files = found[: args.limit]
        for copy in range(args.limit - len(files)):  # fill the count with links to the same audio
            source = found[copy % len(found)]
            link = work / "links" / f"{copy // len(found)}" / f"{copy % len(found):06d}{source.suffix}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
            files.append(link)
        listing = work / "files.txt"
        listing.write_text("\n".join(str(path) for path in files) + "\n")
        hours = sum(soundfile.info(str(path)).duration for path in files) / 3600

        rows = {}
        wall, peak = run_measured([sys.executable, "-c", LOOP, args.model, args.dtype, str(listing)], env)
        rows["loop over `MusiCoderEmbedder`, one file at a time"] = (wall, peak)
        for workers in args.num_workers:
            output = work / f"embeddings_{workers}"
            wall, peak = run_measured([sys.executable, "-m", "musicoder_hf.collection", "--model_name_or_path",
                                       args.model, "--inputs", str(listing), "--output_dir", str(output), "--dtype",
                                       args.dtype, "--num_workers", str(workers)], env)
            rows[f"`musicoder-embed --num_workers {workers}`"] = (wall, peak)
            summary = json.loads((output / "summary.json").read_text())

    print(f"{len(files)} files, {hours:.2f} h of audio, `{args.model}`, {args.dtype}, {os.cpu_count()} CPU threads; "
          f"the command embedded {summary['this_run']['files_done']} and could not use "
          f"{summary['this_run']['files_failed']}\n")
    print("| way | wall (s) | x real time | files/s | peak memory (MiB) |\n|---|---|---|---|---|")
    for name, (wall, peak) in rows.items():
        print(f"| {name} | {wall:.0f} | {hours * 3600 / wall:.0f} | {len(files) / wall:.1f} | {peak:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
