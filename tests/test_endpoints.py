"""Steps with several endpoints: power of two choices, affinity on a bounded-load ring, breaker ejection."""

from __future__ import annotations

import random
import socket
from collections import Counter
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from conftest import Service
from multidict import CIMultiDict
from test_accesslog import fields_of, formatted, isolated_logger

from graph_router.breaker import CircuitBreakers
from graph_router.commands.serve import parse_services
from graph_router.endpoints import LOAD_FACTOR, EndpointSet
from graph_router.errors import GraphError
from graph_router.extensions import ANNOTATION, Affinity
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph
from graph_router.settings import ServerSettings
from graph_router.telemetry.accesslog import AccessLog
from graph_router.telemetry.logs import JSONFormatter, TextFormatter
from graph_router.upstream import UpstreamSettings

NO_HEADERS: CIMultiDict[str] = CIMultiDict()


def urls(n: int, start: int = 0) -> list[str]:
    return [f"http://10.0.0.{i + 1}:8080/v1/chat/completions" for i in range(start, start + n)]


def owners(endpoints: EndpointSet, keys: list[str]) -> dict[str, str]:
    return {k: endpoints.by_key(k, endpoints.endpoints).url for k in keys}


KEYS = [f"system prompt number {i}" for i in range(3000)]


def test_a_departed_endpoint_moves_only_its_own_keys() -> None:
    before = owners(EndpointSet(urls(5), Affinity(key="k")), KEYS)
    gone = urls(5)[2]
    after = owners(EndpointSet([u for u in urls(5) if u != gone], Affinity(key="k")), KEYS)
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == gone}
    assert 0.12 < len(moved) / len(KEYS) < 0.28  # about a fifth: the departed share


def test_a_joining_endpoint_takes_only_keys_for_itself() -> None:
    before = owners(EndpointSet(urls(4), Affinity(key="k")), KEYS)
    after = owners(EndpointSet(urls(5), Affinity(key="k")), KEYS)
    moved = {k for k in KEYS if before[k] != after[k]}
    assert all(after[k] == urls(5)[4] for k in moved)
    assert 0.12 < len(moved) / len(KEYS) < 0.28


def test_the_ring_shares_keys_evenly() -> None:
    counts = Counter(owners(EndpointSet(urls(4), Affinity(key="k")), KEYS).values())
    assert max(counts.values()) / (len(KEYS) / 4) < 1.15


def test_bounded_load_keeps_every_endpoint_within_its_share() -> None:
    """Every call with one hot key: the owner takes up to 1.25x the mean share, the ring's next ones the rest."""
    endpoints = EndpointSet(urls(4), Affinity(key="k"))
    owner = endpoints.by_key("the one hot prompt", endpoints.endpoints)
    for _ in range(1000):
        chosen = endpoints.by_key("the one hot prompt", endpoints.endpoints)
        if len(endpoints.window) >= 16:  # past the first few calls someone always has room
            share = LOAD_FACTOR * (len(endpoints.window) + 1) / 4
            assert endpoints.recent[endpoints.endpoints.index(chosen)] + 1 <= share
        endpoints.record(chosen)
    assert len(endpoints.window) == 256  # the last 64 calls per endpoint
    assert max(endpoints.recent) <= LOAD_FACTOR * 64
    assert endpoints.recent[endpoints.endpoints.index(owner)] == max(endpoints.recent)


def test_a_stalled_endpoint_sheds_keys_by_calls_in_flight() -> None:
    endpoints = EndpointSet(urls(4), Affinity(key="k"))
    owner = endpoints.by_key("prompt", endpoints.endpoints)
    owner.outstanding = endpoints.in_flight = 2  # twice the mean of (2 + 1) / 4, rounded up
    assert endpoints.by_key("prompt", endpoints.endpoints) is not owner
    owner.outstanding = 1
    assert endpoints.by_key("prompt", endpoints.endpoints) is owner


PROMPTS = [f"You are assistant {i}. Answer briefly." for i in range(32)]


def traffic(endpoints: EndpointSet, keys: list[str], calls: int, rng: random.Random,
            breakers: CircuitBreakers | None = None) -> dict[str, Counter[str]]:
    """``calls`` calls, each with a key drawn at random, each counted; how often each key went where."""
    went: dict[str, Counter[str]] = {}
    for _ in range(calls):
        key = rng.choice(keys)
        chosen = endpoints.pick(orjson.dumps({"k": key}), NO_HEADERS, breakers)
        endpoints.record(chosen)
        went.setdefault(key, Counter())[chosen.url] += 1
    return went


def mostly(went: dict[str, Counter[str]]) -> dict[str, str]:
    """Where each key went most often (checking that it went elsewhere for under 2% of all calls)."""
    main = {k: c.most_common(1)[0][0] for k, c in went.items()}
    elsewhere = sum(sum(c.values()) - c[main[k]] for k, c in went.items())
    assert elsewhere < 0.02 * sum(sum(c.values()) for c in went.values())
    return main


def test_repeated_keys_are_shared_evenly_moving_only_the_excess() -> None:
    """32 prompts on 4 endpoints: the ring alone gives one endpoint more than 8; shared out, none has more."""
    ring = owners(EndpointSet(urls(4), Affinity(key="k")), PROMPTS)
    per_endpoint = Counter(ring.values())
    assert max(per_endpoint.values()) > 8  # the uneven split a cache of 8 prompts per replica misses on
    endpoints = EndpointSet(urls(4), Affinity(key="k"))
    traffic(endpoints, PROMPTS, 400, random.Random(3))
    home = mostly(traffic(endpoints, PROMPTS, 800, random.Random(4)))
    assert home == {k: endpoints.home(k) for k in PROMPTS}
    assert max(Counter(home.values()).values()) == 8
    moved = {k for k in PROMPTS if home[k] != ring[k]}
    assert len(moved) == sum(max(0, n - 8) for n in per_endpoint.values())  # only each endpoint's excess
    assert all(per_endpoint[ring[k]] > 8 for k in moved)


def test_an_overflowed_key_stays_put_while_loads_fluctuate() -> None:
    """Calls drawn at random make each endpoint's recent share wander; keys stay on their endpoint.

    Only a call that would take its endpoint past 1.25x the mean share of the last calls
    goes elsewhere (under 1% here); bounding calls alone sent 13% of them elsewhere.
    """
    endpoints = EndpointSet(urls(4), Affinity(key="k"))
    traffic(endpoints, PROMPTS, 300, random.Random(5))
    ring = owners(EndpointSet(urls(4), Affinity(key="k")), PROMPTS)
    rng = random.Random(6)
    seen: dict[str, Counter[str]] = {}
    for _ in range(6000):
        key = rng.choice(PROMPTS)
        chosen = endpoints.pick(orjson.dumps({"k": key}), NO_HEADERS, None)
        endpoints.record(chosen)
        seen.setdefault(key, Counter())[chosen.url] += 1
        assert endpoints.recent[endpoints.endpoints.index(chosen)] <= LOAD_FACTOR * 64
    main = {k: c.most_common(1)[0][0] for k, c in seen.items()}
    assert main == {k: endpoints.home(k) for k in PROMPTS}
    assert any(main[k] != ring[k] for k in PROMPTS)  # some keys overflowed, and stay where they went
    assert sum(sum(c.values()) - c[main[k]] for k, c in seen.items()) < 60


def test_workers_seeing_the_same_keys_in_any_order_choose_alike() -> None:
    """The shared-out choice depends on which keys are active, not on the order calls came in."""
    first = EndpointSet(urls(4), Affinity(key="k"))
    second = EndpointSet(urls(4), Affinity(key="k"))
    homes = []
    for endpoints, seed in ((first, 7), (second, 8)):
        traffic(endpoints, PROMPTS, 400, random.Random(seed))
        homes.append(mostly(traffic(endpoints, PROMPTS, 800, random.Random(seed + 100))))
    assert homes[0] == homes[1] == {k: first.home(k) for k in PROMPTS}
    assert first.homes == second.homes and len(first.homes) == 32


