# Two commands on a fresh machine (README): `make demo` and `make test`.
# Both create .venv and install the pinned dependencies first (idempotent; re-run when the pins change).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps demo test lint clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the browser tests and the offscreen renderer need (chromium, Mesa EGL/GL).
system-deps:
	bash .ci/system-deps.sh

demo: setup
	$(BIN)/obmd demo

test: setup system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q Testing

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
