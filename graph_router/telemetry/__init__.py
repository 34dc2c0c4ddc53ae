"""What the router tells operators: metrics, traces, logs and the explain header.

- :mod:`.metrics`: Prometheus series kept as plain numbers, rendered at scrape time.
- :mod:`.exchange`: adding up ``--workers`` processes' metrics over abstract sockets.
- :mod:`.tracing`: OpenTelemetry spans, on only when ``OTEL_*`` variables ask.
- :mod:`.logs`: JSON or text log lines with structured fields.
- :mod:`.explain`: the ``X-Graph-Explain`` response header.
- :mod:`.recorder`: the per-process :class:`Telemetry` and per-request probe that tie
  them to the request path.
"""

from .exchange import WorkerGroup
from .recorder import RequestProbe, Telemetry
from .tracing import GraphTracer, tracer_from_env

__all__ = ["GraphTracer", "RequestProbe", "Telemetry", "WorkerGroup", "tracer_from_env"]
