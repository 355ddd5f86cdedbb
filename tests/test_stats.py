"""fastcore.stats: the loop's counters (both implementations), over real sockets."""

import socket
import time

import pytest
import support
from support import USE_POLL, run_iterations, run_until

pytestmark = pytest.mark.fastcore_only

COUNTERS = ("iterations", "bytes_read", "bytes_written", "accepted", "rejected", "accept_pauses",
            "closed", "timers_run", "tls_handshakes", "tls_handshake_failures")
HANDLER_BOUNDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                  0.5, 1.0, 2.5, float("inf")]


@pytest.fixture
def stats(fastcore_pkg):
    fastcore_pkg.stats.reset()
    yield fastcore_pkg.stats
    fastcore_pkg.stats.reset()


def test_snapshot_shape(stats, sockmap):
    snap = stats(sockmap)
    assert set(snap) == {
        "iterations", "poll_seconds", "handler_seconds", "handler_seconds_histogram",
        "events", "bytes_read", "bytes_written", "accepted", "rejected", "accept_pauses", "closed",
        "timers_run", "tls_handshakes", "tls_handshake_failures", "dispatchers", "listening",
        "connections_open"}
    assert set(snap["events"]) == {"read", "write", "expt", "close", "error"}
    assert all(snap[name] == 0 for name in COUNTERS)
    assert snap["handler_seconds_histogram"] == [(bound, 0) for bound in HANDLER_BOUNDS]
    assert snap["poll_seconds"] == snap["handler_seconds"] == 0.0
    assert all(n == 0 for n in snap["events"].values())
    assert stats.snapshot(sockmap) == snap


def test_default_map_is_the_modules(stats, asyncore, kit, global_map):
    kit.EchoServer(asyncore.socket_map)
    snap = stats()
    assert (snap["dispatchers"], snap["listening"]) == (1, 1)


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_echo_exchange_is_counted(stats, asyncore, kit, sockmap, use_poll):
    server = kit.EchoServer(sockmap)
    client = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
    payload = b"x" * 5000 + b"\n" + b"hello\n"
    try:
        run_until(asyncore, sockmap, lambda: len(server.handlers) == 1, use_poll=use_poll)
        snap = stats(sockmap)
        assert snap["accepted"] == 1
        assert (snap["dispatchers"], snap["listening"], snap["connections_open"]) == (2, 1, 1)
        client.sendall(payload)
        reader = support.PeerReader(client)
        run_until(asyncore, sockmap, lambda: reader.has(len(payload)), use_poll=use_poll)
        assert bytes(reader.buf) == payload
        snap = stats(sockmap)
        assert snap["bytes_read"] == len(payload)
        assert snap["bytes_written"] == len(payload)
        assert snap["events"]["read"] >= 2  # the accept, then the data
        assert snap["closed"] == 0
    finally:
        client.close()
    handler = server.handlers[0]
    run_until(asyncore, sockmap, lambda: handler.count("handle_close") == 1, use_poll=use_poll)
    snap = stats(sockmap)
    assert snap["closed"] == 1
    assert snap["events"]["close"] == 1
    assert (snap["dispatchers"], snap["listening"], snap["connections_open"]) == (1, 1, 0)
    assert snap["iterations"] >= 3


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_connect_is_a_write_event(stats, asyncore, kit, sockmap, use_poll):
    server = kit.EchoServer(sockmap)
    client = kit.ClientChat(server.address, sockmap, payload=b"ping\n")
    run_until(asyncore, sockmap, lambda: client.lines == [b"ping"], use_poll=use_poll)
    snap = stats(sockmap)
    assert snap["events"]["write"] >= 1
    assert snap["accepted"] == 1
    # both ends: the client's "ping\n", then the server's echo of it
    assert snap["bytes_written"] == snap["bytes_read"] == 10
    assert snap["connections_open"] == 2
    client.close()
    assert stats(sockmap)["closed"] == 1


def test_failed_accept_is_not_counted(stats, asyncore, kit, sockmap):
    server = kit.EchoServer(sockmap)
    assert server.accept() is None  # nobody is connecting: EWOULDBLOCK
    assert stats(sockmap)["accepted"] == 0


