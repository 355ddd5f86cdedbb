"""Idle timeouts: fastcore.set_idle_timeout() / get_idle_timeout()."""

import socket
import sys
import time

import pytest
from support import DEFAULT_TIMEOUT, LOCALHOST, PeerReader, fd_is_open, pump, run_until

pytestmark = pytest.mark.fastcore_only


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _recv_eof(sock):
    sock.settimeout(DEFAULT_TIMEOUT)
    return sock.recv(16) == b""


def test_idle_connection_is_closed_after_its_timeout(fastcore_pkg, asyncore, pair):
    map = {}
    closes = []

    class Conn(asyncore.dispatcher_with_send):
        def handle_close(self):
            closes.append(self)
            self.close()

    disp = Conn(pair[0], map=map)
    fastcore_pkg.set_idle_timeout(disp, 0.05)
    assert fastcore_pkg.get_idle_timeout(disp) == 0.05
    start = time.monotonic()
    # loop() returns once the timeout closed the only dispatcher.
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
    assert time.monotonic() - start >= 0.05
    assert closes == [disp]
    assert map == {}
    assert _recv_eof(pair[1])


def test_default_action_closes_even_when_handle_close_does_not(fastcore_pkg, asyncore, pair):
    """handle_close() runs once (the program's cleanup), then close(): an idle
    connection does not stay open because its handle_close() keeps it."""
    map = {}
    closes = []

    class Keeper(asyncore.dispatcher_with_send):
        def handle_close(self):
            closes.append(self)

    disp = Keeper(pair[0], map=map)
    fastcore_pkg.set_idle_timeout(disp, 0.03)
    run_until(asyncore, map, lambda: not map, timeout=DEFAULT_TIMEOUT, what="timed out")
    assert closes == [disp]
    assert map == {}
    assert _recv_eof(pair[1])


def test_activity_defers_the_timeout(fastcore_pkg, asyncore, asynchat, pair):
    map = {}
    lines = []
    timeouts = []

    class Chat(asynchat.async_chat):
        def collect_incoming_data(self, data):
            lines.append(data)

        def found_terminator(self):
            pass

    def on_timeout(chat):
        timeouts.append(time.monotonic())
        chat.close()

    chat = Chat(pair[0], map=map)
    chat.set_terminator(b"\n")
    fastcore_pkg.set_idle_timeout(chat, 0.15, on_timeout)
    peer = pair[1]
    sends = []

    def trickle():
        # The peer speaks every 50 ms for 0.5 s: never idle for 0.15 s.
        if len(sends) < 10:
            peer.send(b"x")
            sends.append(time.monotonic())
        else:
            ticker.cancel()

    ticker = fastcore_pkg.call_every(0.05, trickle)
    try:
        asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
    finally:
        ticker.cancel()
    assert len(sends) == 10
    assert len(timeouts) == 1
    assert timeouts[0] - sends[-1] >= 0.15 - 0.01
    assert b"".join(lines) == b"x" * 10


def test_timeout_and_handle_timeout_of_a_subclass_are_its_own(fastcore_pkg, asyncore, pair):
    """Names asyncore does not define keep the program's meaning: the loop
    neither reads `timeout` nor calls `handle_timeout()`, any value is
    accepted, and a change on the class is seen as on any class attribute."""
    called = []

    class Handler(asyncore.dispatcher_with_send):
        timeout = 0.01
        max_connections = "many"

        def handle_timeout(self):
            called.append(self)

    map = {}
    disp = Handler(pair[0], map=map)
    # Plain class attributes, left where the class body put them.
    assert Handler.__dict__["timeout"] == 0.01 and disp.timeout == 0.01
    assert Handler.__dict__["max_connections"] == "many"
    assert not {"timeout", "max_connections"} & vars(disp).keys()
    asyncore.loop(timeout=0.05, map=map, count=4)
    assert called == []
    assert fastcore_pkg.get_idle_timeout(disp) is None
    disp.timeout = "30s"
    disp.handle_timeout = None
    Handler.timeout = {"idle": 5}
    assert disp.timeout == "30s" and Handler(map={}).timeout == {"idle": 5}
    assert fastcore_pkg.get_idle_timeout(disp) is None
    # An idle timeout of fastcore's does not call the subclass's handle_timeout either.
    del disp.handle_timeout
    fastcore_pkg.set_idle_timeout(disp, 0.02)
    run_until(asyncore, map, lambda: not map or called, what="timed out")
    assert called == [] and map == {}
    assert disp.timeout == "30s"


