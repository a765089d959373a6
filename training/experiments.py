"""The paper's Tables 5-6 on our own music (`make paper`): hand-crafted baselines, MusiCoder without pre-training, with
CFM, CCM and CFM + CCM, and per-layer MLP probes, on the folk-tradition task (10-fold cross-validation, accuracy) and
instrument tagging (held-out split, ROC-AUC / PR-AUC macro).

    python training/experiments.py [--scale small|tiny] [--data_dir data/paper] [--output_dir runs/paper]

Builds the data it needs (resumable), writes runs/paper/{results.json,results.md,layer_probe.png} and copies the table
and the plot to model_cards/paper_results.md and model_cards/paper_layer_probe.png. The logic lives in
`musicoder_hf.experiments`.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # hundreds of short loops: progress bars would drown the log

# training/evaluate.py would shadow the `evaluate` package for scripts run from this folder (sys.path[0]).
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from musicoder_hf.experiments import main  # noqa: E402 (after the sys.path guard)

if __name__ == "__main__":
    sys.exit(main())
