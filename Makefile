# The two commands of the README: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench generate redis-server chromium clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# pip's output goes to a log, shown only when the install fails.
	@$(PY) -m pip install -q --upgrade pip >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install -q -e '.[test,bench]' >>$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	touch $@

# Redis is the production broker and what the tests exercise; install it when missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# The console's browser tests drive Debian's Chromium through Playwright (its own browser download is not used).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(PY) -m workers.demo

# The test suite starts its own redis-server on 127.0.0.1 (free port) and stops it afterwards.
test: setup redis-server chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2

lint: setup
	$(VENV)/bin/ruff check .

# Manifests and docs/coverage.md from OpenAI's spec (../shared/openapi, or SPEC=path) plus manifests/overrides.
generate: setup
	$(PY) -m actions.spec generate $(if $(SPEC),--spec $(SPEC))

bench: setup redis-server
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
