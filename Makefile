# posemu — the two commands a new user runs: `make run` and `make test`.
# Both install what they need: Debian packages (when root and missing), a venv, the package.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# System packages: pcscd + vsmartcard-vpcd give a real PC/SC reader with no hardware;
# swig, libpcsclite-dev and gcc build pyscard.
SYSTEM_PKGS := pcscd vsmartcard-vpcd swig libpcsclite-dev gcc
PYTEST_ARGS ?=

.PHONY: run test lint unit bench sysdeps venv clean ui

run: venv
	$(BIN)/posemu ui

test: venv lint unit

unit: venv
	$(BIN)/python -m tests.testrun -- $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: venv
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

venv: $(STAMP)

$(STAMP): pyproject.toml | sysdeps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
