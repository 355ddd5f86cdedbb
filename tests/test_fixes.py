"""fastcore's deliberate fixes over the standard library (docs/design.md),
its extensions (backends, scale) and its performance guarantees.

Tests the reference fails are marked ``fastcore_only``; the others run on
the reference too (they check behaviour both must have, e.g. map edits the
stdlib loop already follows), which also validates their expectations.
"""

import os
import select
import socket
import time

import pytest
import support
from support import USE_POLL, PeerReader, run_iterations, run_until

fastcore_only = pytest.mark.fastcore_only


# ---------------------------------------------------------------------------
# handle_close at most once, nothing after close
# ---------------------------------------------------------------------------

def _after_first(events, name):
    names = [e[0] for e in events]
    return names[names.index(name) + 1:] if name in names else None


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_rst_handle_close_once(asyncore, kit, sockmap, use_poll):
    class Victim(kit.Dispatcher):
        def handle_read(self):
            self._rec("handle_read")
            self.recv(4096)

        def handle_write(self):              # always writable; records only
            self._rec("handle_write")

    a, b = support.tcp_pair()
    v = Victim(b, map=sockmap)
    run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
    support.reset(a)
    select.select([b], [], [], 5)
    run_until(asyncore, sockmap, lambda: not sockmap, use_poll=use_poll)
    assert v.count("handle_close") == 1, v.events
    after = _after_first(v.events, "handle_close")
    assert [n for n in after if n.startswith("handle_")] == [], v.events


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_peer_close_without_data_handle_close_once(asyncore, kit, sockmap, use_poll):
    """socketpair peer close: POLLIN|POLLHUP; the reference closes twice with
    use_poll (b'' read, then HUP)."""
    a, b = socket.socketpair()
    r = kit.Reader(a, map=sockmap)
    b.close()
    run_until(asyncore, sockmap, lambda: not sockmap, use_poll=use_poll)
    run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
    assert r.count("handle_close") == 1, r.events
    assert _after_first(r.events, "handle_close") == ["close"]


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_close_twice_is_harmless(asyncore, kit, sockmap, use_poll):
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    ka, kb = socket.socketpair()
    keep = kit.Reader(ka, map=sockmap)
    d.close()
    d.close()
    assert d.socket.fileno() == -1
    assert list(sockmap.values()) == [keep]
    d.handle_close()
    assert list(sockmap.values()) == [keep]
    run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
    assert keep.names() == []
    b.close()
    kb.close()


# ---------------------------------------------------------------------------
# data before close (HUP with data)
# ---------------------------------------------------------------------------

def _send_and_close(sock, payload):
    sock.sendall(payload)
    sock.close()


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_peer_writes_200k_and_closes(asyncore, kit, sockmap, use_poll, transport):
    class Recv(kit.Reader):
        def handle_close(self):
            self.at_close = len(self.data)
            kit.Reader.handle_close(self)

    payload = os.urandom(200000)
    a, b = support.make_pair(transport)
    try:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
    except OSError:
        pass
    r = Recv(a, map=sockmap)
    # best case for the bug: everything queued and the peer gone before the
    # loop looks; a thread finishes the send if the buffer is smaller
    b.setblocking(False)
    try:
        sent = b.send(payload)
    except BlockingIOError:
        sent = 0
    b.setblocking(True)
    t = support.start_thread(_send_and_close, b, payload[sent:])
    if sent == len(payload):
        t.finish()
        select.select([a], [], [], 5)
    run_until(asyncore, sockmap, lambda: not sockmap, use_poll=use_poll, timeout=10)
    t.finish()
    assert len(r.data) == len(payload)
    assert r.data == payload
    assert r.at_close == len(payload)
    assert r.count("handle_close") == 1


