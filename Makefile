# The two commands in the README: `make demo` and `make test`.
# Each one sets up everything it needs on a fresh machine by itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/ordo demo

test: $(STAMP)
	$(BIN)/python -m pytest -ra

clean:
	rm -rf $(VENV) .pytest_cache
