# One-command set-up for a fresh Debian machine (root or passwordless sudo): system packages, a virtualenv, the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system-deps test demo paper pretrained clean

# ffmpeg: the audio-classification pipeline decodes file paths with it, and torchcodec links its libraries.
# fluidsynth + fluid-soundfont-gm: build-tasks renders the music21 corpus to audio.
APT_PACKAGES := ffmpeg fluidsynth fluid-soundfont-gm
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls several GB of CUDA wheels on a CPU machine.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: system-deps $(VENV)/.installed

test: install
	$(PY) -m pytest -q -p no:warnings

# The main job: real music -> pre-training -> fine-tuning -> evaluation -> Hub folder -> pipeline (runs/demo/report.md).
demo: install
	$(PY) training/demo.py --output_dir runs/demo --data_dir data

# The paper's Tables 5-6 on our own music, with per-layer probes (model_cards/paper_results.md; see docs/ablation.md).
paper: install
	$(PY) training/experiments.py --data_dir data/paper --output_dir runs/paper --model_cards_dir model_cards

# Rebuild the shipped checkpoint from scratch: the 16 h corpus, pre-training (about 70 min on 2 CPU cores), its
# evaluation against hand-crafted features, and its model card (see docs/pretrained.md).
pretrained: install
	$(PY) training/build_pretrained.py
	$(PY) training/experiments.py --shipped_model pretrained/musicoder-small --shipped_only
	$(PY) training/build_pretrained.py --output_dir pretrained/musicoder-small --card_only \
		--evaluation runs/paper/shipped_results.json

clean:
	rm -rf $(VENV) .cache
