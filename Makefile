# The two commands: `make run` (demo on SQLite) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install install-dev run demo test lint typecheck test-postgres test-browser bench clean messages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamp files: reinstall only when the pinned requirements change.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## Serve the demo: SQLite in instance/, demo fee schedule, demo users printed.
# The demo serves plain http on localhost, so its session cookie cannot be Secure-only.
# The scheduler (nightly reconciliation, expiry, webhook delivery) runs beside gunicorn. Both
# run in the background and the shell waits for gunicorn: `wait` returns on a signal at once
# (waiting on a foreground command would defer the trap until it exits), and the EXIT trap
# stops whichever is still running, so Ctrl-C, `kill` of make, or gunicorn failing to start
# leave no stray process. Background commands start with SIGINT ignored, hence TERM.
run: install
	$(FLASK) demo setup --base-url http://$(HOST):$(PORT)
	@$(FLASK) scheduler & scheduler=$$!; \
	FEESVC_INSECURE_COOKIES=1 $(BIN)/gunicorn --no-control-socket --bind $(HOST):$(PORT) --workers 2 --threads 4 --access-logfile - wsgi:app & web=$$!; \
	trap 'kill -TERM $$web $$scheduler 2>/dev/null; wait' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	wait $$web

## The whole suite this machine can run (PostgreSQL tests run when TEST_DATABASE_URL is set).
test: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

test-postgres: install-dev
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgresql+psycopg://root@127.0.0.1:5432/feeservice_test} $(BIN)/pytest -m "not browser and not two_nodes"

test-browser: install-dev
	$(BIN)/pytest -m browser

bench: install-dev
	$(BIN)/python -m bench.notice_pdf

messages: install-dev
	$(BIN)/pybabel extract -F babel.cfg -o messages.pot .

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
