# meshhub: `make run` sets up and starts the embedded hub; `make test` runs the suite twice.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export MESHHUB_DATA_DIR ?= $(CURDIR)/var

# Production-mode test run: its own database (pytest-django creates test_meshhub) and
# its own Redis DB number, flushed by the suite; nothing else in Redis is touched.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/meshhub
TEST_REDIS_URL ?= redis://127.0.0.1:6379/13
PYTEST_ARGS ?=
# `make test` runs each mode in two halves at once (the end-to-end tests are mostly waiting
# on sockets, agents and timeouts): the first half of tests/, and the rest with the apps'
# own tests. The second production half has its own test database and Redis DB.
HALF_A := $(sort $(wildcard tests/test_[a-l]*.py))
HALF_B := $(filter-out $(HALF_A),$(sort $(wildcard tests/test_*.py))) audit devices hub ota automation industrial assistant firmware
TEST_DATABASE_URL_B ?= postgres://postgres@127.0.0.1:5432/meshhub_b
TEST_REDIS_URL_B ?= redis://127.0.0.1:6379/15

.PHONY: run install install-dev micropython browser migrate test test-both test-embedded test-production lint schemathesis bench soak clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements.txt $(VENV)/.installed
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
# MicroPython's WebAssembly port (npm, pinned in firmware/micropython/package-lock.json) for
# tests/test_micropython_core.py; reinstalled only when the lock file changes.
MICROPYTHON_STAMP := firmware/micropython/node_modules/.installed

$(MICROPYTHON_STAMP): firmware/micropython/package-lock.json firmware/micropython/package.json
	npm ci --prefix firmware/micropython --no-audit --no-fund --loglevel=error
	touch $@

micropython: $(MICROPYTHON_STAMP)

install-dev: $(VENV)/.installed-dev micropython

# The browser tests drive Debian's Chromium (playwright never downloads a browser).
# As root this installs it; anyone else is told the one command to run.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "the browser tests need Debian's chromium: sudo apt-get update && sudo apt-get install -y chromium" >&2; exit 1; \
	  fi; }

migrate: install
	$(PY) manage.py migrate --no-input -v 0

run: migrate
	$(PY) manage.py ensureadmin
	$(PY) manage.py runhub --demo 10

test: install-dev lint test-both

# Both modes, each in two halves, and schemathesis beside them: they share nothing (SQLite
# and the in-memory layer; PostgreSQL test databases and Redis DBs 13 and 15; schemathesis
# its own hub and DB 14; each its own data dir and free ports). Much of each run waits on
# sockets, agents and timeouts, so five jobs on two cores finish sooner than one after
# another. Each job's output goes to a file and is printed in turn; any failing fails.
test-both: install-dev browser
	@logs=$$(mktemp -d); \
	$(MAKE) --no-print-directory test-embedded PYTEST_ARGS="$(HALF_A)" > $$logs/embedded-a.log 2>&1 & ea=$$!; \
	$(MAKE) --no-print-directory test-embedded PYTEST_ARGS="$(HALF_B)" > $$logs/embedded-b.log 2>&1 & eb=$$!; \
	$(MAKE) --no-print-directory test-production PYTEST_ARGS="$(HALF_A)" > $$logs/production-a.log 2>&1 & pa=$$!; \
	$(MAKE) --no-print-directory test-production PYTEST_ARGS="$(HALF_B)" TEST_DATABASE_URL=$(TEST_DATABASE_URL_B) TEST_REDIS_URL=$(TEST_REDIS_URL_B) \
	  > $$logs/production-b.log 2>&1 & pb=$$!; \
	$(MAKE) --no-print-directory schemathesis > $$logs/schemathesis.log 2>&1 & schema=$$!; \
	status=""; for job in $$ea $$eb $$pa $$pb $$schema; do wait $$job; status="$$status $$?"; done; \
	for part in embedded-a embedded-b production-a production-b schemathesis; do cat $$logs/$$part.log; done; \
	echo "exit codes (embedded a, b; production a, b; schemathesis):$$status"; test "$$status" = " 0 0 0 0 0"

test-embedded: install-dev browser
	@echo "=== pytest: embedded (SQLite, in-memory channel layer) ==="
	env -u DATABASE_URL -u REDIS_URL MESHHUB_DATA_DIR=$$(mktemp -d) $(PY) -m pytest $(PYTEST_ARGS)

test-production: install-dev browser
	@echo "=== pytest: production (PostgreSQL + Redis) ==="
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) MESHHUB_DATA_DIR=$$(mktemp -d) $(PY) -m pytest $(PYTEST_ARGS)

schemathesis: install-dev
	@echo "=== schemathesis against /api/schema/ ==="
	env -u DATABASE_URL -u REDIS_URL $(PY) tests/schemathesis_run.py

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy hub audit devices ota automation industrial assistant
	$(VENV)/bin/lint-imports
	env -u DATABASE_URL -u REDIS_URL MESHHUB_DATA_DIR=$$(mktemp -d) $(VENV)/bin/python manage.py makemigrations --check --dry-run  # a model change without its migration

bench: install-dev browser
	$(PY) bench/run.py

# 200 simulated devices for 30 minutes through a flapping link, a PostgreSQL and a Redis
# outage and a killed worker; prints the books (measured = stored + dropped, commands once).
soak: install-dev
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
