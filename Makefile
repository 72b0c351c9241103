# Two user-facing targets: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test setup data clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,export,plot]'
	touch $(STAMP)

# Fashion-MNIST comes from Debian; skip quietly where apt is not usable (tests that need it then skip).
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	fi
	@test -f $(FMNIST) || echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); its tests will skip"

# Run again, the demo continues (or just reports) the same run instead of starting over.
demo: setup
	@if [ -f runs/demo/trainer_state.pt ]; then \
		$(VENV)/bin/skipnet-train --out runs/demo --resume; \
	else \
		$(VENV)/bin/skipnet-train --data fashion-mnist --out runs/demo; \
	fi

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