# ---------------------------------------------------------------------------
# one dispatcher closing another in the same iteration; fd reuse
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("how", ["close", "handle_close"])
def test_close_other_in_same_iteration(asyncore, kit, sockmap, use_poll, how):
    """A and B both have input; whichever runs first closes the other, which
    must then get nothing at all."""
    state = {"closer": None}

    class Mutual(kit.Reader):
        def handle_read(self):
            kit.Reader.handle_read(self)          # records and reads
            if state["closer"] is None:
                state["closer"] = self
                self.other._rec("closed-by-other")
                getattr(self.other, how)()

    pa, pb = socket.socketpair(), socket.socketpair()
    A = Mutual(pa[0], map=sockmap)
    B = Mutual(pb[0], map=sockmap)
    A.other, B.other = B, A
    pa[1].send(b"a")
    pb[1].send(b"b")
    run_until(asyncore, sockmap, lambda: state["closer"] is not None, use_poll=use_poll)
    run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
    victim = B if state["closer"] is A else A
    after = _after_first(victim.events, "closed-by-other")
    assert [n for n in after if n not in ("close", "handle_close")] == [], victim.events
    assert victim.count("handle_close") <= 1
    assert victim.data == b""                 # it had not run yet when closed
    pa[1].close()
    pb[1].close()


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_fd_reuse_in_same_iteration(asyncore, kit, sockmap, use_poll):
    """A closes B and a new C takes B's fd number in that same iteration:
    B's pending event must not reach C."""
    state = {"done": False}

    class Mutual(kit.Reader):
        def handle_read(self):
            kit.Reader.handle_read(self)          # records and reads
            if not state["done"]:
                state["done"] = True
                other = self.other
                fd = other._fileno
                other.close()
                csock, y = support.pair_at_fd(fd)
                c = kit.Reader(csock, map=sockmap)
                assert c._fileno == fd
                state["C"], state["C_peer"] = c, y

    pa, pb = socket.socketpair(), socket.socketpair()
    A = Mutual(pa[0], map=sockmap)
    B = Mutual(pb[0], map=sockmap)
    A.other, B.other = B, A
    pa[1].send(b"a")
    pb[1].send(b"b")
    run_until(asyncore, sockmap, lambda: state["done"], use_poll=use_poll)
    C = state["C"]
    assert getattr(C, "events", []) == []            # nothing in the replacing iteration
    run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
    assert getattr(C, "events", []) == []            # nothing to read: no events at all
    assert C in sockmap.values()
    state["C_peer"].send(b"for C")                  # and C is served normally
    run_until(asyncore, sockmap, lambda: C.data == b"for C", use_poll=use_poll)
    for s in (pa[1], pb[1], state["C_peer"]):
        s.close()


