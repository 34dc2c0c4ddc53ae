"""Security features that are off unless asked: TLS in front, Kubernetes auth, TLS to steps.

Each lives in its own module and is decided when the router starts or a graph loads:
a router without them runs the same request path as before, at the same cost.
"""
