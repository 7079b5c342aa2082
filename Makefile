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
FLOWER_VENV := .venv-flower
FLOWER_PY := $(FLOWER_VENV)/bin/python
STAMP_FLOWER := $(FLOWER_VENV)/.stamp-flower-$(HASH)
PKGS := secagg protocols dp recsys analysis privagg examples

.PHONY: demo test lint bench typecheck pytest clean security flower-venv

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

pytest: $(STAMP_DEV) $(STAMP_FLOWER)
	$(PY) -m pytest -q -p no:cacheprovider

test: lint pytest

# The adversarial and fault-injection suite with its figures (long fuzz runs included).
security: $(STAMP_DEV)
	$(PY) tests/security/report.py --long

# Flower lives in its own virtualenv: flwr 1.42.0 pins ray==2.55.1, protobuf<7 and
# packaging<26, older than the dev extras resolve. privagg[flower] (privagg.flower) is
# installed there; tests/flower drives it, and the Flower peer benchmarks run in it.
$(FLOWER_PY):
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_PY) -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel

$(STAMP_FLOWER): pyproject.toml | $(FLOWER_PY)
	$(FLOWER_PY) -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(FLOWER_PY) -m pip install -q --disable-pip-version-check -e '.[flower]' pytest scikit-learn
	rm -f $(FLOWER_VENV)/.stamp-flower-*
	touch $@

flower-venv: $(STAMP_FLOWER)

bench: $(STAMP_DEV) $(STAMP_FLOWER)
	@mkdir -p benchmarks/results
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b --out benchmarks/results || exit 1; done

clean:
	rm -rf $(VENV) $(FLOWER_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