# ---------------------------------------------------------------------------
# direct map edits
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
def test_map_edits_from_outside(asyncore, kit, sockmap, use_poll):
    keep_a, keep_b = socket.socketpair()
    keep = kit.Reader(keep_a, map=sockmap)          # keeps the map non-empty
    run_iterations(asyncore, sockmap, 1, use_poll=use_poll)

    # added directly: gets events
    xa, xb = socket.socketpair()
    x = kit.Reader(xa, map={})
    sockmap[xa.fileno()] = x
    xb.send(b"direct")
    run_until(asyncore, sockmap, lambda: x.data == b"direct", use_poll=use_poll)

    # deleted directly: gets none, even with input pending
    del sockmap[xa.fileno()]
    xb.send(b"ignored")
    run_iterations(asyncore, sockmap, 5, use_poll=use_poll)
    assert x.data == b"direct"

    # put back: served again, including what was pending
    sockmap[xa.fileno()] = x
    run_until(asyncore, sockmap, lambda: x.data == b"directignored", use_poll=use_poll)

    # replaced by another object for the same fd
    y = kit.Reader(map={})
    y.socket, y._fileno, y.connected = xa, xa.fileno(), True
    sockmap[xa.fileno()] = y
    xb.send(b"for y")
    run_until(asyncore, sockmap, lambda: y.data == b"for y", use_poll=use_poll)
    assert x.data == b"directignored"

    # cleared: loop returns at once; re-added: served
    sockmap.clear()
    t0 = time.monotonic()
    asyncore.loop(timeout=5, map=sockmap, use_poll=use_poll)
    assert time.monotonic() - t0 < 1
    sockmap[keep_a.fileno()] = keep
    keep_b.send(b"back")
    run_until(asyncore, sockmap, lambda: keep.data == b"back", use_poll=use_poll)
    xa.close()
    for s in (keep_b, xb):
        s.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_map_edits_from_handlers(asyncore, kit, sockmap, use_poll):
    state = {}

    class Editor(kit.Reader):
        def handle_read(self):
            kit.Reader.handle_read(self)          # records and reads
            action = state.pop("action", None)
            if action == "delete":
                del sockmap[state["victim"]._fileno]
            elif action == "add":
                d = state["newcomer"]
                sockmap[d._fileno] = d

    ea, eb = socket.socketpair()
    editor = Editor(ea, map=sockmap)
    va, vb = socket.socketpair()
    victim = kit.Reader(va, map=sockmap)
    state["victim"] = victim
    na, nb = socket.socketpair()
    newcomer = kit.Reader(na, map={})
    state["newcomer"] = newcomer
    nb.send(b"hello newcomer")

    state["action"] = "delete"
    vb.send(b"v")
    eb.send(b"1")
    run_until(asyncore, sockmap, lambda: editor.data == b"1", use_poll=use_poll)
    got = bytes(victim.data)                # b"v" if it ran first in that iteration
    vb.send(b"w")
    run_iterations(asyncore, sockmap, 4, use_poll=use_poll)
    assert victim.data == got
    assert va.fileno() not in sockmap

    state["action"] = "add"
    eb.send(b"2")
    run_until(asyncore, sockmap, lambda: newcomer.data == b"hello newcomer", use_poll=use_poll)
    assert sockmap[na.fileno()] is newcomer
    va.close()
    for s in (eb, vb, nb):
        s.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_map_clear_from_handler(asyncore, kit, sockmap, use_poll):
    class Clearer(kit.Reader):
        def handle_read(self):
            kit.Reader.handle_read(self)          # records and reads
            sockmap.clear()

    pairs = [socket.socketpair() for _ in range(4)]
    ds = [Clearer(a, map=sockmap) for a, _ in pairs]
    for _, b in pairs:
        b.send(b"x")
    t0 = time.monotonic()
    asyncore.loop(timeout=5, map=sockmap, use_poll=use_poll)    # returns: map emptied
    assert time.monotonic() - t0 < 2
    assert sum(d.count("handle_read") for d in ds) == 1
    for a, b in pairs:
        a.close()
        b.close()


# ---------------------------------------------------------------------------
# sockets closed behind the loop's back, del_channel ownership
# ---------------------------------------------------------------------------

@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_socket_closed_behind_the_loop_before_polling(asyncore, kit, sockmap, use_poll):
    keep_a, keep_b = socket.socketpair()
    keep = kit.Reader(keep_a, map=sockmap)
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    fd = a.fileno()
    a.close()                                 # d stays in the map under fd
    run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    assert d.count("handle_close") == 1
    assert fd not in sockmap
    keep_b.send(b"alive")
    run_until(asyncore, sockmap, lambda: keep.data == b"alive", use_poll=use_poll)
    b.close()
    keep_b.close()


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_socket_closed_behind_the_loop_after_polling(asyncore, kit, sockmap, use_poll):
    keep_a, keep_b = socket.socketpair()
    keep = kit.Reader(keep_a, map=sockmap)
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
    a.close()
    run_iterations(asyncore, sockmap, 3, use_poll=use_poll)   # must not raise
    d.out_buffer = b"more"                    # interest change on the dead fd
    run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    assert d.count("handle_close") <= 1
    keep_b.send(b"alive")
    run_until(asyncore, sockmap, lambda: keep.data == b"alive", use_poll=use_poll)
    b.close()
    keep_b.close()


