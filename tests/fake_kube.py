"""A fake Kubernetes API server on loopback that speaks the real protocol to the real client.

It serves custom resources the way kube-apiserver does, for what the controller uses:
lists carrying ``metadata.resourceVersion``; ``?watch=true`` streams of newline-delimited
JSON events (ADDED, MODIFIED, DELETED, BOOKMARK, and an ERROR event holding a 410 Status
when the requested resourceVersion is older than the last compaction); replay of history
from a resourceVersion; ``fieldSelector=metadata.name=``; ``timeoutSeconds``; the status
subresource, changed only by JSON merge patches (RFC 7386); 404/409/415 Status answers.

Tests drive it with plain methods (``put``, ``set_status``, ``delete``) and disturb it on
purpose: ``drop_watches`` cuts live watch connections, ``expire_watches`` answers them
with 410, ``fail`` makes the next requests fail with an error status, ``restart`` takes
the server down and brings it back on the same port with its history gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

KINDS: dict[str, tuple[str, str]] = {
    "inferencegraphs": ("serving.kserve.io/v1alpha1", "InferenceGraph"),
    "inferenceservices": ("serving.kserve.io/v1beta1", "InferenceService"),
    "servingruntimes": ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    "clusterservingruntimes": ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"),
    "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice"),
}
MERGE_PATCH = "application/merge-patch+json"

Key = tuple[str, str | None, str]  # plural, namespace (None: cluster-scoped), name


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any = None


@dataclass
class _LiveWatch:
    plural: str
    namespace: str | None
    selector: dict[str, str]
    bookmarks: bool
    request: web.BaseRequest
    queue: asyncio.Queue[dict[str, Any] | str] = field(default_factory=asyncio.Queue)


class FakeKube:
    """The fake API server; ``url`` is where it listens once started."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.history: list[tuple[int, Key, str, dict[str, Any]]] = []
        self.rv = 100
        self.compacted = 0
        self.requests: list[Recorded] = []
        self.status_patches: list[Recorded] = []
        self.watches: list[_LiveWatch] = []
        self.watch_requests = 0
        self.port = 0
        self._failures: list[tuple[int, str]] = []
        self._runner: web.AppRunner | None = None
        self._uids = itertools.count(1)
        # TokenReview and SubjectAccessReview (authentication.k8s.io, authorization.k8s.io).
        self.tokens: dict[str, dict[str, Any]] = {}  # token -> userInfo
        self.grants: set[tuple[str, str, str, str, str, str]] = set()  # user, verb, group, resource, ns, name
        self.review_delay = 0.0
        self.token_reviews = 0
        self.access_reviews = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._access_review)
        app.router.add_route("*", "/apis/{group}/{version}/namespaces/{namespace}/{plural}", self._collection)
        app.router.add_route("*", "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}", self._item)
        app.router.add_route("*", "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}/status",
                             self._status)
        app.router.add_route("*", "/apis/{group}/{version}/{plural}/{name}", self._item)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self, downtime: float = 0.3, *, lose_history: bool = True,
                      while_down: Callable[[], None] | None = None) -> None:
        """Go down (connections cut, new ones refused), then come back on the same port.

        ``while_down`` runs when the server is down (changes no client can hear of). A
        restarted API server has a new watch cache: with ``lose_history`` every
        resourceVersion a client holds is too old (410), as after etcd compaction.
        """
        await self.stop()
        if while_down is not None:
            while_down()
        await asyncio.sleep(downtime)
        if lose_history:
            self.compact()
        await self.start()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(orjson.dumps({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }).decode())
        return path

    # -- test controls -------------------------------------------------------------

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (its status too, when ``obj`` has one)."""
        api_version, kind = KINDS[plural]
        meta = dict(obj.get("metadata") or {})
        key: Key = (plural, None if plural.startswith("cluster") else meta.get("namespace", "default"), meta["name"])
        old = self.objects.get(key)
        new = copy.deepcopy(obj)
        new["apiVersion"], new["kind"] = api_version, kind
        if key[1] is not None:
            meta["namespace"] = key[1]
        if old is None:
            meta["uid"] = f"uid-{next(self._uids)}"
            meta["generation"] = 1
            meta["creationTimestamp"] = "2026-01-01T00:00:00Z"
        else:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            changed = old.get("spec") != new.get("spec")
            meta["generation"] = old["metadata"]["generation"] + (1 if changed else 0)
            if "status" not in new and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        new["metadata"] = meta
        self._commit(key, new, "ADDED" if old is None else "MODIFIED")
        return copy.deepcopy(new)

    def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any], *,
                   silent: bool = False) -> None:
        """Replace an object's status; ``silent``: tell no watch (an event lost on the way)."""
        key: Key = (plural, namespace, name)
        obj = copy.deepcopy(self.objects[key])
        obj["status"] = copy.deepcopy(status)
        self._commit(key, obj, "MODIFIED", silent=silent)

    def delete(self, plural: str, namespace: str | None, name: str) -> None:
        key: Key = (plural, namespace, name)
        obj = copy.deepcopy(self.objects.pop(key))
        self._commit(key, obj, "DELETED", store=False)

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def compact(self) -> None:
        """Forget history: every resourceVersion handed out so far becomes too old to watch from."""
        self.rv += 1
        self.compacted = self.rv
        self.history.clear()

    def drop_watches(self) -> None:
        """Cut every live watch connection without ending the chunked stream, as a network failure does."""
        for w in self.watches:
            if w.request.transport is not None:
                w.request.transport.close()
            w.queue.put_nowait("drop")
        self.watches.clear()

    def expire_watches(self) -> None:
        """Compact, then tell every live watch its resourceVersion is gone (an ERROR event with 410)."""
        self.compact()
        for w in self.watches:
            w.queue.put_nowait("expire")
        self.watches.clear()

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion to each watch that asked for them."""
        self.rv += 1
        for w in self.watches:
            if w.bookmarks:
                w.queue.put_nowait(self._bookmark_event(w.plural))

    def fail(self, count: int, status: int = 500, path_contains: str = "") -> None:
        """The next ``count`` requests whose path contains ``path_contains`` get ``status``."""
        self._failures.extend([(status, path_contains)] * count)

    def watch_count(self, plural: str) -> int:
        return sum(1 for w in self.watches if w.plural == plural)

    def lists(self, plural: str) -> int:
        return sum(1 for r in self.requests
                   if r.method == "GET" and r.path.endswith("/" + plural) and r.query.get("watch") not in ("true", "1"))

    # -- internals -----------------------------------------------------------------

    def inject(self, event: dict[str, Any]) -> None:
        """Send ``event`` as it is to every live watch."""
        for w in self.watches:
            w.queue.put_nowait(copy.deepcopy(event))

    def _commit(self, key: Key, obj: dict[str, Any], kind: str, *, store: bool = True,
                silent: bool = False) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if store:
            self.objects[key] = obj
        if silent:
            return
        self.history.append((self.rv, key, kind, copy.deepcopy(obj)))
        for w in self.watches:
            if self._matches(w.plural, w.namespace, w.selector, key):
                w.queue.put_nowait({"type": kind, "object": copy.deepcopy(obj)})

    @staticmethod
    def _matches(plural: str, namespace: str | None, selector: dict[str, str], key: Key) -> bool:
        if key[0] != plural or key[1] != namespace:
            return False
        if "metadata.name" in selector and selector["metadata.name"] != key[2]:
            return False
        return not ("metadata.namespace" in selector and selector["metadata.namespace"] != key[1])

    def _bookmark_event(self, plural: str) -> dict[str, Any]:
        api_version, kind = KINDS[plural]
        return {"type": "BOOKMARK",
                "object": {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": str(self.rv)}}}

    def add_user(self, token: str, username: str, groups: list[str] | None = None) -> None:
        """``token`` authenticates as ``username`` (until removed from ``tokens``: an expired token)."""
        self.tokens[token] = {"username": username, "uid": f"uid-{username}",
                              "groups": groups or ["system:authenticated"]}

    def grant(self, username: str, name: str, namespace: str = "default", verb: str = "get",
              group: str = "serving.kserve.io", resource: str = "inferencegraphs") -> None:
        """An RBAC rule, as the authorizer would find it."""
        self.grants.add((username, verb, group, resource, namespace, name))

    async def _token_review(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        self.token_reviews += 1
        if self.review_delay:
            await asyncio.sleep(self.review_delay)
        failure = self._injected_failure(request.path)
        if failure is not None:
            return failure
        review = rec.body
        user = self.tokens.get(review["spec"]["token"])
        review["status"] = ({"authenticated": True, "user": user} if user is not None
                            else {"authenticated": False, "error": "token has expired or is not valid"})
        return web.Response(status=201, body=orjson.dumps(review), content_type="application/json")

    async def _access_review(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        self.access_reviews += 1
        if self.review_delay:
            await asyncio.sleep(self.review_delay)
        review = rec.body
        spec = review["spec"]
        ra = spec.get("resourceAttributes") or {}
        key = (spec.get("user", ""), ra.get("verb", ""), ra.get("group", ""), ra.get("resource", ""),
               ra.get("namespace", ""), ra.get("name", ""))
        allowed = key in self.grants
        review["status"] = {"allowed": allowed} if allowed else {"allowed": False, "reason": "no RBAC rule"}
        return web.Response(status=201, body=orjson.dumps(review), content_type="application/json")

    @staticmethod
    def _error(code: int, reason: str, message: str) -> web.Response:
        return web.Response(status=code, body=orjson.dumps(status_object(code, reason, message)),
                            content_type="application/json")

    async def _record(self, request: web.Request) -> Recorded:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            body = orjson.loads(raw) if raw else None
        rec = Recorded(request.method, request.path, dict(request.query), request.content_type, body)
        self.requests.append(rec)
        return rec

    def _injected_failure(self, path: str) -> web.Response | None:
        for i, (status, needle) in enumerate(self._failures):
            if needle in path:
                del self._failures[i]
                return self._error(status, "InternalError", f"injected failure {status}")
        return None

    @staticmethod
    def _selector(request: web.Request) -> dict[str, str]:
        out = {}
        for part in filter(None, request.query.get("fieldSelector", "").split(",")):
            name, _, value = part.partition("=")
            out[name.strip()] = value.strip().lstrip("=")
        return out

    @staticmethod
    def _plural(request: web.Request) -> str | None:
        plural = request.match_info["plural"]
        return plural if plural in KINDS else None

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if (failure := self._injected_failure(request.path)) is not None:
            return failure
        plural, namespace = self._plural(request), request.match_info["namespace"]
        if plural is None:
            return self._error(404, "NotFound", "the server could not find the requested resource")
        if request.method != "GET":
            return self._error(405, "MethodNotAllowed", "only GET is served here")
        selector = self._selector(request)
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, plural, namespace, selector)
        api_version, kind = KINDS[plural]
        items = [copy.deepcopy(o) for k, o in sorted(self.objects.items())
                 if self._matches(plural, namespace, selector, k)]
        body = {"apiVersion": api_version, "kind": kind + "List",
                "metadata": {"resourceVersion": str(self.rv)}, "items": items}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _watch(self, request: web.Request, plural: str, namespace: str,
                     selector: dict[str, str]) -> web.StreamResponse:
        self.watch_requests += 1
        since = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        bookmarks = request.query.get("allowWatchBookmarks") in ("true", "1")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if since not in ("", "0") and int(since) < self.compacted:
            gone = status_object(410, "Expired", f"too old resource version: {since} ({self.compacted})")
            await resp.write(orjson.dumps({"type": "ERROR", "object": gone}) + b"\n")
            await resp.write_eof()
            return resp
        # Replay and registration happen with no await between them: no event is missed.
        if since in ("", "0"):
            replay = [{"type": "ADDED", "object": copy.deepcopy(o)} for k, o in sorted(self.objects.items())
                      if self._matches(plural, namespace, selector, k)]
        else:
            replay = [{"type": kind, "object": copy.deepcopy(o)} for rv, k, kind, o in self.history
                      if rv > int(since) and self._matches(plural, namespace, selector, k)]
        live = _LiveWatch(plural, namespace, selector, bookmarks, request)
        self.watches.append(live)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for event in replay:
                await resp.write(orjson.dumps(event) + b"\n")
            while True:
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        item = await live.queue.get()
                except TimeoutError:
                    if bookmarks:  # as kube-apiserver does just before a watch times out
                        await resp.write(orjson.dumps(self._bookmark_event(plural)) + b"\n")
                    break
                if item == "drop":
                    return resp
                if item == "expire":
                    gone = status_object(410, "Expired", "too old resource version")
                    await resp.write(orjson.dumps({"type": "ERROR", "object": gone}) + b"\n")
                    break
                await resp.write(orjson.dumps(item) + b"\n")
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self.watches.remove(live)
        return resp

    async def _item(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if (failure := self._injected_failure(request.path)) is not None:
            return failure
        plural = self._plural(request)
        if plural is None:
            return self._error(404, "NotFound", "the server could not find the requested resource")
        namespace = request.match_info.get("namespace")
        name = request.match_info["name"]
        obj = self.objects.get((plural, namespace, name))
        if request.method != "GET":
            return self._error(405, "MethodNotAllowed", "this fake changes objects only through /status")
        if obj is None:
            return self._error(404, "NotFound", f'{plural} "{name}" not found')
        return web.Response(body=orjson.dumps(obj), content_type="application/json")

    async def _status(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if (failure := self._injected_failure(request.path)) is not None:
            return failure
        plural = self._plural(request)
        key: Key = (plural or "", request.match_info["namespace"], request.match_info["name"])
        obj = self.objects.get(key)
        if plural is None or obj is None:
            return self._error(404, "NotFound", f'{key[0]} "{key[2]}" not found')
        if request.method == "GET":
            return web.Response(body=orjson.dumps(obj), content_type="application/json")
        if request.method != "PATCH":
            return self._error(405, "MethodNotAllowed", "only GET and PATCH are served here")
        if rec.content_type != MERGE_PATCH:
            return self._error(415, "UnsupportedMediaType", f"this fake takes only {MERGE_PATCH}")
        if not isinstance(rec.body, dict):
            return self._error(400, "BadRequest", "a merge patch must be a JSON object")
        want_rv = (rec.body.get("metadata") or {}).get("resourceVersion")
        if want_rv is not None and want_rv != obj["metadata"]["resourceVersion"]:
            return self._error(409, "Conflict", "the object has been modified")
        self.status_patches.append(rec)
        new = copy.deepcopy(obj)
        # The status subresource ignores everything in the patch but status.
        patched = merge_patch(new.get("status") or {}, rec.body.get("status") or {})
        new["status"] = patched
        self._commit(key, new, "MODIFIED")
        return web.Response(body=orjson.dumps(new), content_type="application/json")
