# Two user-facing targets: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test test-matrix test-timm setup data arm64 lint format clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,export,plot]'
	touch $(STAMP)

# Fashion-MNIST comes from Debian; install it when apt is usable (tests that need it skip otherwise).
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; \
	fi; true

# LiteRT's aarch64 build (the phones' ARM kernels) under qemu, for `skipnet-eval --platform arm64`:
# set up once in ~/.cache/skipnet/arm64 (about a minute; needs root for mmdebstrap); run again, it
# checks the set-up and says what is missing.
arm64: $(STAMP)
	@$(PY) -c 'from skipnet.runtime.cli import arm64_main; raise SystemExit(arm64_main())'

# The whole chain on Fashion-MNIST (runs/demo/report.md); run again, it resumes where it stopped.
# FULL=1: the full recipe on every image (runs/demo-full). DATA_DIR=DIR: the four idx files from DIR.
demo: setup
	$(if $(or $(wildcard $(FMNIST)),$(DATA_DIR)),,$(error Fashion-MNIST is not installed: run `sudo apt-get install dataset-fashion-mnist`, or `make demo DATA_DIR=DIR` with a folder holding its four idx files))
	@$(VENV)/bin/skipnet-pipeline $(if $(filter 1 yes true,$(FULL)),--full) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

test: setup arm64 lint
	@test -f $(FMNIST) || echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); its tests will skip"
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist worksteal --durations=15

# The tests whose outcome rests on floating point (pytest -m numeric) under other CPUs' kernels
# (oneDNN and PyTorch limited to AVX2) and with 1 and 2 threads, each cell in turn: every cell must
# pass, so that CI passes on whichever CPU it gets. Not part of `make test` (tests/matrix.py).
test-matrix: setup arm64
	$(PY) tests/matrix.py $(if $(OUT),--out $(OUT))

# timm's own model tests (tests/test_models.py of the installed timm's sdist) on the SkipNet family:
# forward, backward, default_cfgs, features_only, forward_intermediates, TorchScript and FX, as timm's
# models pass them. The sdist is downloaded once into ~/.cache/skipnet/timm-tests (later runs work
# offline). ARGS: more pytest arguments, e.g. ARGS='-k mobilenetv3_small_050' runs a timm model
# instead. Not part of `make test` (tests/timm_peer/run.py).
test-timm: $(STAMP)
	$(PY) tests/timm_peer/run.py $(ARGS)

# One style (pyproject.toml's [tool.ruff]): `make lint` checks it, as make test does; `make format` applies it.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache
