"""Shared helpers for the load tests in this directory.

Everything here runs on 127.0.0.1 only: free ports, an nginx backend with a fixed
answer, the stand-in service (``standin.py``), the router as a subprocess, process
figures read from /proc (RSS, CPU time, open fds), wrk driven through a Lua script
whose ``done()`` hook prints exact figures, and a small raw HTTP/1.1 client that
knows at which stage a request failed (connect refused, closed before any answer
byte on a reused connection, cut mid-answer, non-200).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOADTESTS = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --- small utilities ------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = HOST) -> bool:
    """Whether a TCP connect to host:port succeeds now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect((host, port))
        except OSError:
            return False
        return True


def wait_port(port: int, timeout: float = 10.0, host: str = HOST) -> bool:
    """Poll until host:port accepts connections (True) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return True
        time.sleep(0.02)
    return False


def http_get_status(url_host: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    """Status code of a blocking GET, or None when the connection fails."""
    try:
        with socket.create_connection((url_host, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {url_host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            for _ in range(64):  # a status line is short; never loop on a trickling peer
                if b"\r\n" in data:
                    break
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return int(data.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file soft limit towards ``wanted`` (capped by the hard limit).

    Child processes (the router) inherit it. Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def machine_info() -> dict[str, Any]:
    """CPU model, core count, load average and kernel: what a figure was measured on."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "loadavg_1_5_15": [float(x) for x in load],
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def busy_other_processes(exclude: Sequence[int] = (), threshold_pct: float = 20.0, window: float = 1.0) -> list[str]:
    """Processes (not ours) using more than ``threshold_pct`` of a core over ``window`` seconds.

    Used to say in the report whether the machine was shared while measuring.
    """
    def snapshot() -> dict[int, tuple[int, str]]:
        out: dict[int, tuple[int, str]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            out[int(entry)] = (int(fields[11]) + int(fields[12]), cmd[:90])
        return out

    before = snapshot()
    time.sleep(window)
    after = snapshot()
    mine = {os.getpid(), *exclude}
    busy = []
    for pid, (ticks, cmd) in after.items():
        if pid in mine or pid not in before:
            continue
        pct = 100.0 * (ticks - before[pid][0]) / CLK_TCK / window
        if pct >= threshold_pct:
            busy.append(f"{pct:.0f}% {cmd}")
    return busy


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> None:
    """Print rows as an aligned text table (numbers right-aligned)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row, raw in zip(cells, rows, strict=True):
        print("  ".join(
            c.rjust(w) if isinstance(v, int | float) else c.ljust(w)
            for c, w, v in zip(row, widths, raw, strict=True)
        ))
    sys.stdout.flush()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def emit_json(result: dict[str, Any]) -> None:
    """The final line of every script: one JSON object."""
    print(json.dumps(result, separators=(",", ":"), default=_json_default))
    sys.stdout.flush()


def finish(result: dict[str, Any]) -> None:
    """Print the final JSON line and exit: status 0 when ``result["ok"]``, else 1."""
    emit_json(result)
    raise SystemExit(0 if result.get("ok") else 1)


def _json_default(o: object) -> object:
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)  # type: ignore[call-overload]
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for an empty list)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(pct / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when available (less client CPU), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


# --- /proc figures -------------------------------------------------------------------

def proc_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (``--workers N`` runs N children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if os.path.exists(f"/proc/{p}"):
            out.append(p)
            todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes, in seconds (resolution 1/CLK_TCK)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident set size of the processes together, in bytes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


def system_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores; /proc/stat minus idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def children_cpu_seconds() -> float:
    """user + system CPU of this process's reaped children (wrk runs, for instance)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu_seconds() -> float:
    """user + system CPU of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def fd_count(pids: Sequence[int]) -> int:
    """Open file descriptors of the processes together."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


MIB = 1024 * 1024


# --- nginx backend -------------------------------------------------------------------

NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"


class NginxBackend:
    """A static nginx on 127.0.0.1 answering every POST with a fixed JSON body.

    ``locations`` maps a URL prefix to its answer; ``/`` defaults to a small
    predictions object. Config, pid and logs live in a temporary directory.
    """

    def __init__(self, locations: dict[str, str] | None = None, workers: int = 1) -> None:
        self.locations = {"/": '{"predictions":[[0.1,0.2,0.3]],"model":"m"}', **(locations or {})}
        self.workers = workers
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gr-nginx-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        locs = []
        for prefix, body in self.locations.items():
            escaped = body.replace("\\", "\\\\").replace("'", "\\'")
            locs.append(
                f"    location {prefix} {{ default_type application/json; return 200 '{escaped}'; }}"
            )
        return "\n".join([
            "daemon off;",
            f"worker_processes {self.workers};",
            f"pid {self.dir}/nginx.pid;",
            f"error_log {self.dir}/error.log warn;",
            "events { worker_connections 4096; }",
            "http {",
            "  access_log off;",
            f"  client_body_temp_path {self.dir}/body;",
            f"  proxy_temp_path {self.dir}/proxy;",
            f"  fastcgi_temp_path {self.dir}/fastcgi;",
            f"  uwsgi_temp_path {self.dir}/uwsgi;",
            f"  scgi_temp_path {self.dir}/scgi;",
            "  keepalive_requests 1000000;",
            "  keepalive_timeout 120s;",
            f"  server {{ listen {HOST}:{self.port} backlog=4096;",
            *locs,
            "  }",
            "}",
        ]) + "\n"

    def start(self) -> NginxBackend:
        if not os.path.exists(NGINX_BIN):
            raise RuntimeError("nginx is not installed: run scripts/install-test-tools.sh")
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        with open(self.dir / "stderr.log", "wb") as err:
            self.proc = subprocess.Popen([NGINX_BIN, "-p", str(self.dir), "-c", str(conf)],
                                         stdout=subprocess.DEVNULL, stderr=err)
        if not wait_port(self.port, 10):
            self.stop()
            raise RuntimeError(f"nginx did not start: {(self.dir / 'stderr.log').read_text()[-2000:]}")
        return self

    def url(self, path: str = "/v1/models/m:predict") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NginxBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the stand-in service -------------------------------------------------------------

class StandIn:
    """``standin.py`` as a subprocess: an aiohttp service that sleeps, then answers JSON."""

    def __init__(self, port: int | None = None, min_ms: float = 0.0, max_ms: float = 0.0, tag: str = "standin") -> None:
        self.port = port or free_port()
        self.min_ms, self.max_ms, self.tag = min_ms, max_ms, tag
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> StandIn:
        self.proc = subprocess.Popen(
            [sys.executable, str(LOADTESTS / "standin.py"), "--port", str(self.port),
             "--min-ms", str(self.min_ms), "--max-ms", str(self.max_ms), "--tag", self.tag],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if not wait_port(self.port, timeout):
            self.kill()
            raise RuntimeError("stand-in service did not start")
        return self

    def url(self, path: str = "/v1/models/m:predict") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def kill(self) -> None:
        """SIGKILL: the service dies without closing anything itself."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


# --- the router -----------------------------------------------------------------------

def router_command() -> list[str]:
    """How to start graph-router: the venv's console script, else ``python -m graph_router``."""
    script = ROOT / ".venv" / "bin" / "graph-router"
    if script.exists():
        return [str(script)]
    found = shutil.which("graph-router")
    return [found] if found else [sys.executable, "-m", "graph_router"]


class RouterProcess:
    """``graph-router serve`` on 127.0.0.1 as a subprocess; stdout/stderr go to a temp file.

    Exactly one of ``graph`` (a spec, passed as --graph-json) and ``graph_file`` is given.
    """

    def __init__(self, graph: dict[str, Any] | None = None, *, graph_file: Path | None = None,
                 workers: int = 1, drain_seconds: float = 0.0, reload: bool = False,
                 log_level: str = "WARNING", extra: Sequence[str] = ()) -> None:
        if (graph is None) == (graph_file is None):
            raise ValueError("give exactly one of graph and graph_file")
        self.graph, self.graph_file = graph, graph_file
        self.workers, self.drain_seconds, self.reload = workers, drain_seconds, reload
        self.log_level, self.extra = log_level, list(extra)
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="gr-router-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [*router_command(), "serve"]
        if self.graph is not None:
            cmd += ["--graph-json", json.dumps(self.graph, separators=(",", ":"))]
        else:
            cmd += ["--graph", str(self.graph_file)]
        cmd += ["--host", HOST, "--port", str(self.port), "--drain-seconds", str(self.drain_seconds),
                "--log-level", self.log_level]
        if self.workers != 1:
            cmd += ["--workers", str(self.workers)]
        if self.reload:
            cmd.append("--reload")
        return cmd + self.extra

    def start(self, timeout: float = 30.0, need_ready: bool = True) -> RouterProcess:
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT)
        if need_ready and not self.wait_ready(timeout):
            tail = self.log_tail()
            self.stop(signal.SIGKILL)
            raise RuntimeError(f"router did not become ready:\n{tail}")
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Poll /readyz until 200 (and, with workers, until every worker listens)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            if http_get_status(HOST, self.port, "/readyz") == 200 and (
                self.workers == 1 or len(self.pids()) >= self.workers + 1
            ):
                if self.workers > 1:
                    time.sleep(1.0)  # let every worker bind and load its graph
                return True
            time.sleep(0.05)
        return False

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid) if self.proc else []

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def log_tail(self, n: int = 3000) -> str:
        self.log.flush()
        try:
            return Path(self.log.name).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def send(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the router (the supervisor forwards it to workers)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Signal the router and wait for it; SIGKILL after ``timeout``. Returns its exit status."""
        code: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                code = self.wait(timeout)
                if code is None:
                    for pid in reversed(self.pids()):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    code = self.proc.wait(5)
            else:
                code = self.proc.returncode
        self.proc = None
        return code

    def cleanup(self) -> None:
        self.stop()
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)

    def __enter__(self) -> RouterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@contextlib.contextmanager
def temp_dir(prefix: str = "gr-loadtest-") -> Iterator[Path]:
    """A temporary directory, removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, then rename over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- wrk ------------------------------------------------------------------------------

WRK_BIN = shutil.which("wrk") or "/usr/bin/wrk"


@dataclass
class WrkResult:
    """wrk's figures for one run (latencies in milliseconds)."""

    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non2xx + sum(self.socket_errors.values())


_WRK_LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{delay}
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d," ..
    "\\"status\\":%d,\\"timeout\\":%d,\\"p50\\":%.1f,\\"p90\\":%.1f,\\"p99\\":%.1f,\\"max\\":%.1f}}\\n",
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_script(directory: Path, body: str, delay_ms: float = 0.0) -> Path:
    """A wrk Lua script that POSTs ``body`` and prints exact figures at the end."""
    if "]==]" in body:
        raise ValueError("body cannot contain ]==]")
    delay = f"delay = function() return {delay_ms} end" if delay_ms > 0 else ""
    path = directory / f"wrk-{abs(hash((body, delay_ms)))}.lua"
    path.write_text(_WRK_LUA.format(body=body, delay=delay))
    return path


def run_wrk(url: str, script: Path, connections: int, duration: float, threads: int | None = None,
            timeout_s: int = 10) -> WrkResult:
    """Run wrk against ``url`` for ``duration`` seconds and parse its Lua summary line."""
    threads = threads or min(connections, 2)
    cmd = [WRK_BIN, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
           "--timeout", f"{timeout_s}s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            d = json.loads(line[len("WRKJSON "):])
            secs = d["duration_us"] / 1e6
            return WrkResult(
                connections=connections, duration_s=secs, requests=d["requests"],
                rps=d["requests"] / secs if secs else 0.0,
                p50_ms=d["p50"] / 1000, p90_ms=d["p90"] / 1000, p99_ms=d["p99"] / 1000, max_ms=d["max"] / 1000,
                non2xx=d["status"],
                socket_errors={k: d[k] for k in ("connect", "read", "write", "timeout") if d[k]},
            )
    raise RuntimeError(f"wrk gave no summary (exit {out.returncode}): {out.stdout[-1000:]} {out.stderr[-1000:]}")


# --- a raw HTTP/1.1 client that knows where a request failed --------------------------

# Outcomes of one request.
OK = "ok"                        # 200
NON200 = "non200"                # an answer, but not 200
REFUSED = "refused"              # connect() refused: never accepted, nothing sent
CONNECT_ERROR = "connect_error"  # connect() failed otherwise (timeout, reset in handshake)
CLOSED_REUSED = "closed_reused"  # kept-alive connection closed before any answer byte
RESET_NEW = "reset_new"          # fresh connection accepted by the kernel, closed before any answer byte
CUT = "cut"                      # the answer started, then the connection broke
TIMEOUT = "timeout"              # no whole answer within the request timeout

LOST_OUTCOMES = (NON200, CLOSED_REUSED, RESET_NEW, CUT, TIMEOUT)


@dataclass(slots=True)
class Outcome:
    """One request: when it started and ended (monotonic seconds), and how it ended."""

    start: float
    end: float
    kind: str
    status: int = 0
    body: bytes = b""
    detail: str = ""  # for failures: "eof" or the exception's class name


class _Eof(ConnectionError):
    """The peer closed the connection cleanly (FIN) where an answer was due."""


class RawConnection:
    """One client connection speaking just enough HTTP/1.1 (Content-Length answers)."""

    def __init__(self, port: int, host: str = HOST) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None
        self.used = 0

    async def request(self, payload: bytes, path: str = "/", timeout: float = 10.0,
                      keep_alive: bool = True) -> Outcome:
        """POST ``payload``; classify the result. Opens a connection when none is open."""
        start = time.monotonic()
        if self.writer is None:
            try:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), timeout)
            except ConnectionRefusedError:
                return Outcome(start, time.monotonic(), REFUSED)
            except (OSError, TimeoutError):
                await self.close()
                return Outcome(start, time.monotonic(), CONNECT_ERROR)
        reused = self.used > 0
        assert self.reader is not None and self.writer is not None
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                + ("" if keep_alive else "Connection: close\r\n") + "\r\n").encode()
        got_bytes = False
        try:
            async with asyncio.timeout(timeout):
                self.writer.write(head + payload)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise _Eof("closed before the answer")
                got_bytes = True
                status = int(status_line.split(b" ", 2)[1])
                length, close = 0, not keep_alive
                while True:
                    line = await self.reader.readline()
                    if not line:
                        raise _Eof("closed in the answer head")
                    if line in (b"\r\n", b"\n"):
                        break
                    name, _, value = line.partition(b":")
                    lname = name.strip().lower()
                    if lname == b"content-length":
                        length = int(value.strip())
                    elif lname == b"connection" and value.strip().lower() == b"close":
                        close = True
                body = await self.reader.readexactly(length) if length else b""
        except TimeoutError:
            await self.close()
            return Outcome(start, time.monotonic(), TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            await self.close()
            if got_bytes:
                kind = CUT
            else:
                kind = CLOSED_REUSED if reused else RESET_NEW
            detail = "eof" if isinstance(exc, _Eof | asyncio.IncompleteReadError) else type(exc).__name__
            return Outcome(start, time.monotonic(), kind, detail=detail)
        self.used += 1
        if close:
            await self.close()
        return Outcome(start, time.monotonic(), OK if status == 200 else NON200, status, body)


@dataclass
class LoadRecorder:
    """Collects outcomes of a load run."""

    outcomes: list[Outcome] = field(default_factory=list)

    def counts(self, since: float = float("-inf"), until: float = float("inf")) -> dict[str, int]:
        c: dict[str, int] = {}
        for o in self.outcomes:
            if since <= o.start < until:
                c[o.kind] = c.get(o.kind, 0) + 1
        return c

    def samples(self, n: int = 3, since: float = float("-inf")) -> list[str]:
        """Up to ``n`` distinct failures (kind, status, start of the body), to say why requests failed."""
        seen: list[str] = []
        for o in self.outcomes:
            if o.kind != OK and o.start >= since:
                text = " ".join(x for x in (o.kind, str(o.status or ""), o.detail,
                                            o.body[:160].decode(errors="replace")) if x)
                if text not in seen:
                    seen.append(text)
                    if len(seen) >= n:
                        break
        return seen

    def latencies_ms(self, since: float = float("-inf"), until: float = float("inf"),
                     kind: str = OK) -> list[float]:
        return [(o.end - o.start) * 1000 for o in self.outcomes if o.kind == kind and since <= o.start < until]


async def load_loop(port: int, payload: bytes, concurrency: int, stop: asyncio.Event, recorder: LoadRecorder,
                    *, rate: float | None = None, keep_alive: bool = True, timeout: float = 10.0,
                    hard_deadline: float = 3600.0, refused_pause: float = 0.005,
                    on_outcome: Callable[[Outcome], None] | None = None) -> None:
    """``concurrency`` workers sending requests until ``stop`` is set (or ``hard_deadline`` seconds).

    rate: total requests per second across workers (paced, each worker on its own
    schedule); None: each worker sends its next request as soon as the previous ends.
    keep_alive False: a fresh connection per request. refused_pause: how long an unpaced
    worker waits after a refused connect before trying again.
    """
    end_by = time.monotonic() + hard_deadline

    async def worker(i: int) -> None:
        conn = RawConnection(port)
        interval = concurrency / rate if rate else 0.0
        next_at = time.monotonic() + (interval * i / concurrency if interval else 0.0)
        try:
            while not stop.is_set() and time.monotonic() < end_by:
                if interval:
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), delay)
                        if stop.is_set():
                            break
                    next_at = max(next_at + interval, time.monotonic())
                outcome = await conn.request(payload, timeout=timeout, keep_alive=keep_alive)
                recorder.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
                if not keep_alive:
                    await conn.close()
                if outcome.kind in (REFUSED, CONNECT_ERROR) and not interval:
                    await asyncio.sleep(refused_pause)  # do not spin on a closed port
        finally:
            await conn.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


def summarize_ms(values: Sequence[float]) -> dict[str, float]:
    """count, p50, p99, max and mean of latencies in ms."""
    if not values:
        return {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    return {"count": len(values), "p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99),
            "max_ms": max(values), "mean_ms": statistics.fmean(values)}