def test_closing_an_unconnected_dispatcher_is_not_a_closed_connection(stats, asyncore, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.create_socket()
    d.close()
    assert stats(sockmap)["closed"] == 0


def test_errors_are_counted(stats, asyncore, sockmap, capsys):
    a, b = socket.socketpair()

    class Failing(asyncore.dispatcher):
        def handle_read(self):
            self.recv(100)
            raise RuntimeError("boom")

    d = Failing(a, map=sockmap)
    b.send(b"abc")
    run_until(asyncore, sockmap, lambda: d.socket.fileno() < 0 or not sockmap)
    snap = stats(sockmap)
    assert snap["events"]["error"] == 1
    assert snap["bytes_read"] == 3
    assert "RuntimeError" in capsys.readouterr().out
    b.close()


def test_poll_time_and_handler_time(stats, asyncore, sockmap):
    a, b = socket.socketpair()

    class Slow(asyncore.dispatcher):
        def writable(self):
            return False

        def handle_read(self):
            self.recv(100)
            time.sleep(0.05)  # the work being measured, not synchronisation

    Slow(a, map=sockmap)
    run_iterations(asyncore, sockmap, 3, timeout=0.05)  # idle: three waits
    snap = stats(sockmap)
    assert snap["iterations"] == 3
    assert snap["poll_seconds"] >= 0.12
    assert snap["handler_seconds"] < 0.5 * snap["poll_seconds"]  # waiting is not handling
    b.send(b"x")
    run_iterations(asyncore, sockmap, 1, timeout=1.0)
    snap = stats(sockmap)
    assert snap["iterations"] == 4
    assert snap["handler_seconds"] >= 0.05
    assert snap["poll_seconds"] < 0.12 + 0.5
    # One observation per iteration: the slow one above 50 ms, the idle ones
    # (well) below it.
    histogram = dict(snap["handler_seconds_histogram"])
    assert list(histogram) == HANDLER_BOUNDS
    assert histogram[0.05] == 3 and histogram[2.5] == histogram[float("inf")] == 4
    b.close()


def test_rejected(stats, asyncore, kit, sockmap):
    """A connection fastcore closes before the program sees it (a bad PROXY
    protocol header) is rejected; a good one and a peer gone before its first
    byte are not."""
    from fastcore.proxy import accept_proxy_protocol

    server = kit.EchoServer(sockmap)
    server.log_info = lambda message, type="info": None
    accept_proxy_protocol(server)
    clients = [socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
               for _ in range(3)]
    try:
        bad, good, gone = clients
        bad.sendall(b"GET / HTTP/1.0\r\n\r\n")
        good.sendall(b"PROXY UNKNOWN\r\n")
        gone.close()
        # Every one accepted, and only the server and good's handler left.
        run_until(asyncore, sockmap, lambda: stats(sockmap)["accepted"] == 3
                  and len(server.handlers) == 1 and len(sockmap) == 2)
        snap = stats(sockmap)
        assert (snap["accepted"], snap["rejected"]) == (3, 1)
    finally:
        for client in clients:
            client.close()


def test_accept_pauses(fastcore_pkg, stats, asyncore, kit, sockmap):
    """Each time a listener reaches its connection limit is one pause."""
    server = kit.EchoServer(sockmap)
    fastcore_pkg.limit_connections(server, 1)
    first = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
    second = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
    try:
        run_until(asyncore, sockmap, lambda: len(server.handlers) == 1)
        run_iterations(asyncore, sockmap, 5)
        assert len(server.handlers) == 1 and stats(sockmap)["accept_pauses"] == 1
        first.close()
        run_until(asyncore, sockmap, lambda: len(server.handlers) == 2)  # paused again
        assert stats(sockmap)["accept_pauses"] == 2
    finally:
        first.close()
        second.close()


def test_reset(stats, asyncore, kit, sockmap):
    server = kit.EchoServer(sockmap)
    client = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
    run_until(asyncore, sockmap, lambda: len(server.handlers) == 1)
    before = stats(sockmap, reset=True)
    assert before["accepted"] == 1 and before["iterations"] >= 1
    after = stats(sockmap)
    assert all(after[name] == 0 for name in COUNTERS)
    assert after["poll_seconds"] == after["handler_seconds"] == 0.0
    # gauges are not counters: still what the map holds
    assert (after["dispatchers"], after["connections_open"]) == (2, 1)
    run_iterations(asyncore, sockmap, 2)
    assert stats(sockmap)["iterations"] == 2
    stats.reset()
    assert stats(sockmap)["iterations"] == 0
    client.close()


def test_timers_run(fastcore_pkg, asyncore, stats, sockmap):
    fired = []
    for delay in (0.0, 0.01, 0.02):
        fastcore_pkg.call_later(delay, fired.append, delay)
    fastcore_pkg.call_later(0.01, print).cancel()  # never runs: not counted
    asyncore.loop(timeout=5, map={})
    assert len(fired) == 3
    assert stats(sockmap)["timers_run"] == 3


def test_counters_are_shared_across_maps(stats, asyncore, sockmap):
    other = {}
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        asyncore.dispatcher_with_send(a, map=sockmap).send(b"12345")
        asyncore.dispatcher_with_send(c, map=other).send(b"678")
        assert stats(sockmap)["bytes_written"] == 8
        assert stats(other)["dispatchers"] == 1
    finally:
        asyncore.close_all(other, ignore_all=True)
        b.close()
        d.close()