@fastcore_only
def test_del_channel_leaves_other_dispatchers_entry(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    old = kit.Reader(a, map=sockmap)
    fd = a.fileno()
    a.close()                                 # behind old's back
    nsock, y = support.pair_at_fd(fd)
    new = kit.Reader(nsock, map=sockmap)      # replaces old's entry
    assert sockmap[fd] is new
    old.close()
    assert sockmap.get(fd) is new
    y.send(b"still served")
    run_until(asyncore, sockmap, lambda: new.data == b"still served")
    b.close()
    y.close()


# ---------------------------------------------------------------------------
# fork
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_fork_child_runs_loop_on_polled_map(asyncore, kit, sockmap, use_poll):
    import warnings

    a, b = socket.socketpair()
    kit.EchoChat(a, map=sockmap)
    reader = PeerReader(b)
    b.sendall(b"parent\n")
    support.pump(asyncore, sockmap, reader, 7, use_poll=use_poll)

    rfd, wfd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:                                               # child
        status = b"child: no result"
        try:
            x, y = socket.socketpair()
            kit.EchoChat(x, map=sockmap)
            y.sendall(b"ping\n")
            y.setblocking(False)
            got = b""
            deadline = time.monotonic() + 10
            while got != b"ping\n" and time.monotonic() < deadline:
                asyncore.loop(timeout=0.01, map=sockmap, count=1, use_poll=use_poll)
                try:
                    got += y.recv(100)
                except BlockingIOError:
                    pass
            status = b"ok" if got == b"ping\n" else b"child got %r" % got
        except BaseException as e:
            status = ("child error: %r" % (e,)).encode()
        finally:
            try:
                os.write(wfd, status)
            finally:
                os._exit(0)
    os.close(wfd)
    try:
        ready, _, _ = select.select([rfd], [], [], 20)
        result = os.read(rfd, 1000) if ready else b"timeout"
    finally:
        os.close(rfd)
        deadline = time.monotonic() + 10
        while True:
            wpid, _ = os.waitpid(pid, os.WNOHANG)
            if wpid:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    assert result == b"ok"
    # the parent's loop is unharmed by what the child did
    b.sendall(b"again\n")
    assert support.pump(asyncore, sockmap, reader, 13, use_poll=use_poll) == b"parent\nagain\n"
    b.close()


# ---------------------------------------------------------------------------
# errors in readable()/writable() and in handle_error
# ---------------------------------------------------------------------------

@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("method", ["readable", "writable"])
def test_predicate_raising_goes_to_handle_error(asyncore, kit, sockmap, use_poll, method,
                                                capsys):
    class Bad(kit.Reader):
        pass

    def boom():
        raise ValueError("predicate")

    a, b = socket.socketpair()
    bad = Bad(a, map=sockmap)
    setattr(bad, method, boom)
    ea, eb = socket.socketpair()
    echo = kit.EchoChat(ea, map=sockmap)
    reader = PeerReader(eb)
    eb.sendall(b"served\n")
    support.pump(asyncore, sockmap, reader, 7, use_poll=use_poll)
    run_until(asyncore, sockmap, lambda: bad not in sockmap.values(), use_poll=use_poll)
    assert ("handle_error", "ValueError") in bad.events
    assert echo.lines == [b"served"]
    assert "ValueError" in capsys.readouterr().out
    b.close()
    eb.close()


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_handle_error_raising_does_not_crash_loop(asyncore, kit, sockmap, use_poll, capsys):
    class Hopeless(kit.Reader):
        def handle_read(self):
            raise ValueError("in handler")

        def handle_error(self):
            self._rec("handle_error")
            raise RuntimeError("in handle_error")

    a, b = socket.socketpair()
    h = Hopeless(a, map=sockmap)
    ea, eb = socket.socketpair()
    echo = kit.EchoChat(ea, map=sockmap)
    b.send(b"trigger")
    eb.sendall(b"still here\n")
    reader = PeerReader(eb)
    support.pump(asyncore, sockmap, reader, 11, use_poll=use_poll)
    run_until(asyncore, sockmap, lambda: h not in sockmap.values(), use_poll=use_poll)
    assert h.count("handle_error") >= 1
    assert echo.lines == [b"still here"]
    eb.sendall(b"more\n")
    support.pump(asyncore, sockmap, reader, 16, use_poll=use_poll)
    capsys.readouterr()
    b.close()
    eb.close()


# ---------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------

def _backends():
    try:
        fastcore, _, _ = support.load_fastcore()
        return list(fastcore.available_backends())
    except Exception:
        return ["auto"]


def _echo_round_trip(asyncore, kit, m, use_poll, **loop_kw):
    server = kit.EchoServer(m)
    client = kit.ClientChat(server.address, m, payload=b"one\ntwo\n")
    run_until(asyncore, m, lambda: len(client.lines) == 2, use_poll=use_poll, **loop_kw)
    assert client.lines == [b"one", b"two"]
    client.close_when_done()
    run_until(asyncore, m, lambda: len(m) == 1, use_poll=use_poll, **loop_kw)
    server.close()


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("backend", ["auto"] + _backends())
def test_backend_echo(asyncore, kit, sockmap, use_poll, backend):
    _echo_round_trip(asyncore, kit, sockmap, use_poll, backend=backend)
    # a timeout with nothing to do, and count, through that backend too
    a, b = socket.socketpair()
    kit.Reader(a, map=sockmap)
    t0 = time.monotonic()
    asyncore.loop(timeout=0.1, map=sockmap, count=2, use_poll=use_poll, backend=backend)
    assert 0.15 <= time.monotonic() - t0 < 2
    b.close()


@fastcore_only
@pytest.mark.parametrize("name", ["bogus", "", "EPOLL", "select "])
def test_backend_unknown_name(asyncore, kit, sockmap, name):
    a, b = socket.socketpair()
    kit.Reader(a, map=sockmap)
    with pytest.raises(ValueError):
        asyncore.loop(timeout=0.01, map=sockmap, count=1, backend=name)
    b.close()


@fastcore_only
def test_backend_unavailable_name(asyncore, kit, sockmap, fastcore_pkg):
    missing = [n for n in ("epoll", "kqueue", "poll", "select")
               if n not in fastcore_pkg.available_backends()]
    if not missing:
        pytest.skip("every backend is available here")
    a, b = socket.socketpair()
    kit.Reader(a, map=sockmap)
    for name in missing:
        with pytest.raises(ValueError):
            asyncore.loop(timeout=0.01, map=sockmap, count=1, backend=name)
    b.close()


def _raise_nofile(minimum):
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < minimum:
        pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, minimum))
    target = hard if hard != resource.RLIM_INFINITY else max(soft, minimum)
    if soft == resource.RLIM_INFINITY or soft >= minimum:
        return lambda: None
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_select_backend_rejects_large_fd(asyncore, kit, sockmap, use_poll):
    restore = _raise_nofile(2048)
    try:
        a, b = socket.socketpair()
        high = 1500
        while support.fd_is_open(high):
            high += 1
        os.dup2(a.fileno(), high)
        a.close()
        d = kit.Reader(socket.socket(fileno=high), map=sockmap)
        assert d._fileno >= 1024
        with pytest.raises(ValueError) as ei:
            asyncore.loop(timeout=0.01, map=sockmap, count=1, use_poll=use_poll,
                          backend="select")
        msg = str(ei.value).lower()
        assert "select" in msg or "fd_setsize" in msg or str(high) in msg, msg
        # the default backend serves it
        b.send(b"high fd")
        run_until(asyncore, sockmap, lambda: d.data == b"high fd", use_poll=use_poll)
        d.close()
        b.close()
    finally:
        restore()


