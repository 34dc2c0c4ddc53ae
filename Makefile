# The two commands the README opens with: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/graph-router demo

test: $(STAMP)
	bash scripts/install-test-tools.sh
	$(BIN)/ruff check graph_router tests
	$(BIN)/mypy graph_router
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV)
