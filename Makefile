# privagg developer entry points. Every target builds or reuses .venv idempotently:
# a stamp file keyed on the hash of pyproject.toml makes the second run instant.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_PIN := torch==2.13.0
HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
STAMP_RUN := $(VENV)/.stamp-run-$(HASH)
STAMP_DEV := $(VENV)/.stamp-dev-$(HASH)
PKGS := secagg protocols dp recsys analysis

.PHONY: demo test lint bench typecheck pytest clean security

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

# What `make demo` and the deployment quick start of the README need: the core and the
# `net` extra (grpcio). No torch: only the `silo` extra (--silo-users) uses it.
$(STAMP_RUN): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[net]'
	rm -f $(VENV)/.stamp-run-*
	touch $@

# torch first, pinned (CPU wheel), so the dev extra never resolves a multi-GB CUDA build.
$(STAMP_DEV): pyproject.toml | $(PY)
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[dev]'
	rm -f $(VENV)/.stamp-dev-* $(VENV)/.stamp-run-*
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(VENV)/bin/privagg demo

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check $(PKGS) tests benchmarks
	$(VENV)/bin/ruff format --check $(PKGS) tests benchmarks
	$(VENV)/bin/mypy

pytest: $(STAMP_DEV)
	$(PY) -m pytest -q -p no:cacheprovider

test: lint pytest

# The adversarial and fault-injection suite with its figures (long fuzz runs included).
security: $(STAMP_DEV)
	$(PY) tests/security/report.py --long

# Flower lives in its own virtualenv: it is a peer we measure, never a dependency.
FLOWER_VENV := .venv-flower
$(FLOWER_VENV)/bin/python:
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install -q --disable-pip-version-check flwr==1.42.0

bench: $(STAMP_DEV) $(FLOWER_VENV)/bin/python
	@mkdir -p benchmarks/results
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b --out benchmarks/results || exit 1; done

clean:
	rm -rf $(VENV) $(FLOWER_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