def test_none_clears_the_timeout(fastcore_pkg, asyncore, pair):
    fired = []
    map = {}
    disp = asyncore.dispatcher_with_send(pair[0], map=map)
    fastcore_pkg.set_idle_timeout(disp, 0.02, fired.append)
    fastcore_pkg.set_idle_timeout(disp, None)
    assert fastcore_pkg.get_idle_timeout(disp) is None
    try:
        asyncore.loop(timeout=0.05, map=map, count=3)
        assert fired == [] and map == {pair[0].fileno(): disp}
    finally:
        asyncore.close_all(map=map)


def test_timeout_set_before_add_channel_is_armed_by_it(fastcore_pkg, asyncore, pair):
    fired = []
    map = {}
    disp = asyncore.dispatcher_with_send(map=map)
    fastcore_pkg.set_idle_timeout(disp, 0.02, lambda d: (fired.append(d), d.close()))
    disp.set_socket(pair[0])
    disp.connected = True  # else every iteration's write event is activity
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
    assert fired == [disp]


def test_on_timeout_that_keeps_the_connection_is_called_again(fastcore_pkg, asyncore, pair):
    map = {}
    calls = []

    def on_timeout(disp):
        calls.append(time.monotonic())
        if len(calls) == 3:
            disp.close()

    disp = asyncore.dispatcher_with_send(pair[0], map=map)
    fastcore_pkg.set_idle_timeout(disp, 0.03, on_timeout)
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
    assert len(calls) == 3
    assert all(b - a >= 0.03 - 0.005 for a, b in zip(calls, calls[1:]))


def test_on_timeout_raising_goes_to_handle_error(fastcore_pkg, asyncore, pair):
    map = {}
    errors = []

    class Broken(asyncore.dispatcher_with_send):
        def handle_error(self):
            errors.append(sys.exc_info()[1])
            self.close()

    def on_timeout(disp):
        raise RuntimeError("timeout handler boom")

    fastcore_pkg.set_idle_timeout(Broken(pair[0], map=map), 0.01, on_timeout)
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
    assert [str(e) for e in errors] == ["timeout handler boom"]


def test_bad_arguments_are_refused_at_the_call(fastcore_pkg, asyncore, pair):
    disp = asyncore.dispatcher_with_send(pair[0], map={})
    try:
        for bad, exc in ((0, ValueError), (-1, ValueError), (float("nan"), ValueError),
                         ("1", TypeError), (True, TypeError)):
            with pytest.raises(exc):
                fastcore_pkg.set_idle_timeout(disp, bad)
        with pytest.raises(TypeError):
            fastcore_pkg.set_idle_timeout(disp, 1.0, on_timeout="close")
        assert fastcore_pkg.get_idle_timeout(disp) is None
        for not_a_dispatcher in (pair[1], None, object()):
            with pytest.raises(TypeError):
                fastcore_pkg.set_idle_timeout(not_a_dispatcher, 1.0)
            with pytest.raises(TypeError):
                fastcore_pkg.get_idle_timeout(not_a_dispatcher)
    finally:
        disp.close()


