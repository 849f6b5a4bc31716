# posemu — the two commands a new user runs: `make run` and `make test`.
# Both install what they need: Debian packages (when root and missing), a venv, the package.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# What each command installs into the venv: `make run` only the emulator (with PC/SC readers);
# `make test`, `lint`, `unit` and `bench` the test tools and the linters too.
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# System packages: pcscd + vsmartcard-vpcd give a real PC/SC reader with no hardware;
# swig, libpcsclite-dev and gcc build pyscard.
SYSTEM_PKGS := pcscd vsmartcard-vpcd swig libpcsclite-dev gcc
PYTEST_ARGS ?=

.PHONY: run test lint unit bench sysdeps venv clean

run: $(RUN_STAMP)
	$(BIN)/posemu ui

test: lint unit

unit: $(TEST_STAMP)
	$(BIN)/python -m tests.testrun -- $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(TEST_STAMP)
	$(BIN)/python -m tests.bench

sysdeps:
	@missing=""; for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "posemu: missing system packages:$$missing — run as root or: sudo apt-get install$$missing" >&2; \
	  fi; \
	fi

venv: $(TEST_STAMP)

$(VENV)/bin/python: | sysdeps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[pcsc]'
	@touch $@

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@touch $@ $(RUN_STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache *.egg-info
