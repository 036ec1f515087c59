# Everything a fresh clone needs: `make test` and `make demo` bootstrap the venv and the data.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.snacs-installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: test test-all demo setup data lint bench clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian ships the full Fashion-MNIST; install it when missing and apt is usable (we are root here).
data:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST not found in $(FMNIST); install Debian's dataset-fashion-mnist or pass --data-root"; \
	  fi; \
	fi

# The fast suite, then the slow end-to-end tests (exit 5 = none selected is fine).
test: setup
	$(PY) -m pytest -q -m "not slow"
	$(PY) -m pytest -q -m slow; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(PY) -m snacs.demo

lint: setup
	$(PY) -m ruff check src tests benchmarks

bench: setup
	$(PY) -m benchmarks.report

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
