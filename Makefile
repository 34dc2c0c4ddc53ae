# The two commands the README opens with: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A real KServe ModelServer for the interoperability tests, in a venv of its own so its
# dependencies never mix with ours; best effort: without it those tests skip and say why.
# scikit-learn and joblib: tests/test_grpc.py trains and serves a real model with them.
PEER_VENV := .venv-kserve
PEER_STAMP := $(PEER_VENV)/.installed

.PHONY: demo test lint setup clean

# The request path is compiled with Cython (setup.py: every module with a .pxd beside
# it), in place, by COMPILED, which is rebuilt whenever one of those sources changes, so
# tests never run a stale build. The editable install itself skips compiling
# (GRAPH_ROUTER_PURE_PYTHON=1) so that the work is done once; setuptools is upgraded
# because the one a new venv carries cannot read pyproject.toml's license field.
PXD := $(shell find graph_router -name '*.pxd')
COMPILED := $(VENV)/.compiled

$(STAMP): pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77'
	GRAPH_ROUTER_PURE_PYTHON=1 $(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

$(COMPILED): $(STAMP) $(PXD) $(PXD:.pxd=.py)
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

$(PEER_STAMP):
	$(PY) -m venv $(PEER_VENV) && $(PEER_VENV)/bin/pip install -q kserve scikit-learn joblib && touch $(PEER_STAMP) \
	  || echo "kserve peer not installed: the interoperability tests will skip"

setup: $(COMPILED)

# The demo extra (the real embedding model on ONNX Runtime, no PyTorch: about 80 MB to
# download, under 200 MB installed; the test extra includes it) is installed once; if it
# cannot be, the demo runs with its deterministic hashing embedder and says so.
$(VENV)/.demo-installed: $(COMPILED)
	GRAPH_ROUTER_PURE_PYTHON=1 $(BIN)/pip install -q -e '.[test,demo]' || echo "make demo: the demo extra did not install; using the hashing embedder"
	touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/graph-router demo

# The suite runs twice: on the compiled build, then on the same sources as pure Python
# (GRAPH_ROUTER_PURE_PYTHON=1), so both builds must behave the same.
test: $(COMPILED) $(PEER_STAMP)
	bash scripts/install-test-tools.sh
	$(BIN)/ruff check graph_router tests setup.py
	$(BIN)/mypy graph_router
	$(BIN)/pytest -q
	GRAPH_ROUTER_PURE_PYTHON=1 $(BIN)/pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(PEER_VENV) build
	find graph_router \( -name '*.so' -o -name '*.c' \) -delete
