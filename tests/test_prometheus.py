"""fastcore.metrics scraped by a real Prometheus server (Debian's `prometheus`),
its figures read back through Prometheus's HTTP API.

A missing prometheus skips the test, except under CI=true, where it fails.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import support
from support import LOCALHOST, run_until

pytestmark = pytest.mark.fastcore_only

PROMETHEUS = shutil.which("prometheus")
SCRAPE_DEADLINE = 60.0  # seconds for Prometheus to start and store a first scrape


def _free_port():
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _api(port, path, **params):
    url = "http://%s:%d%s?%s" % (LOCALHOST, port, path, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=support.DEFAULT_TIMEOUT) as resp:
        return json.loads(resp.read().decode("utf-8"))


def _query_all(port, queries, deadline):
    """Poll Prometheus until the target is up and has a sample of every query
    (one scrape), then evaluate them all at one instant: {query: [(labels, value)]}."""
    last_error = None
    while time.monotonic() < deadline:
        try:
            up = _api(port, "/api/v1/query", query='up{job="fastcore"}')["data"]["result"]
            if up and up[0]["value"][1] == "1":
                # Samples of one scrape share its start time; a scrape that
                # began before this instant has ended (the timeout is 1 s), so
                # every query below sees the same scrape.
                at = time.time() - 1.5
                results = {}
                for query in queries:
                    answer = _api(port, "/api/v1/query", query=query, time="%.3f" % at)
                    results[query] = [
                        (r["metric"], float(r["value"][1])) for r in answer["data"]["result"]
                    ]
                if all(results.values()):
                    return results
        except OSError as err:  # not listening yet
            last_error = err
        time.sleep(0.2)  # polling an external server that has no event to wait on
    raise AssertionError("no scrape stored by Prometheus in time (last error: %r)" % last_error)


def test_prometheus_reads_what_the_loop_did(fastcore_pkg, asyncore, kit, sockmap, tmp_path,
                                           monkeypatch):
    if PROMETHEUS is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed: CI must install it (.ci/system-packages)")
        pytest.skip("prometheus not installed")
    import fastcore.metrics as metrics

    # What each scrape read before it was answered, and the size of its answer.
    served = []
    route = metrics.MetricsConnection._route

    def recording_route(self, head):
        reply, drain = route(self, head)
        served.append((len(self.request), len(reply)))
        return reply, drain

    monkeypatch.setattr(metrics.MetricsConnection, "_route", recording_route)
    fastcore_pkg.stats.reset()
    endpoint = metrics.serve(LOCALHOST, 0, map=sockmap)
    echo = kit.EchoServer(sockmap)
    payload = b"x" * 100000 + b"\n"
    client = socket.create_connection(echo.address, timeout=support.DEFAULT_TIMEOUT)
    server_process = None
    try:
        client.sendall(payload)
        reader = support.PeerReader(client)
        run_until(asyncore, sockmap, lambda: reader.has(len(payload)))
        # The client stays connected: one connection open besides the scrape.

        port = _free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: fastcore\n"
            "    static_configs:\n"
            "      - targets: ['%s:%d']\n" % endpoint.address[:2]
        )
        log = open(tmp_path / "prometheus.log", "wb")
        server_process = subprocess.Popen(
            [PROMETHEUS, "--config.file=%s" % config,
             "--storage.tsdb.path=%s" % (tmp_path / "data"),
             "--web.listen-address=%s:%d" % (LOCALHOST, port)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        queries = (
            "fastcore_connections_open",
            "fastcore_connections_accepted_total",
            "fastcore_bytes_read_total",
            "fastcore_bytes_written_total",
            "fastcore_events_total",
            "fastcore_listening",
            "fastcore_accept_pauses_total",
            "fastcore_tls_handshakes_total",
            "fastcore_iteration_handler_seconds_count",
            "fastcore_loop_iterations_total",
            'fastcore_iteration_handler_seconds_bucket{le="+Inf"}',
            "fastcore_info",
        )
        deadline = time.monotonic() + SCRAPE_DEADLINE
        poller = support.start_thread(_query_all, port, queries, deadline)
        run_until(asyncore, sockmap, lambda: not poller.is_alive(),
                  timeout=SCRAPE_DEADLINE + 10, what="Prometheus's first scrape")
        results = poller.finish()
    finally:
        client.close()
        if server_process is not None:
            server_process.terminate()
            try:
                server_process.wait(support.DEFAULT_TIMEOUT)
            except subprocess.TimeoutExpired:
                server_process.kill()
                server_process.wait()

    def value(query):
        (sample,) = results[query]
        return sample[1]

    # The sample read back is of the k-th scrape: k accepted besides the echo's.
    scrapes = int(value("fastcore_connections_accepted_total")) - 1
    assert 1 <= scrapes <= len(served)
    assert value("fastcore_connections_open") == 2  # the echo client and the scrape
    assert value("fastcore_listening") == 2
    # Bytes: the echo's, and what the earlier scrapes read and were sent.
    assert value("fastcore_bytes_read_total") == len(payload) + sum(
        read for read, _ in served[:scrapes])
    assert value("fastcore_bytes_written_total") == len(payload) + sum(
        sent for _, sent in served[:scrapes - 1])
    events = {sample[0]["kind"]: sample[1] for sample in results["fastcore_events_total"]}
    assert set(events) == {"read", "write", "expt", "close", "error"}
    # Reads: every accept (echo's and each scrape's), the echo's data, each request.
    assert events["read"] >= 1 + 1 + 2 * scrapes
    assert events["write"] >= scrapes  # each answer
    assert events["expt"] == events["close"] == events["error"] == 0
    assert value("fastcore_accept_pauses_total") == 0
    assert value("fastcore_tls_handshakes_total") == 0
    iterations = value("fastcore_loop_iterations_total")
    assert iterations >= 2
    assert value("fastcore_iteration_handler_seconds_count") == iterations
    assert value('fastcore_iteration_handler_seconds_bucket{le="+Inf"}') == iterations
    (info,) = results["fastcore_info"]
    assert info[0]["implementation"] == ("extension" if fastcore_pkg.EXTENSION else "python")
    assert info[0]["version"] == fastcore_pkg.__version__
