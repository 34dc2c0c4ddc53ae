"""graph_router: a fast, observable, KServe-compatible InferenceGraph router."""

__version__ = "0.1.0"
