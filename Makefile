# `make train` and `make test` create .venv on first use, then run.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: train test clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,onnx,lite]'
	touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/python train.py $(ARGS)

# Two pytest-xdist workers, each running whole test files (their module fixtures once);
# ARGS="-n 0" runs the suite in one process.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
