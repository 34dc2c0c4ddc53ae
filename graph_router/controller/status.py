"""The InferenceGraph status the sidecar reports, and the smallest merge patch to get there.

Two conditions are ours: ``Ready`` (True only when the graph is valid and every
serviceName resolves) and ``ServicesResolved`` (False names each missing or not-ready
InferenceService in its reason and message). Conditions of other types, written by
someone else, are kept as they are.

Two sidecars of one graph compute the same status from the same objects, and a
condition keeps its ``lastTransitionTime`` while its status stays the same, so once one
of them has patched, the other finds nothing to change: they never fight. A patch holds
only the status fields that differ; a JSON merge patch replaces a list whole, so the
conditions list goes in full when any condition changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .resolve import Unresolved

READY = "Ready"
SERVICES_RESOLVED = "ServicesResolved"
OURS = (READY, SERVICES_RESOLVED)

REASON_INVALID = "InvalidGraph"
REASON_UNRESOLVED = "ServicesNotResolved"

_REASON_WORD = {"NotFound": "ServiceNotFound", "NotReady": "ServiceNotReady", "RuntimeError": "RuntimeError"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reconcile found about the graph."""

    generation: int | None
    problems: Sequence[str] = ()
    # None: the graph could not be read, so its services were not looked at.
    unresolved: Sequence[Unresolved] | None = ()
    url: str | None = None


def _condition(type_: str, ok: bool | None, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    """``ok`` None: Unknown. Only a condition that is not True carries a reason and message."""
    cond: dict[str, Any] = {"type": type_, "status": {True: "True", False: "False", None: "Unknown"}[ok]}
    if ok is not True:
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def services_reason(unresolved: Sequence[Unresolved]) -> str:
    """e.g. ``ServiceNotFound:bge-embedder,ServiceNotReady:qwen-llm``."""
    return ",".join(f"{_REASON_WORD[u.reason]}:{u.service}" for u in unresolved)


def desired_conditions(outcome: Outcome) -> list[dict[str, Any]]:
    """Our two conditions, without times."""
    unresolved = outcome.unresolved or ()
    unresolved_msg = "; ".join(u.message for u in unresolved)
    if outcome.unresolved is None:
        services = _condition(SERVICES_RESOLVED, None, REASON_INVALID,
                              "The graph could not be read, so its services were not resolved.")
    else:
        services = _condition(SERVICES_RESOLVED, not unresolved, services_reason(unresolved), unresolved_msg)
    if outcome.problems:
        # Nothing local (such as which graph this sidecar serves) goes into the status:
        # two sidecars must compute the same status from the same objects.
        message = ("The graph is invalid: " + "; ".join(outcome.problems)
                   + ". The last valid graph, if any, stays in service.")
        ready = _condition(READY, False, REASON_INVALID, message)
    elif unresolved:
        ready = _condition(READY, False, REASON_UNRESOLVED,
                           f"Not every serviceName resolves: {unresolved_msg}.")
    else:
        ready = _condition(READY, True)
    return [ready, services]


def merge_conditions(current: Sequence[Any], ours: Sequence[dict[str, Any]], now: str) -> list[dict[str, Any]]:
    """The current list with ours put in place: order kept, times kept while a status holds."""
    by_type = {c["type"]: c for c in ours}
    merged: list[dict[str, Any]] = []
    seen: set[str] = set()
    for cond in current:
        if not isinstance(cond, dict):
            continue
        type_ = str(cond.get("type"))
        if type_ not in by_type or type_ in seen:
            if type_ not in OURS:
                merged.append(cond)
            continue
        seen.add(type_)
        merged.append(_with_time(by_type[type_], cond, now))
    for cond in ours:
        if cond["type"] not in seen:
            merged.append(_with_time(cond, None, now))
    return merged


def _with_time(new: dict[str, Any], old: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    out = dict(new)
    if old is not None and old.get("status") == new["status"] and old.get("lastTransitionTime"):
        out["lastTransitionTime"] = old["lastTransitionTime"]
    else:
        out["lastTransitionTime"] = now
    return out


def status_patch(current: Mapping[str, Any] | None, outcome: Outcome, now: str) -> dict[str, Any] | None:
    """``{"status": {...}}`` with only the fields that must change, or None when none must."""
    current = current or {}
    changes: dict[str, Any] = {}
    old_conditions = current.get("conditions")
    old_list = old_conditions if isinstance(old_conditions, list) else []
    conditions = merge_conditions(old_list, desired_conditions(outcome), now)
    if conditions != old_list:
        changes["conditions"] = conditions
    if outcome.generation is not None and current.get("observedGeneration") != outcome.generation:
        changes["observedGeneration"] = outcome.generation
    if outcome.url is not None and current.get("url") != outcome.url:
        changes["url"] = outcome.url
    return {"status": changes} if changes else None
