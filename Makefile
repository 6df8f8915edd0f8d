# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates a local virtual environment with the CPU build of torch 2.13 on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,rna]'
	# FID tests: torch-fidelity without the torchvision it would pull (no torchvision imports beside the CPU torch; the tests stub it)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps torch-fidelity==0.4.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fluxmatch train --out runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/step_time.py

clean:
	rm -rf $(VENV) runs .pytest_cache