@fastcore_only
@pytest.mark.slow
def test_5000_connections_default_backend(asyncore, asynchat, kit, sockmap):
    """5,000 simultaneous connections (fds far above FD_SETSIZE) through
    loop(use_poll=False), the default: one echo round trip each."""
    n = 5000
    restore = _raise_nofile(2 * n + 300)
    try:
        class Server(kit.EchoServer):
            def handle_accept(self):
                while True:
                    pair = self.accept()
                    if pair is None:
                        return
                    self.handle_accepted(*pair)

        server = Server(sockmap, backlog=4096)
        clients = []
        batch = 500
        for start in range(0, n, batch):
            for i in range(start, min(start + batch, n)):
                clients.append(kit.ClientChat(server.address, sockmap,
                                              payload=b"ping %d\n" % i))
            run_until(asyncore, sockmap, lambda: len(server.handlers) == len(clients),
                      timeout=30, what="accepted")
        run_until(asyncore, sockmap, lambda: all(c.lines for c in clients), timeout=60,
                  what="all echoes")
        assert max(sockmap) > 1024
        assert len(sockmap) == 2 * n + 1
        for i, c in enumerate(clients):
            assert c.lines == [b"ping %d" % i]
        asyncore.close_all(map=sockmap)
    finally:
        asyncore.close_all(map=sockmap, ignore_all=True)
        restore()


# ---------------------------------------------------------------------------
# performance (fastcore only: the reference is quadratic here)
# ---------------------------------------------------------------------------

