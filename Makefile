# The verbs of the project. Each target creates the virtualenv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The images install Python packages only from this wheelhouse (see deploy/Dockerfile).
WHEELHOUSE    := deploy/wheels
WHEEL_PYTHONS ?= 3.11 3.12 3.13
# pip download evaluates python_full_version markers with the host's interpreter, so a
# dependency that only an early patch release needs is listed here: redis wants it below
# 3.11.3, and Debian's python3 is 3.11.2.
WHEEL_EXTRAS  ?= async-timeout>=4.0.3
WHEEL_ARCH    ?= $(patsubst arm64,aarch64,$(shell uname -m))
# glibc wheels a Debian bookworm base (glibc 2.36) can load; pip does not infer older tags.
WHEEL_PLATFORMS = $(foreach glibc,2_28 2_27 2_26 2_24 2_17,manylinux_$(glibc)_$(WHEEL_ARCH)) \
	manylinux2014_$(WHEEL_ARCH)
COMPOSE       ?= docker compose
# mermaid-cli for the docs' diagrams, installed into the project (gitignored). It drives the
# system's Chromium, so Puppeteer's own browser download is skipped.
MERMAID_PREFIX := .cache/mermaid
MMDC           := $(MERMAID_PREFIX)/node_modules/.bin/mmdc
MERMAID_CLI    ?= @mermaid-js/mermaid-cli@^11.12

# The tiers `make test` runs, in this order: fastest first, so a break in the quick ones shows
# within minutes instead of after the slow ones (the whole run is about 12 minutes on 2 cores).
# Measured one by one on a quiet moment of a shared 2-core machine: docs 5 s, unit 50 s, browser
# 67 s, integration 2.8 min, e2e 3.8 min; security is the longest (2.4 times e2e, both loaded), and
# compose builds its images. The README's "Tests" table lists them in the same order, and a docs
# test keeps the two in step.
TIERS := unit docs browser integration e2e security hostile compose
# More pytest arguments for every test target: PYTEST_ARGS=-x stops at the first failure, and
# PYTEST_ARGS="-n 2" spreads a tier over two processes (pytest-xdist; unit and browser took 0.72
# of their serial time on 2 cores).
PYTEST_ARGS ?=

.PHONY: install run test test-unit test-integration test-e2e test-security test-browser test-compose \
	test-hostile test-docs lint format clean wheels up down logs bench mermaid diagrams

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install  ## the whole cluster as local processes, gateway on http://localhost:8000
	$(BIN)/python -m deploy.devcluster

test: install  ## every tier, fastest first, in one pytest run that prints a line as each tier starts
	$(BIN)/pytest $(PYTEST_ARGS) $(addprefix tests/,$(TIERS))

test-unit: install  ## the quick loop: pure rules and apps in process, about a minute
	$(BIN)/pytest $(PYTEST_ARGS) tests/unit

test-integration: install
	$(BIN)/pytest $(PYTEST_ARGS) tests/integration

test-e2e: install
	$(BIN)/pytest $(PYTEST_ARGS) tests/e2e

test-security: install
	$(BIN)/pytest $(PYTEST_ARGS) tests/security

test-hostile: install  ## attacks on availability against a running cluster (loopback only, bounded)
	$(BIN)/pytest $(PYTEST_ARGS) tests/hostile

test-browser: install  ## the demo page and the CSRF attacks in Debian's Chromium (apt-get install -y chromium)
	$(BIN)/pytest $(PYTEST_ARGS) tests/browser

test-compose: install  ## the cluster in containers (needs a Docker engine and `docker compose`)
	$(BIN)/pytest $(PYTEST_ARGS) tests/compose

test-docs: install  ## docs/ kept true: code references, constants, generated numbers, diagrams (after `make mermaid`)
	$(BIN)/pytest $(PYTEST_ARGS) tests/docs

mermaid: $(MMDC)  ## mermaid-cli for rendering the docs' diagrams (needs node and npm)

$(MMDC):
	@command -v npm >/dev/null || { echo "make mermaid needs node and npm (Debian: apt-get install -y nodejs npm)"; exit 1; }
	mkdir -p $(MERMAID_PREFIX)
	PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix $(MERMAID_PREFIX) --no-audit --no-fund --loglevel=error '$(MERMAID_CLI)'
	touch $@

diagrams: install $(MMDC)  ## render every mermaid block of README.md and docs/ to docs/diagrams/*.svg
	$(BIN)/python -m tests.docs.mermaid

wheels: $(WHEELHOUSE)/.complete  ## the wheelhouse the images install from, offline

# Linux wheels for every Python the images may run (the official image has 3.12, a Debian
# base 3.11), from pyproject.toml's build backend and runtime dependencies.
$(WHEELHOUSE)/.complete: pyproject.toml Makefile $(STAMP)
	rm -f $(WHEELHOUSE)/*.whl $@
	$(BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
		print(*p["build-system"]["requires"], *p["project"]["dependencies"], sep="\n")' \
		> $(WHEELHOUSE)/requirements.txt
	printf '%s\n' $(foreach req,$(WHEEL_EXTRAS),'$(req)') >> $(WHEELHOUSE)/requirements.txt
	for version in $(WHEEL_PYTHONS); do \
		$(BIN)/pip download --quiet --disable-pip-version-check --only-binary=:all: \
			$(addprefix --platform ,$(WHEEL_PLATFORMS)) --python-version $$version \
			--dest $(WHEELHOUSE) --requirement $(WHEELHOUSE)/requirements.txt || exit 1; \
	done
	touch $@

up: wheels  ## the cluster in containers, gateway on http://localhost:$${GATEWAY_PORT:-8000}
	$(COMPOSE) up --build --detach --wait
	@echo "ready: http://localhost:$${GATEWAY_PORT:-8000} (make logs, make down)"

down:  ## stop the containers; the volumes (sessions, keys, orders) stay for the next `make up`
	$(COMPOSE) down

logs:
	$(COMPOSE) logs --follow

bench: install $(VENV)/.bench-stamp  ## every scenario in one run: bench/results/latest.{md,png,json}
	@command -v wrk >/dev/null || { echo "make bench needs wrk (Debian: apt-get install -y wrk)"; exit 1; }
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { echo "make bench needs nginx for its reverse-proxy row (Debian: apt-get install -y nginx && service nginx stop)"; exit 1; }
	$(BIN)/python -m bench
	$(BIN)/python -m bench.comparison

$(VENV)/.bench-stamp: pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
