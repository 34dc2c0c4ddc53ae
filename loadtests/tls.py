"""TLS cost: the router's CPU per request over HTTPS against the same run over plain HTTP.

Why a script of its own: the referee (compare.py) drives its targets with http:// URLs,
so it cannot load an HTTPS listener. Here two routers serve the same one-step graph
(seq1: one step to a static nginx), one plain and one with ``--tls-cert-file`` /
``--tls-key-file`` (a throwaway CA and certificate made by trustme), and wrk loads
them in turn (plain, TLS, plain, TLS, ...) over kept-alive connections, ``https://``
for the second. CPU µs per request: the router process's utime + stime over the run /
requests answered; medians over ``--rounds``. The handshake is paid once per wrk
connection, so this is the steady-state cost of encrypting and decrypting.

    .venv/bin/python loadtests/tls.py                 # 3 rounds x 4 s each (about 1 min)
    .venv/bin/python loadtests/tls.py --quick         # 1 round x 1 s: a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import trustme
from common import NginxBackend, RouterProcess, finish, machine_info, print_table, run_wrk, wrk_script

PAYLOAD = '{"instances":[[1.0,2.0,3.0,4.0]]}'


def _certificates(directory: Path) -> tuple[Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


class _TLSRouter(RouterProcess):
    """RouterProcess serving HTTPS; readiness is asked on the plain --metrics-port listener."""

    def __init__(self, graph: dict[str, Any], cert: Path, key: Path) -> None:
        from common import free_port

        self.metrics_port = free_port()
        super().__init__(graph, extra=["--tls-cert-file", str(cert), "--tls-key-file", str(key),
                                       "--metrics-port", str(self.metrics_port)])

    def wait_ready(self, timeout: float = 30.0) -> bool:
        import time

        from common import HOST, http_get_status

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            if http_get_status(HOST, self.metrics_port, "/readyz") == 200:
                return True
            time.sleep(0.05)
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0
    tmp = Path(tempfile.mkdtemp(prefix="gr-tls-"))
    cert, key = _certificates(tmp)
    script = wrk_script(tmp, PAYLOAD)
    figures: dict[str, list[dict[str, float]]] = {"http": [], "https": []}
    with NginxBackend() as nginx:
        graph = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": nginx.url()}]}}}
        plain = RouterProcess(graph).start()
        tls = _TLSRouter(graph, cert, key).start()
        try:
            targets = {"http": (plain, plain.url("/")), "https": (tls, plain.url("/").replace(
                f"http://127.0.0.1:{plain.port}", f"https://127.0.0.1:{tls.port}"))}
            for _router, url in targets.values():  # warm-up: connections, caches
                run_wrk(url, script, args.connections, 1.0)
            for _ in range(args.rounds):
                for name, (router, url) in targets.items():
                    before = router.cpu()
                    res = run_wrk(url, script, args.connections, args.seconds)
                    cpu = router.cpu() - before
                    errors = res.non2xx + sum(res.socket_errors.values())
                    figures[name].append({"cpu_us": cpu / res.requests * 1e6 if res.requests else 0.0,
                                          "rps": res.rps, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
                                          "errors": errors})
        finally:
            plain.stop()
            tls.stop()
    summary = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for name, rows in figures.items()}
    ratio = summary["https"]["cpu_us"] / summary["http"]["cpu_us"] if summary["http"]["cpu_us"] else 0.0
    print_table(["listener", "cpu µs/req", "req/s", "p50 ms", "p99 ms", "errors"],
                [[n, s["cpu_us"], s["rps"], s["p50_ms"], s["p99_ms"], s["errors"]] for n, s in summary.items()],
                title=f"seq1, {args.connections} connections, {args.rounds} x {args.seconds:g} s (medians)")
    print(f"TLS / plain CPU per request: {ratio:.2f}x")
    finish({"scenario": "seq1", "connections": args.connections, "rounds": args.rounds, "seconds": args.seconds,
            "summary": summary, "cpu_ratio_tls_vs_plain": ratio, "machine": machine_info()})


if __name__ == "__main__":
    main()
