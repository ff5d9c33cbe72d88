# Hunt Relay: the two commands are `make demo` and `make test`. Everything they need is installed here
# (a virtual environment in .venv from the pinned requirements, Azurite in node_modules from the npm lock file).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := .make
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test demo setup lint typecheck unit bench clean

$(STAMP)/venv: requirements.txt requirements-dev.txt
	@mkdir -p $(STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMP)/npm: package.json package-lock.json
	@mkdir -p $(STAMP)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Debian's Chromium and ChromeDriver, for the ops page's browser test (tests/relay/test_ops_page.py).
$(STAMP)/chromium:
	@mkdir -p $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }
	@touch $@

setup: $(STAMP)/venv $(STAMP)/npm $(STAMP)/chromium

lint: $(STAMP)/venv
	$(BIN)/ruff check .

typecheck: $(STAMP)/venv
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/python -m sandbox.demo

bench: setup
	$(BIN)/python bench/sandbox_latency.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/quota.py
	$(BIN)/python bench/large_result.py

clean:
	rm -rf $(VENV) node_modules $(STAMP) .pytest_cache .mypy_cache .ruff_cache
