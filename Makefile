# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo
PYTEST_WORKERS ?= 2

.PHONY: demo test install sysdeps clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel found locally. Unpinned, pip would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[simulate,test]'
	@touch $@

install: $(STAMP)

# Debian tools the tests use as independent oracles and inputs: bcftools (consensus), tabix, vt-examples (GRCh37 chr20).
sysdeps:
	@if ! command -v bcftools >/dev/null || ! test -f /usr/share/doc/vt/examples/ref/20.fa.gz; then \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q bcftools tabix vt-examples >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/pstore simulate $(DEMO)/cohort --demo --seed 1
	$(BIN)/python -m performer_store.demo $(DEMO)
	$(BIN)/pstore run $(DEMO)/config.toml

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

clean:
	rm -rf $(DEMO) .pytest_cache
