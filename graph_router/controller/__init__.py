"""The controller sidecar: keeps one InferenceGraph's resolved spec in a file for the router.

Only this package talks to Kubernetes (``kube``). ``watch`` keeps list/watch caches of
the graph and the namespace's InferenceServices, ``resolve`` turns serviceNames into URLs
by KServe's rules, ``output`` writes the file atomically, ``status`` builds the graph's
conditions and the smallest patch, and ``reconcile`` ties them together.
"""

from __future__ import annotations

from .reconcile import Controller, run_controller
from .settings import ControllerSettings, WatchSettings

__all__ = ["Controller", "ControllerSettings", "WatchSettings", "run_controller"]
