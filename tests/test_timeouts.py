"""Idle timeouts: dispatcher.timeout / set_timeout() / handle_timeout()."""

import socket
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


def test_idle_connection_is_closed_after_its_timeout(asyncore, pair):
    map = {}
    disp = asyncore.dispatcher_with_send(pair[0], map=map)
    disp.timeout = 0.05
    start = time.monotonic()
    # loop() returns once the timeout closed the only dispatcher.
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
    assert time.monotonic() - start >= 0.05
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

        def handle_timeout(self):
            timeouts.append(time.monotonic())
            super().handle_timeout()

    chat = Chat(pair[0], map=map)
    chat.set_terminator(b"\n")
    chat.set_timeout(0.15)
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


def test_timeout_set_as_class_attribute_and_disarmed_with_none(asyncore, pair):
    fired = []

    class Timed(asyncore.dispatcher_with_send):
        timeout = 0.02

        def handle_timeout(self):
            fired.append(self)
            self.close()

    map = {}
    disp = Timed(pair[0], map=map)
    assert disp.timeout == 0.02
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
    assert fired == [disp]

    a, b = socket.socketpair()
    try:
        other = Timed(a, map=map)
        other.set_timeout(None)
        assert other.timeout is None
        asyncore.loop(timeout=0.1, map=map, count=3)
        assert fired == [disp] and map == {a.fileno(): other}
    finally:
        asyncore.close_all(map=map)
        b.close()


def test_handle_timeout_that_keeps_the_connection_is_called_again(asyncore, pair):
    map = {}
    calls = []

    class Patient(asyncore.dispatcher_with_send):
        def handle_timeout(self):
            calls.append(time.monotonic())
            if len(calls) == 3:
                self.close()

    disp = Patient(pair[0], map=map)
    disp.timeout = 0.03
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
    assert len(calls) == 3
    assert all(b - a >= 0.03 - 0.005 for a, b in zip(calls, calls[1:]))


def test_handle_timeout_raising_goes_to_handle_error(asyncore, pair):
    map = {}
    errors = []

    class Broken(asyncore.dispatcher_with_send):
        def handle_timeout(self):
            raise RuntimeError("timeout handler boom")

        def handle_error(self):
            errors.append(True)
            self.close()

    Broken(pair[0], map=map).timeout = 0.01
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
    assert errors == [True]


def test_timeout_is_checked_at_assignment(asyncore, pair):
    disp = asyncore.dispatcher_with_send(pair[0], map={})
    try:
        for bad, exc in ((0, ValueError), (-1, ValueError), (float("nan"), ValueError),
                         ("1", TypeError), (True, TypeError)):
            with pytest.raises(exc):
                disp.timeout = bad
        assert disp.timeout is None
    finally:
        disp.close()


def test_closed_dispatcher_releases_its_timer(asyncore, pair):
    import gc
    import weakref

    map = {}
    disp = asyncore.dispatcher_with_send(pair[0], map=map)
    disp.timeout = 3600
    ref = weakref.ref(disp)
    disp.close()
    del disp
    gc.collect()
    assert ref() is None, "a cancelled idle timer still holds its dispatcher"


def test_connect_that_never_answers_times_out(asyncore):
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

            def handle_timeout(self):
                events.append("timeout")
                self.close()

            def writable(self):
                return not self.connected

        client = Client(map=map)
        client.create_socket()
        client.timeout = 0.2
        client.connect(listener.getsockname())
        fd = client.socket.fileno()
        start = time.monotonic()
        asyncore.loop(timeout=DEFAULT_TIMEOUT, map=map)
        assert events == ["timeout"]
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
            self.set_timeout(0.2)
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