def test_an_open_circuit_with_shared_keys_moves_only_its_keys_and_overflow() -> None:
    now = [0.0]
    breakers = CircuitBreakers(2, 5.0, lambda: now[0])
    endpoints = EndpointSet(urls(4), Affinity(key="k"))
    ring = owners(EndpointSet(urls(4), Affinity(key="k")), PROMPTS)
    traffic(endpoints, PROMPTS, 400, random.Random(9), breakers)
    before = mostly(traffic(endpoints, PROMPTS, 800, random.Random(10), breakers))
    dead = max(endpoints.endpoints, key=lambda e: sum(1 for k in PROMPTS if before[k] == e.url))
    for _ in range(2):
        breakers.record(dead.key, ok=False)
    traffic(endpoints, PROMPTS, 64, random.Random(11), breakers)  # a sharing out without it
    went = traffic(endpoints, PROMPTS, 800, random.Random(12), breakers)
    assert all(dead.url not in c for c in went.values())
    after = mostly(went)
    assert all(after[k] == before[k] for k in PROMPTS if before[k] == ring[k] != dead.url)  # at home: stays
    assert max(Counter(after.values()).values()) <= 11  # 32 keys on 3 endpoints
    now[0] = 6.0  # the cooldown passed: it takes its keys back
    traffic(endpoints, PROMPTS, 64, random.Random(13), breakers)
    assert mostly(traffic(endpoints, PROMPTS, 800, random.Random(14), breakers)) == before


def test_power_of_two_choices_never_takes_the_busiest() -> None:
    endpoints = EndpointSet(urls(4), rng=random.Random(7))
    for load, e in enumerate(endpoints.endpoints):
        e.outstanding = load
    picks = Counter(endpoints.pick(b"{}", NO_HEADERS, None).url for _ in range(3000))
    assert urls(4)[3] not in picks
    assert 0.45 < picks[urls(4)[0]] / 3000 < 0.55  # the idle one whenever drawn: half of all pairs


def test_an_open_circuit_moves_its_keys_to_their_next_endpoint() -> None:
    now = [0.0]
    breakers = CircuitBreakers(2, 5.0, lambda: now[0])
    endpoints = EndpointSet(urls(4), Affinity(key="k"))
    before = owners(endpoints, KEYS[:400])
    dead = endpoints.endpoints[1]
    for _ in range(2):
        breakers.record(dead.key, ok=False)
    after = {k: endpoints.pick(orjson.dumps({"k": k}), NO_HEADERS, breakers).url for k in KEYS[:400]}
    ring_without = owners(EndpointSet([u for u in urls(4) if u != dead.url], Affinity(key="k")), KEYS[:400])
    assert all(after[k] == before[k] for k in KEYS[:400] if before[k] != dead.url)
    assert all(after[k] == ring_without[k] for k in KEYS[:400])  # the next endpoint on the ring
    now[0] = 6.0  # the cooldown passed: the endpoint is offered again (its probe decides)
    assert {endpoints.pick(orjson.dumps({"k": k}), NO_HEADERS, breakers).url for k in KEYS[:400]} >= {dead.url}


def test_affinity_key_from_a_path_a_gjson_path_or_a_header() -> None:
    dotted = EndpointSet(urls(4), Affinity(key="messages.0.content", prefix_chars=10))
    body = orjson.dumps({"messages": [{"role": "system", "content": "0123456789 and then anything"}]})
    assert dotted.keys is not None and dotted.keys.key(body, NO_HEADERS) == "0123456789"
    query = EndpointSet(urls(4), Affinity(key='messages.#(role=="user").content'))
    body = orjson.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]})
    assert query.keys is not None and query.keys.key(body, NO_HEADERS) == "u"
    header = EndpointSet(urls(4), Affinity(header="X-Session"))
    assert header.keys is not None and header.keys.key(b"{}", CIMultiDict({"x-session": "abc"})) == "abc"
    assert header.keys.key(b"{}", NO_HEADERS) is None
    with pytest.raises(ValueError, match="exactly one"):
        Affinity(key="a", header="b")


