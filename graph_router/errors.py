"""graph_router's exceptions, split by when they happen.

    GraphRouterError            base: everything we raise on purpose
    ├── GraphError              at load: a spec that cannot be served (never reaches a client)
    │   └── GraphValidationError    the graph broke one or more rules; ``problems`` lists them all
    └── RequestError            while serving: carries the HTTP status and a cause for the body
        ├── ClientRequestError      the client's request itself is wrong (413, 400)
        ├── NodeFailure             a node failed: KServe's ``{"error","cause"}`` answer
        │   ├── NoRouteMatched      a Switch found no matching condition (404)
        │   └── UpstreamError       a step call got no usable answer (refused, reset, timeout)
        ├── MappingError            a template reference selected nothing (400 / 502)
        ├── CircuitOpen             a service failed repeatedly: calls fail fast for a while (503)
        ├── DeadlineExceeded        the request's own deadline passed (504)
        ├── AnswerTooLarge          a step's answer (head, body or decoded body) is over its limit (502)
        ├── UnreadableAnswer        a step's body the router must read cannot be decoded (502)
        └── Overloaded              too many requests in flight in this process (503)

Lower layers' exceptions (aiohttp, OS errors) are translated into these exactly once,
in the module that calls the lower layer, with ``raise ... from exc``.
"""

from __future__ import annotations


class GraphRouterError(Exception):
    """Base of every exception graph_router raises on purpose."""


class GraphError(GraphRouterError):
    """A graph document that cannot be loaded (bad YAML/JSON, wrong shape)."""


class GraphValidationError(GraphError):
    """A graph that breaks one or more rules; the message lists every problem."""

    def __init__(self, graph: str, problems: list[str]) -> None:
        self.graph = graph
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"graph {graph!r} is invalid ({len(self.problems)} problem(s)):\n{lines}")


class RequestError(GraphRouterError):
    """A request that ends in an error answer; ``status`` is what the client sees."""

    status: int = 500

    def __init__(self, cause: str, status: int | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        if status is not None:
            self.status = status


class ClientRequestError(RequestError):
    """The client's own request is at fault (too large, unreadable)."""

    status = 400


class NodeFailure(RequestError):
    """A node could not produce an answer; KServe answers 500 with the cause."""

    status = 500


class NoRouteMatched(NodeFailure):
    """A Switch node whose conditions all missed: KServe answers 404."""

    status = 404

    def __init__(self) -> None:
        super().__init__("None of the routes matched with the switch condition")


class UpstreamError(NodeFailure):
    """A step call that got no usable answer: refused, reset, timed out, bad URL."""


class CircuitOpen(RequestError):
    """A service failed repeatedly; its calls fail fast until a probe succeeds.

    Not a NodeFailure: parents keep the 503, so clients can tell it from a graph error.
    """

    status = 503


class DeadlineExceeded(RequestError):
    """The request's deadline (extensions' deadlineSeconds) passed."""

    status = 504


class Overloaded(RequestError):
    """More requests in flight than this process accepts; the client should retry later."""

    status = 503


class AnswerTooLarge(RequestError):
    """A step answered with more bytes than the router holds for one answer."""

    status = 502


class UnreadableAnswer(RequestError):
    """A step's body the router must read is in a content coding it cannot undo, or corrupt."""

    status = 502
