# One-command set-up for a fresh Debian machine (root or passwordless sudo): system packages, a virtualenv, the tests.
# `make test PYTHON=python3.13` tests another Python (3.11-3.13); `make test-oldest` tests the oldest dependency
# versions the package allows (constraints/oldest.txt). docs/install.md has the tested versions.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OLDEST_PYTHON ?= python3.11
OLDEST_VENV := .venv-oldest
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Which torch to install first, if not the newest the index serves, e.g. TORCH="torch==2.13.0 torchcodec==0.13.0"; and
# where from, e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU build (a few hundred MB instead of
# several GB of CUDA libraries). pip then keeps that torch.
TORCH ?=
TORCH_INDEX_URL ?=
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system-deps test test-oldest demo paper pretrained clean

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
	$(if $(TORCH)$(TORCH_INDEX_URL),$(PY) -m pip install -q $(or $(TORCH),torch torchcodec) \
		$(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)))
	# The newest versions the index serves within pyproject.toml's ranges: what a new user gets today.
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m musicoder_hf.versions
	touch $@

install: system-deps $(VENV)/.installed

test: install
	$(PY) -m pytest -q -p no:warnings

# The oldest versions pyproject.toml allows, in their own virtualenv: the model, the feature extractor (against
# librosa), the pipeline, the Hub surface and trust_remote_code, transformers' conformance mixins, Trainer.
OLDEST_TESTS := tests/test_modeling_musicoder.py tests/test_feature_extraction_musicoder.py \
	tests/test_feature_extraction_torch.py tests/test_hub_integration.py tests/test_long_audio.py \
	tests/test_any_length.py tests/test_checkpoint_loading.py tests/test_pooling.py tests/test_data_collator.py \
	tests/test_shipped_checkpoint.py tests/test_audio_inputs.py tests/test_patchout.py
$(OLDEST_VENV)/.installed: pyproject.toml constraints/oldest.txt
	$(OLDEST_PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install -q -c constraints/oldest.txt -e ".[dev]"
	$(OLDEST_VENV)/bin/python -m musicoder_hf.versions --expect constraints/oldest.txt
	touch $@

test-oldest: system-deps $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m pytest -q -p no:warnings $(OLDEST_TESTS)

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
	rm -rf $(VENV) $(OLDEST_VENV) .cache