def test_one_endpoint_is_decided_at_plan_time() -> None:
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceName": "llm"}]}}}
    graph = load_graph_text(orjson.dumps({"metadata": {"name": "g"}, "spec": spec}).decode(), "g.json")
    assert compile_graph(graph, {"llm": urls(1)[0]}).root.steps[0].route is None
    two = compile_graph(graph, {"llm": ",".join(urls(2))}).root.steps[0]
    assert two.route is not None and two.url == urls(2)[0]
    assert two.route.endpoints is not None and len(two.route.endpoints.endpoints) == 2


def test_service_flags_take_several_urls() -> None:
    assert parse_services(["llm=http://a:1/x,http://b:2/x"]) == {"llm": "http://a:1/x,http://b:2/x"}
    with pytest.raises(GraphError, match="not an http"):
        parse_services(["llm=http://a:1/x,b:2/x"])


@pytest.mark.parametrize("formatter", [JSONFormatter, TextFormatter])
def test_access_log_line_names_the_endpoint(formatter: Any) -> None:
    """The compiled line carries ``endpoint`` exactly as the logging formatter would."""
    logger, _ = isolated_logger(formatter())
    line = AccessLog(logger).line(False, "g", 200, 0.01, 0.001, "r1", None, "why", 1.5, "http://10.0.0.2:8080/x")
    fields = {**fields_of("g", 200, 0.01, 0.001, "r1", None, None), "endpoint": "http://10.0.0.2:8080/x",
              "cause": "why"}
    assert line == formatted(formatter(), logger, False, fields, 1.5)
    assert "http://10.0.0.2:8080/x" in line


# --- through the real router ------------------------------------------------------------

ONE_STEP = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"name": "llm", "serviceName": "llm"}]}}}

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def replica(start_service: Any, name: str) -> Service:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"replica": name})

    service: Service = await start_service({"/m": answer})
    return service


def affinity_graph(extension: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "kind": "InferenceGraph",
        "metadata": {"name": "g", "annotations": {ANNOTATION: yaml.safe_dump({"steps": {"root/llm": extension}})}},
        "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [{"name": "llm", "serviceName": "llm"}]}}},
    })


async def test_affinity_through_the_router_keeps_keys_on_one_replica(start_service: Any, start_router: Any) -> None:
    services = [await replica(start_service, str(i)) for i in range(3)]
    joined = ",".join(s.url("/m") for s in services)
    running = await start_router(ONE_STEP, services={"llm": services[0].url("/m")})
    running.router.swap(compile_graph(load_graph_text(affinity_graph({"affinity": {"key": "prompt"}}), "g.yaml"),
                                      {"llm": joined}))
    seen: dict[str, Counter[str]] = {}
    for i in range(240):
        prompt = f"p{i % 24}"
        status, body, headers = await running.post({"prompt": prompt}, headers={"X-Graph-Explain": "1"})
        assert status == 200
        seen.setdefault(prompt, Counter())[orjson.loads(body)["replica"]] += 1
        explain = orjson.loads(headers["X-Graph-Explain"])
        assert any(e.get("endpoint", "").endswith("/m") for e in explain)
    at_home = sum(c.most_common(1)[0][1] for c in seen.values())
    assert at_home / 240 >= 0.9  # a prompt goes back to its replica (some move off an over-share one)
    served: Counter[str] = Counter()
    for c in seen.values():
        served.update(c)
    assert max(served.values()) <= LOAD_FACTOR * 80 + 3  # no replica far above the mean of 80
    async with running.session.get(running.url + "/metrics") as resp:
        text = await resp.text()
    rows = [line for line in text.splitlines() if line.startswith("graph_router_endpoint_requests_total{")]
    assert sum(float(r.rsplit(" ", 1)[1]) for r in rows) == 240
    assert len(rows) == 3
    assert all('code="200"' in r and 'endpoint="http://127.0.0.1:' in r for r in rows)
    assert not any("endpoint=" in line for line in text.splitlines()
                   if line.startswith("graph_router_step_requests_total"))


