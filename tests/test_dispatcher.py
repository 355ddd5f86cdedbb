"""asyncore.dispatcher, dispatcher_with_send and the loop over real sockets."""

import errno
import os
import select
import signal
import socket
import threading
import time

import pytest
import support
from support import LOCALHOST, USE_POLL, run_iterations, run_until

# ---------------------------------------------------------------------------
# construction, socket methods
# ---------------------------------------------------------------------------


def test_dispatcher_with_blocking_connected_socket(asyncore, sockmap):
    a, b = socket.socketpair()
    assert a.getblocking()
    d = asyncore.dispatcher(a, map=sockmap)
    assert not a.getblocking()
    assert d.connected is True
    assert d.socket is a
    assert d._fileno == a.fileno()
    assert sockmap == {a.fileno(): d}
    assert d.addr == a.getpeername()
    b.close()


def test_dispatcher_with_unconnected_socket(asyncore, sockmap):
    s = socket.socket()
    d = asyncore.dispatcher(s, map=sockmap)
    assert d.connected is False
    assert d.addr is None
    assert sockmap == {s.fileno(): d}


def test_create_socket_bind_listen(asyncore, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    assert d.family_and_type == (socket.AF_INET, socket.SOCK_STREAM)
    assert d.socket.getblocking() is False
    assert sockmap == {d.socket.fileno(): d}
    d.set_reuse_addr()
    assert d.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    assert d.bind((LOCALHOST, 0)) is None
    assert d.addr == (LOCALHOST, 0)
    assert d.accepting is False
    assert d.listen(5) is None
    assert d.accepting is True
    assert d.accept() is None               # EWOULDBLOCK -> None
    d.close()
    assert d.accepting is False
    assert sockmap == {}


def test_create_socket_default_family(asyncore, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.create_socket()
    assert d.family_and_type == (socket.AF_INET, socket.SOCK_STREAM)
    assert d.socket.family == socket.AF_INET and d.socket.type == socket.SOCK_STREAM


def test_accept_on_non_listening_socket_raises(asyncore, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.create_socket()
    with pytest.raises(OSError) as ei:
        d.accept()
    assert ei.value.errno == errno.EINVAL


def test_accept_returns_pair(asyncore, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.create_socket()
    d.bind((LOCALHOST, 0))
    d.listen(5)
    c = socket.create_connection(d.socket.getsockname())
    select.select([d.socket], [], [], 5)
    pair = d.accept()
    assert pair is not None
    conn, addr = pair
    assert addr == c.getsockname()
    conn.close()
    c.close()


def test_connect_synchronous_success(asyncore, kit, sockmap):
    """connect_ex() == 0 (UDP): handle_connect runs inside connect()."""
    d = kit.Dispatcher(map=sockmap)
    d.create_socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.connect((LOCALHOST, 9))
    assert d.names() == ["handle_connect"]
    assert d.connected is True
    assert d.connecting is False
    assert d.addr == (LOCALHOST, 9)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="AF_UNIX needed")
def test_connect_immediate_error(asyncore, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.create_socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(OSError) as ei:
        d.connect("/nonexistent-fastcore-test-dir/sock")
    assert ei.value.errno == errno.ENOENT
    assert ei.value.strerror == "ENOENT"          # errorcode[err], like the stdlib
    assert d.connecting is True and d.connected is False


# ---------------------------------------------------------------------------
# connect / accept through the loop
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
def test_connect_accept(asyncore, kit, sockmap, use_poll):
    accepted = []

    class Server(kit.Dispatcher):
        def handle_accepted(self, sock, addr):
            self._rec("handle_accepted")
            accepted.append(addr)
            self.handler = kit.Reader(sock, map=sockmap)

    server = Server(map=sockmap)
    server.create_socket()
    server.bind((LOCALHOST, 0))
    server.listen(5)
    address = server.socket.getsockname()

    client = kit.Reader(map=sockmap)
    client.create_socket()
    client.connect(address)
    assert client.connecting is True
    assert client.addr == address
    run_until(asyncore, sockmap, lambda: accepted and client.connected, use_poll=use_poll)
    assert client.connecting is False
    assert client.count("handle_connect") == 1
    assert client.names()[0] == "handle_connect"
    assert server.names() == ["handle_accepted"]
    assert accepted == [client.socket.getsockname()]
    assert server.handler.connected is True
    assert server.handler.addr == client.socket.getsockname()

    client.send(b"ping")
    run_until(asyncore, sockmap, lambda: server.handler.data == b"ping", use_poll=use_poll)
    server.handler.send(b"pong")
    run_until(asyncore, sockmap, lambda: client.data == b"pong", use_poll=use_poll)
    assert client.count("handle_connect") == 1


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_handle_connect_through_read_event(asyncore, kit, sockmap, use_poll):
    """A connecting dispatcher that is not writable learns of the connection
    from its first read event: handle_connect then handle_read."""

    class Greeter(kit.Dispatcher):
        def handle_accepted(self, sock, addr):
            sock.sendall(b"hello")
            self.conn = sock

    class Client(kit.Reader):
        def writable(self):
            return False

    server = Greeter(map=sockmap)
    server.create_socket()
    server.bind((LOCALHOST, 0))
    server.listen(5)
    client = Client(map=sockmap)
    client.create_socket()
    client.connect(server.socket.getsockname())
    run_until(asyncore, sockmap, lambda: client.data == b"hello", use_poll=use_poll)
    assert client.names()[:2] == ["handle_connect", "handle_read"]
    assert client.connected is True and client.connecting is False
    server.conn.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_connect_refused(asyncore, kit, sockmap, use_poll):
    port = support.closed_port()
    client = kit.Reader(map=sockmap)
    client.create_socket()
    try:
        client.connect((LOCALHOST, port))
    except ConnectionRefusedError:
        pytest.skip("connect() was refused synchronously on this platform")
    run_until(asyncore, sockmap, lambda: not sockmap, use_poll=use_poll)
    assert client.events[0] == ("handle_error", "ConnectionRefusedError")
    assert client.names()[1:3] == ["handle_close", "close"]
    assert "handle_connect" not in client.names()
    assert client.connected is False


def test_handle_expt_event_with_socket_error(asyncore, kit, sockmap):
    """handle_expt_event() with SO_ERROR set closes instead of handle_expt()."""
    port = support.closed_port()
    d = kit.Dispatcher(map=sockmap)
    d.create_socket()
    err = d.socket.connect_ex((LOCALHOST, port))
    if err == errno.ECONNREFUSED:
        pytest.skip("connect() was refused synchronously on this platform")
    select.select([], [d.socket], [], 5)
    d.handle_expt_event()
    assert d.names() == ["handle_close", "close"]


def test_handle_expt_event_without_error(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    d.handle_expt_event()
    assert d.names() == ["handle_expt"]
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_handle_expt_oob(asyncore, kit, sockmap, use_poll):
    a, b = support.tcp_pair()
    d = kit.Reader(b, map=sockmap)
    a.send(b"x", socket.MSG_OOB)
    run_until(asyncore, sockmap, lambda: d.count("handle_expt"), use_poll=use_poll)
    assert d.names()[0] == "handle_expt"
    assert "handle_close" not in d.names()
    a.close()


# ---------------------------------------------------------------------------
# send / recv errno mapping
# ---------------------------------------------------------------------------

def test_recv_data(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    b.send(b"abc")
    assert d.recv(10) == b"abc"
    assert d.names() == []
    b.close()


def test_recv_would_block_raises(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    with pytest.raises(BlockingIOError):
        d.recv(10)
    assert d.names() == []
    b.close()


def test_recv_eof_closes(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    b.close()
    assert d.recv(10) == b""
    assert d.names() == ["handle_close", "close"]
    assert sockmap == {}


def test_recv_reset_closes(asyncore, kit, sockmap):
    a, b = support.tcp_pair()
    d = kit.Dispatcher(b, map=sockmap)
    support.reset(a)
    select.select([b], [], [], 5)
    assert d.recv(10) == b""
    assert d.names() == ["handle_close", "close"]


def test_recv_not_connected_closes(asyncore, kit, sockmap):
    d = kit.Dispatcher(map=sockmap)
    d.create_socket()
    assert d.recv(10) == b""                  # ENOTCONN
    assert d.names() == ["handle_close", "close"]


def test_recv_closed_socket_closes(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    fd = a.fileno()
    a.close()                                  # EBADF from now on
    assert d.recv(10) == b""
    assert d.names() == ["handle_close", "close"]
    assert fd not in sockmap
    b.close()


def test_send_would_block_returns_zero(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    chunk = b"x" * 65536
    for _ in range(10000):
        n = d.send(chunk)
        if n == 0:
            break
        assert 0 < n <= len(chunk)
    else:
        pytest.fail("the socket buffer never filled")
    assert d.names() == []
    b.close()


def test_send_broken_pipe_closes(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    b.close()
    assert d.send(b"data") == 0               # EPIPE
    assert d.names() == ["handle_close", "close"]
    assert sockmap == {}


def test_send_after_reset_closes(asyncore, kit, sockmap):
    a, b = support.tcp_pair()
    d = kit.Dispatcher(b, map=sockmap)
    support.reset(a)
    select.select([b], [], [], 5)
    assert d.send(b"data") == 0               # ECONNRESET or EPIPE
    assert d.names() == ["handle_close", "close"]


def test_send_closed_socket_closes(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    a.close()
    assert d.send(b"data") == 0               # EBADF
    assert d.names() == ["handle_close", "close"]
    b.close()


def test_send_other_error_raises(asyncore, kit, sockmap):
    d = kit.Dispatcher(map=sockmap)
    d.create_socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.connect((LOCALHOST, 9))
    with pytest.raises(OSError) as ei:
        d.send(b"x" * 70000)                   # EMSGSIZE
    assert ei.value.errno == errno.EMSGSIZE
    assert "handle_close" not in d.names()


# ---------------------------------------------------------------------------
# dispatcher_with_send
# ---------------------------------------------------------------------------

def test_dispatcher_with_send_buffers(asyncore, sockmap):
    a, b = socket.socketpair()
    d = asyncore.dispatcher_with_send(a, map=sockmap)
    assert not d.writable()
    assert d.send(b"hello") is None
    assert d.out_buffer == b""
    assert support.recv_exactly(b, 5) == b"hello"
    d.out_buffer = b"queued"
    assert d.writable()
    d.handle_write()
    assert d.out_buffer == b""
    assert support.recv_exactly(b, 6) == b"queued"
    u = asyncore.dispatcher_with_send(map=sockmap)
    assert u.writable()                        # not connected
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_dispatcher_with_send_big_transfer(asyncore, kit, sockmap, use_poll):
    payload = os.urandom(1 << 16) * 64         # 4 MiB
    server = kit.EchoServer(sockmap, handler_class=kit.Reader)
    client = asyncore.dispatcher_with_send(map=sockmap)
    client.create_socket()
    client.connect(server.address)
    run_until(asyncore, sockmap, lambda: server.handlers and client.connected, use_poll=use_poll)
    client.send(payload)
    reader = server.handlers[0]
    run_until(asyncore, sockmap, lambda: len(reader.data) >= len(payload), use_poll=use_poll,
              timeout=20)
    assert reader.data == payload
    assert client.out_buffer == b""


# ---------------------------------------------------------------------------
# loop()
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("count", [0, 1, 5, 17])
def test_loop_count(asyncore, kit, sockmap, use_poll, count):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)           # always writable
    asyncore.loop(timeout=1.0, use_poll=use_poll, map=sockmap, count=count)
    assert d.count("handle_write") == count
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_loop_returns_when_map_empties(asyncore, kit, sockmap, use_poll):
    class SelfClosing(kit.Dispatcher):
        def handle_write(self):
            self._rec("handle_write")
            if self.count("handle_write") == 3:
                self.close()

    a, b = socket.socketpair()
    d = SelfClosing(a, map=sockmap)
    t0 = time.monotonic()
    asyncore.loop(timeout=0.01, use_poll=use_poll, map=sockmap)
    assert time.monotonic() - t0 < 5
    assert d.count("handle_write") == 3
    assert sockmap == {}
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_loop_empty_map_returns_at_once(asyncore, use_poll):
    t0 = time.monotonic()
    asyncore.loop(timeout=30.0, use_poll=use_poll, map={})
    asyncore.loop(timeout=30.0, use_poll=use_poll, map={}, count=5)
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_loop_timeout_idle_socket(asyncore, kit, sockmap, use_poll):
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)              # readable, nothing to read, not writable
    t0 = time.monotonic()
    asyncore.loop(timeout=0.2, use_poll=use_poll, map=sockmap, count=1)
    elapsed = time.monotonic() - t0
    assert 0.15 <= elapsed < 2.0
    assert d.names() == []
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_loop_timeout_no_interest(asyncore, kit, sockmap, use_poll):
    class Idle(kit.Dispatcher):
        def readable(self):
            return False

        def writable(self):
            return False

    a, b = socket.socketpair()
    d = Idle(a, map=sockmap)
    b.send(b"ignored")
    t0 = time.monotonic()
    asyncore.loop(timeout=0.2, use_poll=use_poll, map=sockmap, count=1)
    elapsed = time.monotonic() - t0
    assert 0.15 <= elapsed < 2.0
    assert d.names() == []
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_loop_wakes_on_event_before_timeout(asyncore, kit, sockmap, use_poll):
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    t = support.start_thread(lambda: (time.sleep(0.05), b.send(b"wake")))
    t0 = time.monotonic()
    asyncore.loop(timeout=10.0, use_poll=use_poll, map=sockmap, count=1)
    assert time.monotonic() - t0 < 5.0
    t.finish()
    assert d.data == b"wake"
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_loop_timeout_none_blocks_until_event(asyncore, kit, sockmap, use_poll):
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    t = support.start_thread(lambda: (time.sleep(0.2), b.send(b"late")))
    t0 = time.monotonic()
    asyncore.loop(timeout=None, use_poll=use_poll, map=sockmap, count=1)
    elapsed = time.monotonic() - t0
    t.finish()
    assert d.data == b"late"
    assert 0.1 <= elapsed < 5.0
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_loop_timeout_zero(asyncore, kit, sockmap, use_poll):
    a, b = socket.socketpair()
    kit.Reader(a, map=sockmap)
    t0 = time.monotonic()
    asyncore.loop(timeout=0, use_poll=use_poll, map=sockmap, count=20)
    asyncore.loop(timeout=0.0, use_poll=use_poll, map=sockmap, count=20)
    assert time.monotonic() - t0 < 1.0
    b.close()


def _signal_later(thread_id):
    time.sleep(0.05)              # let the loop start waiting
    signal.pthread_kill(thread_id, signal.SIGUSR1)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill") or not hasattr(signal, "SIGUSR1"),
                    reason="needs pthread_kill and SIGUSR1")
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_signal_during_wait(asyncore, kit, sockmap, use_poll):
    """A signal interrupting the wait runs its handler; the wait then goes
    on for the rest of the timeout (PEP 475)."""
    got = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    try:
        a, b = socket.socketpair()
        d = kit.Reader(a, map=sockmap)
        main = threading.get_ident()
        t = support.start_thread(_signal_later, main)
        t0 = time.monotonic()
        asyncore.loop(timeout=0.4, use_poll=use_poll, map=sockmap, count=1)
        elapsed = time.monotonic() - t0
        t.finish()
        assert got == [signal.SIGUSR1]
        assert 0.3 <= elapsed < 3.0
        assert d.names() == []
        b.close()
    finally:
        signal.signal(signal.SIGUSR1, old)


class _Interrupted(Exception):
    pass





@pytest.mark.skipif(not hasattr(signal, "pthread_kill") or not hasattr(signal, "SIGUSR1"),
                    reason="needs pthread_kill and SIGUSR1")
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_signal_handler_exception_propagates(asyncore, kit, sockmap, use_poll):
    def handler(signum, frame):
        raise _Interrupted()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        a, b = socket.socketpair()
        kit.Reader(a, map=sockmap)
        main = threading.get_ident()
        t = support.start_thread(_signal_later, main)
        t0 = time.monotonic()
        with pytest.raises(_Interrupted):
            asyncore.loop(timeout=5.0, use_poll=use_poll, map=sockmap, count=1)
        assert time.monotonic() - t0 < 3.0
        t.finish()
        # the loop is usable afterwards
        b.send(b"after")
        run_until(asyncore, sockmap, lambda: sockmap[a.fileno()].data == b"after",
                  use_poll=use_poll)
        b.close()
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_pause_and_resume_with_del_channel(asyncore, kit, sockmap, use_poll):
    """Taking a dispatcher out of its map and putting it back (set_socket)."""
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    d.del_channel()
    assert sockmap == {} and d._fileno is None
    b.send(b"while paused")
    ka, kb = socket.socketpair()
    kit.Reader(ka, map=sockmap)
    run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    assert d.data == b""
    d.set_socket(a)
    assert sockmap[a.fileno()] is d
    run_until(asyncore, sockmap, lambda: d.data == b"while paused", use_poll=use_poll)
    b.close()
    kb.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_default_socket_map(asyncore, kit, global_map, sockmap, use_poll):
    a, b = socket.socketpair()
    g = kit.Reader(a)                            # default map
    assert g._map is global_map
    assert asyncore.socket_map == {a.fileno(): g}
    c, d_ = socket.socketpair()
    u = kit.Reader(c, map=sockmap)
    assert c.fileno() not in global_map
    b.send(b"global")
    d_.send(b"user")
    asyncore.loop(timeout=0.01, use_poll=use_poll, count=3)          # socket_map only
    assert g.data == b"global"
    assert u.data == b""
    run_until(asyncore, sockmap, lambda: u.data == b"user", use_poll=use_poll)
    b.close()
    d_.close()


def test_default_socket_map_read_at_call_time(asyncore, kit, monkeypatch):
    first = {}
    monkeypatch.setattr(asyncore, "socket_map", first)
    a, b = socket.socketpair()
    d1 = kit.Reader(a)
    second = {}
    monkeypatch.setattr(asyncore, "socket_map", second)
    c, e = socket.socketpair()
    d2 = kit.Reader(c)
    assert list(first.values()) == [d1]
    assert list(second.values()) == [d2]
    b.send(b"1")
    e.send(b"2")
    asyncore.loop(timeout=0.01, count=3)          # the current socket_map: second
    assert d2.data == b"2" and d1.data == b""
    asyncore.close_all(map=first, ignore_all=True)
    asyncore.close_all(map=second, ignore_all=True)
    b.close()
    e.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_poll_functions(asyncore, kit, sockmap, use_poll):
    """poll()/poll2() run one iteration; default timeout 0.0."""
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    fn = asyncore.poll2 if use_poll else asyncore.poll
    t0 = time.monotonic()
    fn(map=sockmap)
    assert time.monotonic() - t0 < 1.0
    assert d.names() == []
    b.send(b"x")
    deadline = time.monotonic() + 5
    while d.data != b"x" and time.monotonic() < deadline:
        fn(0.01, sockmap)
    assert d.data == b"x"
    fn(0.0, {})                                   # empty map: nothing
    b.close()


# ---------------------------------------------------------------------------
# exceptions raised by handlers
# ---------------------------------------------------------------------------

def _raising_class(kit, where, exc):
    class Raiser(kit.Reader):
        def handle_read(self):
            if where == "read":
                self._rec("handle_read")
                raise exc
            kit.Reader.handle_read(self)          # records and reads

        def handle_write(self):
            self._rec("handle_write")
            if where == "write":
                raise exc

        def writable(self):
            return where == "write"

    return Raiser


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("where", ["read", "write"])
@pytest.mark.parametrize("exc", ["ExitNow", KeyboardInterrupt, SystemExit])
def test_reraised_exceptions_propagate(asyncore, kit, sockmap, use_poll, where, exc):
    if exc == "ExitNow":
        exc = asyncore.ExitNow
    a, b = socket.socketpair()
    d = _raising_class(kit, where, exc)(a, map=sockmap)
    b.send(b"x")
    with pytest.raises(exc):
        asyncore.loop(timeout=1.0, use_poll=use_poll, map=sockmap, count=1)
    assert "handle_error" not in d.names()
    assert sockmap == {a.fileno(): d}             # not closed
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("exc", ["ExitNow", KeyboardInterrupt, SystemExit])
def test_reraised_exceptions_propagate_from_expt(asyncore, kit, sockmap, use_poll, exc):
    if exc == "ExitNow":
        exc = asyncore.ExitNow

    class Raiser(kit.Reader):
        def handle_expt(self):
            raise exc

    a, b = support.tcp_pair()
    Raiser(b, map=sockmap)
    a.send(b"x", socket.MSG_OOB)
    with pytest.raises(exc):
        support.run_until(asyncore, sockmap, lambda: False, use_poll=use_poll)
    a.close()


def _error_scenario(asyncore, kit, sockmap, where):
    """Sets up a dispatcher whose ``where`` handler raises ValueError.

    Returns (dispatcher_that_must_get_handle_error, cleanup).
    """
    if where in ("read", "write"):
        a, b = socket.socketpair()
        d = _raising_class(kit, where, ValueError("boom"))(a, map=sockmap)
        b.send(b"x")
        return d, b.close

    if where == "expt":
        class Raiser(kit.Reader):
            def handle_expt(self):
                self._rec("handle_expt")
                raise ValueError("boom")

        a, b = support.tcp_pair()
        d = Raiser(b, map=sockmap)
        a.send(b"x", socket.MSG_OOB)
        return d, a.close

    if where == "connect":
        class Raiser(kit.Reader):
            def handle_connect(self):
                self._rec("handle_connect")
                raise ValueError("boom")

        server = kit.EchoServer(sockmap, handler_class=kit.Reader)
        d = Raiser(map=sockmap)
        d.create_socket()
        d.connect(server.address)
        return d, server.close

    if where == "accept":
        class Server(kit.EchoServer):
            def handle_accepted(self, sock, addr):
                self._rec("handle_accepted")
                sock.close()
                raise ValueError("boom")

        server = Server(sockmap)
        c = socket.create_connection(server.address)
        return server, c.close

    if where == "close":
        class Raiser(kit.Reader):
            def handle_close(self):
                if not self.count("handle_close"):
                    self._rec("handle_close")
                    raise ValueError("boom")
                kit.Reader.handle_close(self)     # records and closes

        a, b = socket.socketpair()
        d = Raiser(a, map=sockmap)
        b.close()
        return d, lambda: None
    raise AssertionError(where)


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("where", ["read", "write", "expt", "connect", "accept", "close"])
def test_other_exceptions_go_to_handle_error(asyncore, kit, sockmap, use_poll, where,
                                             capsys):
    d, cleanup = _error_scenario(asyncore, kit, sockmap, where)
    run_until(asyncore, sockmap, lambda: d.count("handle_error"), use_poll=use_poll)
    assert ("handle_error", "ValueError") in d.events
    assert d.count("handle_error") == 1
    assert "handle_%s" % ("accepted" if where == "accept" else where) in d.names()
    # the default handle_error logs and closes
    run_until(asyncore, sockmap, lambda: d not in sockmap.values(), use_poll=use_poll)
    assert "close" in d.names()
    out = capsys.readouterr().out
    assert "error: uncaptured python exception, closing channel" in out
    assert "ValueError" in out
    cleanup()


# ---------------------------------------------------------------------------
# read / write / _exception / readwrite called directly
# ---------------------------------------------------------------------------

class Channel:
    """A duck-typed channel, like the stdlib tests use: records calls."""

    def __init__(self, raise_in=None, exc=None):
        self.calls = []
        self.raise_in = raise_in
        self.exc = exc

    def _call(self, name):
        self.calls.append(name)
        if name == self.raise_in:
            raise self.exc

    def handle_read_event(self):
        self._call("read")

    def handle_write_event(self):
        self._call("write")

    def handle_expt_event(self):
        self._call("expt")

    def handle_close(self):
        self.calls.append("close")

    def handle_error(self):
        self.calls.append("error")


FUNCS = [("read", "read"), ("write", "write"), ("_exception", "expt")]


@pytest.mark.parametrize("func,event", FUNCS)
def test_event_functions_call_handler(asyncore, func, event):
    ch = Channel()
    getattr(asyncore, func)(ch)
    assert ch.calls == [event]


@pytest.mark.parametrize("func,event", FUNCS)
@pytest.mark.parametrize("exc", [ValueError("v"), OSError(errno.EPIPE, "pipe"),
                                 OSError(errno.EPERM, "perm"), BlockingIOError()],
                         ids=["ValueError", "EPIPE", "EPERM", "BlockingIOError"])
def test_event_functions_errors_to_handle_error(asyncore, func, event, exc):
    ch = Channel(raise_in=event, exc=exc)
    getattr(asyncore, func)(ch)
    assert ch.calls == [event, "error"]


@pytest.mark.parametrize("func,event", FUNCS + [("readwrite", "read")])
@pytest.mark.parametrize("exc", ["ExitNow", KeyboardInterrupt, SystemExit])
def test_event_functions_reraise(asyncore, func, event, exc):
    if exc == "ExitNow":
        exc = asyncore.ExitNow
    ch = Channel(raise_in=event, exc=exc())
    with pytest.raises(exc):
        if func == "readwrite":
            asyncore.readwrite(ch, select.POLLIN | select.POLLHUP)
        else:
            getattr(asyncore, func)(ch)
    assert ch.calls == [event]


def _poll_flags():
    names = ["POLLIN", "POLLOUT", "POLLPRI", "POLLHUP", "POLLERR", "POLLNVAL"]
    return [(n, getattr(select, n)) for n in names if hasattr(select, n)]


def _expected_readwrite(flags):
    out = []
    if flags & select.POLLIN:
        out.append("read")
    if flags & select.POLLOUT:
        out.append("write")
    if flags & select.POLLPRI:
        out.append("expt")
    if flags & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
        out.append("close")
    return out


@pytest.mark.skipif(not support.HAS_POLL, reason="select.poll constants needed")
def test_readwrite_all_flag_combinations(asyncore, ref_asyncore):
    flags = _poll_flags()
    for mask in range(1 << len(flags)):
        value = 0
        for i, (_, f) in enumerate(flags):
            if mask & (1 << i):
                value |= f
        ch = Channel()
        asyncore.readwrite(ch, value)
        ref = Channel()
        ref_asyncore.readwrite(ref, value)
        assert ch.calls == _expected_readwrite(value) == ref.calls, value


@pytest.mark.skipif(not support.HAS_POLL, reason="select.poll constants needed")
@pytest.mark.parametrize("raise_in", ["read", "write", "expt"])
@pytest.mark.parametrize("exc,outcome", [
    (OSError(errno.ECONNRESET, "reset"), "close"),
    (OSError(errno.EPIPE, "pipe"), "close"),
    (OSError(errno.EBADF, "badf"), "close"),
    (OSError(errno.ENOTCONN, "notconn"), "close"),
    (OSError(errno.ESHUTDOWN, "shutdown"), "close"),
    (OSError(errno.ECONNABORTED, "aborted"), "close"),
    (OSError(errno.EPERM, "perm"), "error"),
    (BlockingIOError(errno.EAGAIN, "again"), "error"),
    (ValueError("v"), "error"),
], ids=["ECONNRESET", "EPIPE", "EBADF", "ENOTCONN", "ESHUTDOWN", "ECONNABORTED", "EPERM",
        "EAGAIN", "ValueError"])
def test_readwrite_exceptions(asyncore, raise_in, exc, outcome):
    all_flags = select.POLLIN | select.POLLOUT | select.POLLPRI | select.POLLHUP
    ch = Channel(raise_in=raise_in, exc=exc)
    asyncore.readwrite(ch, all_flags)
    order = ["read", "write", "expt"]
    assert ch.calls == order[:order.index(raise_in) + 1] + [outcome]


# ---------------------------------------------------------------------------
# the functions on real dispatchers, map reuse, lifetimes, threads
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not support.HAS_POLL, reason="select.poll constants needed")
def test_readwrite_on_real_dispatcher_hup_with_data(asyncore, kit, sockmap):
    """readwrite() itself keeps the stdlib semantics: IN|HUP reads, then closes."""
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    b.send(b"data")
    b.close()
    asyncore.readwrite(d, select.POLLIN | select.POLLHUP)
    assert d.data == b"data"
    assert d.names() == ["handle_read", "handle_close", "close"]
    assert sockmap == {}


def test_read_write_functions_on_real_dispatcher(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    b.send(b"abc")
    asyncore.read(d)
    assert d.data == b"abc"
    d.out_buffer = b"xyz"
    asyncore.write(d)
    assert support.recv_exactly(b, 3) == b"xyz"
    asyncore.read(d)                    # nothing to read: BlockingIOError -> handle_error
    assert d.events[-4:] == [("handle_read",), ("handle_error", "BlockingIOError"),
                             ("handle_close",), ("close",)]
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_map_reused_after_close_all(asyncore, kit, sockmap, use_poll):
    for round_ in range(3):
        a, b = socket.socketpair()
        d = kit.Reader(a, map=sockmap)
        b.send(b"round %d" % round_)
        run_until(asyncore, sockmap, lambda d=d, want=b"round %d" % round_: d.data == want,
                  use_poll=use_poll)
        asyncore.close_all(map=sockmap)
        assert sockmap == {}
        b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_default_map_reused_after_close_all(asyncore, kit, global_map, use_poll):
    for round_ in range(2):
        a, b = socket.socketpair()
        d = kit.Reader(a)
        b.send(b"r%d" % round_)
        deadline = time.monotonic() + 5
        while d.data != b"r%d" % round_ and time.monotonic() < deadline:
            asyncore.loop(timeout=0.01, use_poll=use_poll, count=1)
        assert d.data == b"r%d" % round_
        asyncore.close_all()
        b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_closed_dispatchers_are_freed(asyncore, asynchat, kit, sockmap, use_poll):
    import gc
    import weakref

    refs = []
    for cls in (kit.Reader, kit.EchoChat, asyncore.dispatcher):
        a, b = socket.socketpair()
        d = cls(a, map=sockmap)
        b.sendall(b"x\n")
        if cls is asyncore.dispatcher:
            d.handle_read = lambda d=d: d.recv(10)
            d.writable = lambda: False
        run_until(asyncore, sockmap, lambda d=d: support.consumed(d), use_poll=use_poll)
        d.close()
        run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
        refs.append(weakref.ref(d))
        del d
        b.close()
    ka, kb = socket.socketpair()
    kit.Reader(ka, map=sockmap)               # the map lives on
    run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    kb.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_dispatcher_added_from_another_thread(asyncore, kit, sockmap, use_poll):
    ka, kb = socket.socketpair()
    kit.Reader(ka, map=sockmap)
    made = []

    def add():
        a, b = socket.socketpair()
        d = kit.Reader(a, map={})             # fully built before the loop can see it
        d._map = sockmap
        b.send(b"from thread")
        made.append((d, b))
        sockmap[a.fileno()] = d

    t = support.start_thread(add)
    run_until(asyncore, sockmap, lambda: len(sockmap) == 2 and made[0][0].data == b"from thread",
              use_poll=use_poll)
    t.finish()
    made[0][1].close()
    kb.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_loop_resumes_after_keyboard_interrupt(asyncore, kit, sockmap, use_poll):
    class Once(kit.Reader):
        raised = False

        def handle_read(self):
            if not Once.raised:
                Once.raised = True
                raise KeyboardInterrupt
            kit.Reader.handle_read(self)

    pairs = [socket.socketpair() for _ in range(3)]
    ds = [Once(a, map=sockmap) for a, _ in pairs]
    for i, (_, b) in enumerate(pairs):
        b.send(b"%d" % i)
    with pytest.raises(KeyboardInterrupt):
        run_until(asyncore, sockmap, lambda: False, use_poll=use_poll)
    run_until(asyncore, sockmap, lambda: all(d.data for d in ds), use_poll=use_poll)
    assert [bytes(d.data) for d in ds] == [b"0", b"1", b"2"]
    assert all("handle_error" not in d.names() for d in ds)
    for _, b in pairs:
        b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_reconnect_from_handle_close(asyncore, kit, sockmap, use_poll):
    """A client that reconnects inside handle_close (close, create_socket,
    connect: often on the same fd number) is served each time, and each
    socket's close is handled."""
    class Slammer(kit.Dispatcher):
        def handle_accepted(self, sock, addr):
            self._rec("handle_accepted")
            sock.close()

        def writable(self):
            return False

    server = Slammer(map=sockmap)
    server.create_socket()
    server.bind((support.LOCALHOST, 0))
    server.listen(5)
    address = server.socket.getsockname()

    class Client(kit.Reader):
        def handle_close(self):
            kit.Reader.handle_close(self)        # records and closes
            if self.count("handle_close") < 3:
                self.create_socket()
                self.connect(address)

    c = Client(map=sockmap)
    c.create_socket()
    c.connect(address)
    run_until(asyncore, sockmap, lambda: c.count("handle_close") == 3, use_poll=use_poll)
    run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    assert c.count("handle_connect") == 3
    assert c.count("handle_close") == 3
    assert server.count("handle_accepted") == 3
    assert list(sockmap.values()) == [server]


class _LoggingDict(dict):
    """A dict subclass that sees every change (like some applications' maps)."""

    def __init__(self):
        dict.__init__(self)
        self.changes = []

    def __setitem__(self, key, value):
        self.changes.append(("set", key))
        dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        self.changes.append(("del", key))
        dict.__delitem__(self, key)


def _mutable_mapping_class():
    import collections.abc

    class MappingMap(collections.abc.MutableMapping):
        """Not a dict at all: only the mapping protocol."""

        def __init__(self):
            self._d = {}

        def __getitem__(self, k):
            return self._d[k]

        def __setitem__(self, k, v):
            self._d[k] = v

        def __delitem__(self, k):
            del self._d[k]

        def __iter__(self):
            return iter(self._d)

        def __len__(self):
            return len(self._d)

    return MappingMap


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("kind", ["dict-subclass", "OrderedDict", "MutableMapping"])
def test_map_types(asyncore, kit, use_poll, kind):
    import collections
    if kind == "dict-subclass":
        m = _LoggingDict()
    elif kind == "OrderedDict":
        m = collections.OrderedDict()
    else:
        m = _mutable_mapping_class()()
    try:
        server = kit.EchoServer(m)
        client = kit.ClientChat(server.address, m, payload=b"one\ntwo\n")
        run_until(asyncore, m, lambda: len(client.lines) == 2, use_poll=use_poll)
        assert client.lines == [b"one", b"two"]
        fd = client._fileno
        client.close_when_done()
        run_until(asyncore, m, lambda: len(m) == 1, use_poll=use_poll)
        if kind == "dict-subclass":
            assert ("set", fd) in m.changes and ("del", fd) in m.changes
    finally:
        asyncore.close_all(map=m, ignore_all=True)
    assert len(m) == 0
