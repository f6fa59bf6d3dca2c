# CryoKube developer entry points. `make demo` and `make test` work on a fresh machine:
# each creates .venv when missing and installs the project (editable) with its dev extras.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# The source folder `operator/` would shadow the standard library's `operator` for `python -m`
# run from the repository root (Python prepends the working directory); PYTHONSAFEPATH stops that.
export PYTHONSAFEPATH := 1

.PHONY: venv demo test lint typecheck bench e2e clean tools

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# uv resolves and installs the dev set in seconds where pip backtracks for minutes.
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=69" wheel uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cryokube demo

# Pinned Go tools (helm, oauth2-proxy) from the Go module proxy into .tools/bin; instant when built.
tools:
	scripts/tools.sh

test: $(STAMP) lint tools
	$(PY) -m pytest $(PYTEST_ARGS)

# mypy cannot follow setuptools' editable import hook, so it reads the two packages through a
# link tree that mirrors the installed names (cryokube.operator -> operator/, ...).
TYPECHECK_ROOT := .cache/typecheck
lint: $(STAMP)
	$(VENV)/bin/ruff check operator processing tests benchmarks
	$(VENV)/bin/ruff format --check operator processing tests benchmarks
	@mkdir -p $(TYPECHECK_ROOT)/cryokube
	@ln -sfn "$(CURDIR)/operator" $(TYPECHECK_ROOT)/cryokube/operator
	@ln -sfn "$(CURDIR)/processing" $(TYPECHECK_ROOT)/cryokube/processing
	cd $(TYPECHECK_ROOT) && MYPYPATH=. "$(CURDIR)/$(VENV)/bin/mypy" --config-file "$(CURDIR)/pyproject.toml" --cache-dir "$(CURDIR)/.mypy_cache" -p cryokube.operator -p cryokube.processing
	$(VENV)/bin/lint-imports --config .importlinter

bench: $(STAMP)
	PYTHONPATH=benchmarks $(PY) benchmarks/run.py $(BENCH_ARGS)

# The cluster tier (tests/e2e, docs/testing.md): a real etcd, kube-apiserver, controller manager,
# scheduler and kwok on loopback (scripts/cluster.sh), built by `make tools`. `make test` never
# collects tests/e2e (pytest's norecursedirs); naming the folder runs it.
E2E_ARGS ?=
e2e: $(STAMP) tools
	$(PY) -m pytest tests/e2e -p no:cacheprovider $(E2E_ARGS)

clean:
	rm -rf $(VENV) build dist .cache .pytest_cache .mypy_cache .ruff_cache