async def test_a_dead_replica_is_ejected_and_its_keys_served_by_the_next(start_service: Any,
                                                                         start_router: Any) -> None:
    live = [await replica(start_service, str(i)) for i in range(2)]
    dead = f"http://127.0.0.1:{closed_port()}/m"
    members = [live[0].url("/m"), dead, live[1].url("/m")]
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                              upstream=UpstreamSettings(breaker_failures=2, breaker_cooldown=30))
    running = await start_router(ONE_STEP, services={"llm": live[0].url("/m")}, settings=settings)
    plan = compile_graph(load_graph_text(affinity_graph({"affinity": {"key": "prompt"}}), "g.yaml"),
                         {"llm": ",".join(members)})
    running.router.swap(plan)
    route = plan.root.steps[0].route
    assert route is not None and route.endpoints is not None
    on_dead = [k for k in KEYS if route.endpoints.by_key(k, route.endpoints.endpoints).url == dead][:8]
    statuses = [(await running.post({"prompt": k}))[0] for k in on_dead]
    assert statuses.count(500) == 2  # refused twice: the breaker opens
    assert statuses[-3:] == [200, 200, 200]  # then the dead replica's keys go to their next endpoint
    for _ in range(3):
        assert [(await running.post({"prompt": k}))[0] for k in on_dead] == [200] * len(on_dead)


def test_services_files_take_several_urls(tmp_path: Any) -> None:
    from graph_router.localtest.suite import SuiteError, load_services

    good = tmp_path / "services.yaml"
    good.write_text("llm: http://10.0.0.1:8000/v1/chat/completions,http://10.0.0.2:8000/v1/chat/completions\n")
    assert load_services(good)["llm"].url == (
        "http://10.0.0.1:8000/v1/chat/completions,http://10.0.0.2:8000/v1/chat/completions")
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm: http://10.0.0.1:8000/x,10.0.0.2:8000/x\n")
    with pytest.raises(SuiteError, match=r"10\.0\.0\.2:8000/x"):
        load_services(bad)


async def test_the_access_log_names_the_endpoint_chosen(start_service: Any, start_router: Any,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from graph_router.telemetry import Telemetry
    from graph_router.telemetry.logs import FIELDS

    caplog.set_level(logging.INFO, logger="graph_router.telemetry.recorder")
    services = [await replica(start_service, str(i)) for i in range(2)]
    running = await start_router(ONE_STEP, services={"llm": ",".join(s.url("/m") for s in services)},
                                 telemetry=Telemetry())
    for i in range(6):
        assert (await running.post({"prompt": i}))[0] == 200
    lines = [getattr(r, FIELDS) for r in caplog.records if r.getMessage() == "graph request"]
    assert len(lines) == 6
    assert {line["endpoint"] for line in lines} <= {s.url("/m") for s in services}


async def test_a_retry_goes_to_another_endpoint(start_service: Any, start_router: Any) -> None:
    """With retries in the step's policy, a refused call or a retryOn status is retried on another replica."""
    live = await replica(start_service, "live")
    busy = await start_service({"/m": (503, {"error": "busy"})})
    dead = f"http://127.0.0.1:{closed_port()}/m"
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                              upstream=UpstreamSettings(breaker_failures=1000))
    running = await start_router(ONE_STEP, services={"llm": live.url("/m")}, settings=settings)
    extension = {"policy": {"retries": 2, "backoffSeconds": 0}}
    running.router.swap(compile_graph(load_graph_text(affinity_graph(extension), "g.yaml"),
                                      {"llm": ",".join([dead, busy.url("/m"), live.url("/m")])}))
    for i in range(30):
        status, body, _ = await running.post({"i": i})
        assert (status, orjson.loads(body)) == (200, {"replica": "live"})
    async with running.session.get(running.url + "/metrics") as resp:
        text = await resp.text()
    codes = {line.split('code="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith("graph_router_endpoint_requests_total{")}
    assert codes["200"] == 30 and codes["error"] > 0 and codes["503"] > 0  # the first tries did land there
