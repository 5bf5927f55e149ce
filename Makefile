# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test test-pg15 lint bench clean-db install browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Start the embedded database (unless DATABASE_URL is set), migrate, serve on :8000.
run: $(STAMP)
	$(BIN)/llm-service serve

## Debian's chromium for the pages' browser tests (/finance, /investigations). Outside CI a
## machine without it (no root, no sudo) only warns and those tests skip; in CI (CI=true) it
## must install, or the run fails, and the tests fail rather than skip.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { if [ "$$CI" = "true" ]; then echo "chromium could not be installed: CI needs it for the browser tests" >&2; exit 1; fi; \
	       echo "chromium unavailable: the page browser tests will skip"; }
	@if [ "$$CI" = "true" ]; then command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || { echo "chromium is not on PATH after installing it" >&2; exit 1; }; fi

## The whole test suite against a real PostgreSQL (embedded unless DATABASE_URL is set).
test: $(STAMP) browser
	$(BIN)/python -m pytest

## The whole suite against Debian's PostgreSQL 15 (the production version) with pgvector built
## from PGVECTOR_SRC, on a private throwaway cluster (scripts/test_pg15.sh).
test-pg15: $(STAMP) browser
	scripts/test_pg15.sh

## Ruff and mypy, as CI runs them.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Benchmarks (figures, never pass/fail).
bench: $(STAMP)
	$(BIN)/python -m bench

## Stop the embedded database and delete its data directory.
clean-db: $(STAMP)
	$(BIN)/llm-service db-stop || true
	rm -rf .llm_service
