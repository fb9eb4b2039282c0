# The README's two commands: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean lock lock-upgrade

# Every dependency at the version and hash of requirements/dev.lock, then paperfeed
# itself built with the locked setuptools (nothing fetched unpinned).
$(STAMP): pyproject.toml requirements/dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "paperfeed needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# make lock: the locks follow pyproject.toml (a dependency added or removed), keeping every
# other pin; make lock-upgrade: every dependency re-pinned to its newest release that
# pyproject.toml allows (see docs/deploy.md, "Dependencies"). Then make test, and commit
# the two locks.
UV := $(VENV)-lock/bin/uv
LOCK := $(UV) pip compile pyproject.toml requirements/build.in --universal --python-version 3.11 --generate-hashes --quiet --custom-compile-command "make lock"
lock lock-upgrade:
	test -x $(UV) || { $(PYTHON) -m venv $(VENV)-lock && $(VENV)-lock/bin/pip install --quiet uv; }
	$(LOCK) $(if $(filter lock-upgrade,$@),--upgrade) --extra dev -o requirements/dev.lock
	$(LOCK) $(if $(filter lock-upgrade,$@),--upgrade) -o requirements/base.lock

run: $(STAMP)
	$(BIN)/paperfeed run

test: $(STAMP)
	scripts/test-setup.sh
	$(MAKE) --no-print-directory lint
	scripts/test-extension.sh
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.trending

clean:
	rm -rf $(VENV) $(VENV)-lock var .mypy_cache .ruff_cache .pytest_cache
