# Two commands do the whole set-up on a fresh machine: `make run` and `make test`.
# Everything else here is what CI and people share.

PYTHON ?= python3
UV_VERSION := 0.13.8
BOOTSTRAP := .uv
UV := $(BOOTSTRAP)/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Use the machine's Python; never download one.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: run test lint format generate openapi bench bench-scale bench-streams soak clean

$(UV):
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --extra dev --quiet
	@touch $@

## run: the embedded default (SQLite file, demo data, server on $(HOST):$(PORT), 127.0.0.1:8000 unless given)
HOST ?= 127.0.0.1
PORT ?= 8000
run: $(VENV)/.synced
	$(VENV)/bin/transcripts demo --host $(HOST) --port $(PORT)

# s3rver (Node) is the test S3 that refuses expired presigned URLs.
S3RVER := tests/s3rver/node_modules/.bin/s3rver
$(S3RVER): tests/s3rver/package.json tests/s3rver/package-lock.json
	npm ci --prefix tests/s3rver --no-audit --no-fund --loglevel=error
	@touch $@

## test: the whole suite, on SQLite and on PostgreSQL, and the browser tests in headless Chromium
test: $(VENV)/.synced $(S3RVER)
	@# As root, install Chromium when it is missing (Debian's package: Playwright's own browser
	@# download cannot run here); otherwise the browser tests say what they need.
	@if [ "$$(id -u)" = 0 ] && [ ! -x /usr/bin/chromium ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends chromium || \
		{ apt-get update && apt-get install -y --no-install-recommends chromium; } || exit 1; fi
	$(VENV)/bin/pytest $(PYTEST_ARGS)

## lint: ruff, formatting, mypy, hadolint (the Dockerfile is linted here, built elsewhere)
lint: $(VENV)/.synced
	$(VENV)/bin/ruff check src tests migrations bench
	$(VENV)/bin/ruff format --check src tests migrations bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/hadolint Dockerfile

format: $(VENV)/.synced
	$(VENV)/bin/ruff check --fix src tests migrations bench
	$(VENV)/bin/ruff format src tests migrations bench

## generate: regenerate the Pydantic models from the specs in openapi/
generate: $(VENV)/.synced
	$(VENV)/bin/datamodel-codegen --profile agents
	$(VENV)/bin/datamodel-codegen --profile anam

## openapi: export the service's OpenAPI document to openapi/service.json
openapi: $(VENV)/.synced
	$(VENV)/bin/python -c "import json; from transcripts.app import openapi_document; print(json.dumps(openapi_document(), indent=2))" > openapi/service.json

## bench: the service against its bare baseline under wrk and callgrind (bench/RESULTS.md); BENCH_QUICK=1 for a short run
bench: $(VENV)/.synced
	@# As root, install what is missing; otherwise bench.run says what it needs.
	@if [ "$$(id -u)" = 0 ]; then for tool in wrk valgrind; do command -v $$tool >/dev/null || \
		apt-get install -y $$tool || { apt-get update && apt-get install -y $$tool; } || exit 1; done; fi
	$(VENV)/bin/python -m bench.guard
	$(VENV)/bin/python -m bench.run

## bench-scale: dashboard reads at 1,000 and 1,000,000 sessions (bench/SCALE.md; its databases are built once); SCALE_SECTION=before|after, SCALE_QUICK=1
bench-scale: $(VENV)/.synced
	$(VENV)/bin/python -m bench.scale

## bench-streams: live transcript latency across two replicas and memory per idle stream (bench/STREAMS.md)
bench-streams: $(VENV)/.synced
	$(VENV)/bin/python -m bench.streams

## soak: a real server on a fresh PostgreSQL database under writers and readers (SOAK_SECONDS=60)
soak: $(VENV)/.synced
	$(VENV)/bin/python -m bench.soak

clean:
	rm -rf $(VENV) $(BOOTSTRAP) .pytest_cache .mypy_cache .ruff_cache