@fastcore_only
def test_one_mib_of_short_lines_is_fast(asyncore, asynchat, sockmap):
    class Counter(asynchat.async_chat):
        ac_in_buffer_size = 1 << 21

        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map)
            self.set_terminator(b"\n")
            self.count = 0
            self.first = self.last = None

        def collect_incoming_data(self, data):
            self._collect_incoming_data(data)

        def found_terminator(self):
            line = self._get_data()
            if self.first is None:
                self.first = line
            self.last = line
            self.count += 1

    nlines = 120000
    data = b"".join(b"%08d\n" % i for i in range(nlines))
    assert len(data) > 1 << 20
    a, b = socket.socketpair()
    try:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    except OSError:
        pass
    c = Counter(a, map=sockmap)
    t = support.start_thread(b.sendall, data)
    t0 = time.monotonic()
    run_until(asyncore, sockmap, lambda: c.count == nlines, timeout=30)
    elapsed = time.monotonic() - t0
    t.finish()
    assert c.first == b"00000000" and c.last == b"%08d" % (nlines - 1)
    assert elapsed < 5.0, "%.2f s for %d lines" % (elapsed, nlines)
    b.close()


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_64_mib_producer_chunk(asyncore, asynchat, sockmap, use_poll):
    size = 64 << 20
    payload = os.urandom(1 << 20) * 64

    class OneChunk:
        def __init__(self):
            self.data = payload

        def more(self):
            d, self.data = self.data, b""
            return d

    def read_all(sock):
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        sock.settimeout(60)
        while got < size:
            n = sock.recv_into(view[got:], min(1 << 20, size - got))
            if not n:
                break
            got += n
        return bytes(buf[:got])

    a, b = socket.socketpair()
    c = asynchat.async_chat(a, map=sockmap)
    t = support.start_thread(read_all, b)
    t0 = time.monotonic()
    c.push_with_producer(OneChunk())
    run_until(asyncore, sockmap, lambda: not c.producer_fifo or not t.is_alive(),
              use_poll=use_poll, timeout=60)
    received = t.finish(timeout=60)
    elapsed = time.monotonic() - t0
    assert len(received) == size
    assert received == payload
    assert elapsed < 20.0, "%.1f s for 64 MiB" % elapsed
    b.close()


# ---------------------------------------------------------------------------
# moving a dispatcher between maps; many maps
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
def test_move_dispatcher_between_maps(asyncore, kit, use_poll):
    m1, m2 = {}, {}
    try:
        ka, kb = socket.socketpair()
        keep = kit.Reader(ka, map=m1)                # m1 stays non-empty
        a, b = socket.socketpair()
        d = kit.Reader(a, map=m1)
        b.send(b"1")
        run_until(asyncore, m1, lambda: d.data == b"1", use_poll=use_poll)
        del m1[a.fileno()]
        m2[a.fileno()] = d
        d._map = m2
        b.send(b"2")
        run_iterations(asyncore, m1, 3, use_poll=use_poll)
        assert d.data == b"1"                        # m1 no longer serves it
        run_until(asyncore, m2, lambda: d.data == b"12", use_poll=use_poll)
        kb.send(b"k")
        run_until(asyncore, m1, lambda: keep.data == b"k", use_poll=use_poll)
        d.close()
        assert m2 == {} and list(m1.values()) == [keep]
        b.close()
        kb.close()
    finally:
        asyncore.close_all(map=m1, ignore_all=True)
        asyncore.close_all(map=m2, ignore_all=True)


def test_many_maps_round_robin(asyncore, kit):
    """150 long-lived maps served in turn (more maps than any per-map cache)."""
    maps = []
    try:
        for _ in range(150):
            m = {}
            a, b = socket.socketpair()
            maps.append((m, kit.Reader(a, map=m), b))
        for rnd in range(3):
            for i, (m, r, b) in enumerate(maps):
                b.send(b"x")
                run_until(asyncore, m, lambda r=r, n=rnd + 1: len(r.data) == n,
                          use_poll=support.HAS_POLL and i % 2 == 0)
    finally:
        for m, _r, b in maps:
            asyncore.close_all(map=m, ignore_all=True)
            b.close()


def _open_fds():
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