def test_closed_dispatcher_releases_its_timer(fastcore_pkg, asyncore, pair):
    import gc
    import weakref

    map = {}
    disp = asyncore.dispatcher_with_send(pair[0], map=map)
    fastcore_pkg.set_idle_timeout(disp, 3600, lambda d: None)
    ref = weakref.ref(disp)
    disp.close()
    del disp
    gc.collect()
    assert ref() is None, "a cancelled idle timer still holds its dispatcher"


def test_connect_that_never_answers_times_out(fastcore_pkg, asyncore):
    """A SYN nobody answers: a listener whose accept queue is full drops it
    (Linux), so the connect stays pending until the idle timeout."""
    listener = socket.socket()
    listener.bind((LOCALHOST, 0))
    listener.listen(0)
    fillers = []
    try:
        # Fill the accept queue (nothing is ever accepted).
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(listener.getsockname())
            fillers.append(s)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(listener.getsockname())
            pytest.skip("this kernel answers SYNs beyond the backlog")
        except (socket.timeout, OSError):
            pass
        finally:
            probe.close()

        map = {}
        events = []

        class Client(asyncore.dispatcher):
            def handle_connect(self):
                events.append("connect")

            def handle_close(self):
                events.append("close")
                self.close()

            def writable(self):
                return not self.connected

        client = Client(map=map)
        client.create_socket()
        fastcore_pkg.set_idle_timeout(client, 0.2)
        client.connect(listener.getsockname())
        fd = client.socket.fileno()
        start = time.monotonic()
        asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
        assert events == ["close"]
        assert time.monotonic() - start >= 0.2 - 0.01
        assert not fd_is_open(fd)
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_slowloris_is_cut_off_while_others_are_served(fastcore_pkg, asyncore, asynchat):
    """Many clients trickle one byte at a time and never finish a line; the
    server gives each 0.4 s to send a whole line (a timer per connection) and
    drops any that go idle for 0.2 s. A well-behaved client is served at once
    meanwhile, and every slow connection is gone at the end."""
    map = {}
    served = []

    class Handler(asynchat.async_chat):
        def __init__(self, sock, map):
            super().__init__(sock, map=map)
            self.set_terminator(b"\n")
            fastcore_pkg.set_idle_timeout(self, 0.2)
            self.buffer = []
            self.deadline = fastcore_pkg.call_later(0.4, self.too_slow)

        def too_slow(self):
            self.close()

        def collect_incoming_data(self, data):
            self.buffer.append(data)

        def found_terminator(self):
            self.deadline.cancel()
            line = b"".join(self.buffer)
            self.buffer = []
            served.append(line)
            self.push(line.upper() + b"\n")
            self.close_when_done()

        def close(self):
            self.deadline.cancel()
            super().close()

    class Server(asyncore.dispatcher):
        def __init__(self):
            super().__init__(map=map)
            self.create_socket()
            self.bind((LOCALHOST, 0))
            self.listen(512)

        def handle_accepted(self, sock, addr):
            Handler(sock, map)

    server = Server()
    address = server.socket.getsockname()
    slow = []
    for _ in range(100):
        s = socket.create_connection(address, timeout=DEFAULT_TIMEOUT)
        s.setblocking(False)
        slow.append(s)
    run_until(asyncore, map, lambda: len(map) == 101, what="all slow clients accepted")

    def trickle():
        for s in slow:
            try:
                s.send(b"a")
            except OSError:
                pass

    ticker = fastcore_pkg.call_every(0.05, trickle)
    good = socket.create_connection(address, timeout=DEFAULT_TIMEOUT)
    try:
        good.sendall(b"hello\n")
        start = time.monotonic()
        assert pump(asyncore, map, PeerReader(good), 6) == b"HELLO\n"
        assert time.monotonic() - start < 0.4, "the good client waited for the slow ones"
        # Every slow connection is closed by its deadline despite the trickle.
        run_until(asyncore, map, lambda: len(map) == 1, what="slow clients dropped")
        assert served == [b"hello"]
    finally:
        ticker.cancel()
        good.close()
        for s in slow:
            s.close()
        asyncore.close_all(map=map)
