"""`musicoder-embed` over a whole collection, killed with SIGKILL part-way and run again: every file exactly once.

    python benchmarks/kill_and_resume.py --inputs data/full/corpus --output_dir runs/corpus16/embeddings

Runs the command with its defaults (plus `--dtype`, `--frame_stride` if given) in a process of its own, kills it
with `kill -9` once `--kill_at` of the files are in finished parts (half, by default), then runs the same command
again. Checks that the output folder then holds each input file exactly once, with a finite embedding, and that
every file is either embedded or in failures.csv. Prints the files, audio hours and x real time of both runs (the
second run skips what the first finished) and of the whole job, its wall time included the lost part.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from musicoder_hf.collection import collect_files
from musicoder_hf.finetuning import SHIPPED_CHECKPOINT


def rows_in_parts(output_dir: Path):
    import pyarrow.parquet as pq

    parts = sorted((output_dir / "embeddings").glob("part-*.parquet"))
    if not parts:
        return []
    return pq.ParquetDataset([str(part) for part in parts]).read(columns=["path", "embedding"]).to_pylist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", required=True)
    parser.add_argument("--output_dir", required=True, help="must not hold another run")
    parser.add_argument("--model", default=SHIPPED_CHECKPOINT)
    parser.add_argument("--kill_at", type=float, default=0.5, help="fraction of the files done when it is killed")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more musicoder-embed arguments")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        parser.error(f"{output_dir} is not empty")
    files = collect_files(args.inputs)
    command = [str(Path(sys.executable).parent / "musicoder-embed"), "--model_name_or_path", args.model,
               "--inputs", *args.inputs, "--output_dir", str(output_dir), *args.extra]

    started = time.time()
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = int(len(files) * args.kill_at)
    while first.poll() is None:
        time.sleep(1.0)
        if len(rows_in_parts(output_dir)) >= target:
            os.kill(first.pid, signal.SIGKILL)
            break
    first.wait()
    killed_after = time.time() - started
    rows_before = len(rows_in_parts(output_dir))

    resumed = subprocess.run(command, capture_output=True, text=True)
    total_wall = time.time() - started
    if resumed.returncode not in (0, 3):  # 3: some files failed, as failures.csv lists
        print(resumed.stderr[-3000:])
        return 1
    summary = json.loads((output_dir / "summary.json").read_text())
    rows = rows_in_parts(output_dir)
    paths = [row["path"] for row in rows]
    failures_file = output_dir / "failures.csv"
    failed = set()
    if failures_file.exists():
        import csv

        with open(failures_file, newline="") as handle:
            failed = {row["path"] for row in csv.DictReader(handle)}
    wanted = {str(path) for path in files}
    duplicates = len(paths) - len(set(paths))
    missing = wanted - set(paths) - failed
    finite = all(np.isfinite(np.asarray(row["embedding"], dtype=np.float32)).all() for row in rows)
    hours = summary["output_folder"]["audio_hours"]
    second = summary["this_run"]
    print(f"| run | files | audio h | wall s | x real time |\n|---|---|---|---|---|")
    print(f"| first, killed with SIGKILL at {killed_after:.0f} s | {rows_before} in finished parts | | "
          f"{killed_after:.0f} | |")
    print(f"| second (resumed) | {second['files_done']} | {second['audio_hours']:.2f} | "
          f"{second['wall_seconds']:.0f} | {second['x_real_time']:.0f} |")
    print(f"| whole job | {len(set(paths))} | {hours:.2f} | {total_wall:.0f} | {hours * 3600 / total_wall:.0f} |")
    print(f"\nfiles found {len(files)}; rows {len(paths)}; duplicate rows {duplicates}; failed {len(failed)}; "
          f"neither embedded nor failed {len(missing)}; embeddings finite: {finite}")
    ok = duplicates == 0 and not missing and finite and len(set(paths)) + len(failed) == len(wanted)
    print("every file exactly once" if ok else "NOT every file exactly once")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
