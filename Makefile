# posemu — the two commands a new user runs: `make run` and `make test`.
# Both install what they need: Debian packages (as root; otherwise make stops with the command), a venv, the package.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# What each command installs into the venv: `make run` only the emulator (with PC/SC readers);
# `make test`, `lint`, `unit` and `bench` the test tools and the linters too.
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# System packages (Debian/Ubuntu): python3-venv makes the venv; pcscd + vsmartcard-vpcd give a real
# PC/SC reader with no hardware; swig, libpcsclite-dev, gcc and python3-dev build pyscard from source;
# fonts-wqy-microhei gives the PDF receipts (posemu receipt --pdf) their Chinese glyphs;
# tshark decodes `--pcap` captures with posemu's Wireshark dissector in the tests.
SYSTEM_PKGS := python3-venv python3-dev pcscd vsmartcard-vpcd swig libpcsclite-dev gcc fonts-wqy-microhei tshark
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

# As root, missing packages are installed; otherwise make stops at once with the command to run.
# Nothing may wait for an answer: DEBIAN_FRONTEND=noninteractive, and wireshark-common's question
# "should non-superusers be able to capture packets?" is answered (no) before it is asked.
sysdeps:
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "posemu: not a Debian/Ubuntu system; make sure these (or their equivalents) are installed:" \
	       "$(SYSTEM_PKGS)" >&2; exit 0; \
	fi; \
	missing=""; for p in $(SYSTEM_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "posemu: missing system packages:$$missing" >&2; \
	  echo "Install them, then run make again:" >&2; \
	  echo "    sudo apt-get install -y$$missing" >&2; \
	  exit 1; \
	fi; \
	echo "installing system packages:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null

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