@pytest.mark.skipif(_open_fds() is None, reason="needs /proc/self/fd")
def test_short_lived_maps_do_not_leak_descriptors(asyncore, kit):
    import gc
    before = _open_fds()
    for i in range(1500):
        m = {}
        a, b = socket.socketpair()
        d = kit.Reader(a, map=m)
        asyncore.loop(timeout=0, map=m, count=1, use_poll=support.HAS_POLL and i % 2 == 1)
        d.close()
        b.close()
        del m, d
    gc.collect()
    assert _open_fds() - before < 200


# ---------------------------------------------------------------------------
# the reference behaviours the fixes change (run with --reference only):
# they show that the fastcore_only tests above test something real
# ---------------------------------------------------------------------------

@pytest.mark.reference_only
@pytest.mark.skipif(not support.HAS_POLL, reason="select.poll needed")
def test_reference_rst_closes_twice_with_poll(asyncore, kit, sockmap):
    class Victim(kit.Dispatcher):
        def handle_read(self):
            self._rec("handle_read")
            self.recv(4096)

        def handle_write(self):
            self._rec("handle_write")

    a, b = support.tcp_pair()
    v = Victim(b, map=sockmap)
    support.reset(a)
    select.select([b], [], [], 5)
    run_until(asyncore, sockmap, lambda: not sockmap, use_poll=True)
    assert v.count("handle_close") == 2
    assert "handle_write" in _after_first(v.events, "handle_close")


@pytest.mark.reference_only
@pytest.mark.skipif(not support.HAS_POLL, reason="select.poll needed")
def test_reference_loses_data_on_hup_with_poll(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    try:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
    except OSError:
        pass
    payload = b"d" * 200000
    b.setblocking(False)
    try:
        sent = b.send(payload)
    except BlockingIOError:
        sent = 0
    if sent != len(payload):
        b.close()
        pytest.skip("socket buffer too small to queue 200 KB at once")
    b.close()
    r = kit.Reader(a, map=sockmap)
    run_until(asyncore, sockmap, lambda: not sockmap, use_poll=True)
    assert len(r.data) < len(payload)


@pytest.mark.reference_only
def test_reference_select_crashes_on_closed_socket(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    kit.Reader(a, map=sockmap)
    a.close()
    with pytest.raises(OSError):
        asyncore.loop(timeout=0.01, map=sockmap, count=1, use_poll=False)
    sockmap.clear()
    b.close()


@pytest.mark.reference_only
def test_reference_readable_raising_escapes_loop(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)

    def boom():
        raise ValueError("predicate")

    d.readable = boom
    with pytest.raises(ValueError):
        asyncore.loop(timeout=0.01, map=sockmap, count=1)
    b.close()


@pytest.mark.reference_only
def test_reference_del_channel_deletes_other_entry(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    old = kit.Reader(a, map=sockmap)
    fd = a.fileno()
    a.close()
    nsock, y = support.pair_at_fd(fd)
    new = kit.Reader(nsock, map=sockmap)
    old.close()
    assert fd not in sockmap
    new.close()
    b.close()
    y.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("how", ["set_socket", "map-assignment"])
def test_same_dispatcher_new_socket_on_same_fd(asyncore, kit, sockmap, use_poll, how):
    """A dispatcher whose raw socket was closed and replaced by a new socket
    that got the same descriptor number (set_socket, or ``map[fd] = self``)
    is served on the new socket."""
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    b.send(b"old")
    run_until(asyncore, sockmap, lambda: d.data == b"old", use_poll=use_poll)
    run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
    fd = a.fileno()
    a.close()                                 # the raw socket, behind the dispatcher
    b.close()
    nsock, peer = support.pair_at_fd(fd)
    nsock.setblocking(False)
    if how == "set_socket":
        d.set_socket(nsock)
    else:
        d.socket = nsock
        sockmap[fd] = d
    assert sockmap[fd] is d
    peer.send(b"new")
    run_until(asyncore, sockmap, lambda: d.data == b"oldnew", use_poll=use_poll)
    d.out_buffer = b"reply"
    assert support.pump(asyncore, sockmap, PeerReader(peer), 5, use_poll=use_poll) == b"reply"
    peer.close()
