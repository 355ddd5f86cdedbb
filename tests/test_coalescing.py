"""Output coalescing (issue 17): pushes made while the loop dispatches one
event leave in as few sends as the socket takes, and nothing a program can
see differs from 3.11.

The differential scenarios run a script of output operations in
found_terminator, for one or several lines of one read, on the reference and
on fastcore, and compare the handler calls, what the handlers see after each
operation (the fifo, connected, the result of a direct send) and the bytes
the peer receives. The count of sends is seen on a SOCK_SEQPACKET pair,
where every send(2)/sendmsg(2) arrives as one record.
"""

import select
import socket
import struct
import sys

import pytest
import support
from support import PeerReader, run_until

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    given = None

USE_POLL = support.USE_POLL


@pytest.fixture(scope="session")
def diff(ref_modules, modules):
    def run(scenario, normalise=None, **kw):
        return support.differential(scenario, ref_modules, modules, normalise=normalise, **kw)
    return run


class ListProducer:
    def __init__(self, parts):
        self.parts = list(parts)

    def more(self):
        return self.parts.pop(0) if self.parts else b""


def _script_chat(asynchat, asyncore_module=None):
    """async_chat that runs script[i] (a list of operations) for line i,
    recording what it does and sees; its output path is the library's own."""

    class ScriptChat(asynchat.async_chat):
        def __init__(self, sock, map, script):
            asynchat.async_chat.__init__(self, sock, map)
            self.set_terminator(b"\n")
            self.script = list(script)
            self.events = []
            self.log_info = lambda *args, **kw: None

        def collect_incoming_data(self, data):
            self._collect_incoming_data(data)

        def found_terminator(self):
            self._get_data()
            ops = self.script.pop(0) if self.script else []
            self.events.append(("found",))
            for op in ops:
                self.run(op)
                self.events.append(("state", bool(self.producer_fifo), bool(self.connected)))

        def run(self, op):
            name = op[0]
            if name == "push":
                self.push(op[1])
            elif name == "push_bytearray":
                buf = bytearray(op[1])
                self.push(buf)
                buf[:] = b"!" * len(buf)   # 3.11 sent it at once: the change is not seen
            elif name == "send":
                self.events.append(("sent", self.send(op[1])))
            elif name == "close":
                self.close()
            elif name == "close_when_done":
                self.close_when_done()
            elif name == "discard":
                self.discard_buffers()
            elif name == "producer":
                self.push_with_producer(ListProducer(op[1]))
            elif name == "raise":
                raise ValueError("from the handler")
            elif name == "raise_then_exit":
                self.exit_in_handle_error = True
                raise ValueError("from the handler")

        def handle_close(self):
            self.events.append(("handle_close",))
            self.close()

        def handle_error(self):
            self.events.append(("handle_error", sys.exc_info()[0].__name__))
            if getattr(self, "exit_in_handle_error", False):
                raise asyncore_module.ExitNow("from handle_error")
            self.handle_close()

    return ScriptChat


def scenario_script(asyncore, asynchat, script, use_poll, peer_closes=False,
                    out_buffer_size=None):
    chat_class = _script_chat(asynchat, asyncore)
    m = {}
    a, b = socket.socketpair()
    exited = False
    try:
        chat = chat_class(a, m, script)
        if out_buffer_size is not None:
            chat.ac_out_buffer_size = out_buffer_size
        reader = PeerReader(b)
        b.sendall(b"".join(b"%d\n" % i for i in range(len(script))))
        if peer_closes:
            b.shutdown(socket.SHUT_RDWR)
        # All of it read (discard_buffers() may drop the lines after it).
        try:
            run_until(asyncore, m, lambda: not m or support.consumed(chat),
                      use_poll=use_poll, what="script run")
        except asyncore.ExitNow:
            exited = True   # from handle_error: what was pushed before is on the wire
            reader.drain()
            return {"events": chat.events, "out": bytes(reader.buf), "exited": exited}

        def settled():
            if not peer_closes:
                reader.drain()
            return not m or not chat.producer_fifo

        run_until(asyncore, m, settled, use_poll=use_poll, what="output settled")
        if not peer_closes:
            reader.drain()
        return {"events": chat.events, "out": bytes(reader.buf), "in_map": bool(m),
                "fifo": [bytes(x) if isinstance(x, (bytes, bytearray, memoryview))
                         else type(x).__name__ for x in chat.producer_fifo]}
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()


P = [("push", b"line %d\r\n" % i) for i in range(4)]

CASES = {
    "pushes": [P],
    "pipelined": [[("push", b"reply %d\r\n" % i)] for i in range(16)],
    "push_close": [P[:3] + [("close",)]],
    "push_close_push": [P[:2] + [("close",)] + P[2:]],
    "close_in_later_line": [P[:2], P[2:3] + [("close",)], P[3:]],
    "direct_send": [P[:2] + [("send", b"direct\r\n")] + P[2:]],
    "close_when_done": [P[:2] + [("close_when_done",)] + P[2:3], P[3:]],
    "discard": [P[:2] + [("discard",)] + P[2:]],
    "producer": [P[:2] + [("producer", [b"p1,", b"p2,", b"p3"])] + P[2:]],
    "raise": [P[:3] + [("raise",)]],
    "raise_then_lines": [P[:2] + [("raise",)], P[2:]],
    "exit_from_handle_error": [P[:3] + [("raise_then_exit",)]],
    "mutable_data": [P[:2] + [("push_bytearray", b"mutable\r\n")] + P[2:]],
    "empty_push": [P[:1] + [("push", b"")] + P[1:]],
    "large_push": [P[:1] + [("push", b"x" * 70000)] + P[1:]],
}


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("case", sorted(CASES))
def test_script(diff, case, use_poll):
    diff(scenario_script, script=CASES[case], use_poll=use_poll)


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_small_out_buffer(diff, use_poll):
    # Pushes longer than ac_out_buffer_size: 3.11 sends one piece at once.
    diff(scenario_script, script=[P], use_poll=use_poll, out_buffer_size=5)


def _close_once(res):
    """The documented difference (docs/design.md): fastcore runs handle_close
    at most once; the reference runs it again for the POLLHUP that follows."""
    events = res["events"]
    if ("handle_close",) in events:
        first = events.index(("handle_close",))
        events = events[:first + 1] + [e for e in events[first + 1:] if e != ("handle_close",)]
    return dict(res, events=events)


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_peer_gone(diff, use_poll):
    # The first push's send fails (EPIPE): handle_close inside it, as in 3.11,
    # and the pushes after it see a closed dispatcher.
    res = diff(scenario_script, normalise=_close_once, script=[P, P], use_poll=use_poll,
               peer_closes=True)
    assert ("handle_close",) in res["events"]


if given is not None:
    data = st.binary(min_size=0, max_size=12)
    op = st.one_of(
        st.tuples(st.just("push"), data),
        st.tuples(st.just("push_bytearray"), data),
        st.tuples(st.just("send"), data),
        st.just(("close",)),
        st.just(("close_when_done",)),
        st.just(("discard",)),
        st.tuples(st.just("producer"), st.lists(data, max_size=3)),
        st.just(("raise",)),
    )
    script = st.lists(st.lists(op, max_size=6), min_size=1, max_size=5)

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(script=script, use_poll=st.booleans())
    def test_script_sequences(diff, script, use_poll):
        diff(scenario_script, normalise=_close_once, script=script, use_poll=use_poll)


# ---------------------------------------------------------------------------
# the count of sends
# ---------------------------------------------------------------------------

def _seqpacket_pair():
    try:
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except (AttributeError, OSError) as exc:   # macOS: no AF_UNIX SOCK_SEQPACKET
        pytest.skip("no SOCK_SEQPACKET socketpair here: %s" % exc)


def _records(sock):
    """The records a SOCK_SEQPACKET socket has ready: one per send."""
    records = []
    sock.setblocking(False)
    while True:
        try:
            record = sock.recv(1 << 20)
        except BlockingIOError:
            return records
        if not record:
            return records
        records.append(record)


def _echo_class(asynchat, override=None):
    class Echo(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map)
            self.set_terminator(b"\n")
            self.parts = []

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            self.push(b"".join(self.parts) + b"\n")
            self.parts = []

    if override is None:
        return Echo

    def passthrough(name):
        def method(self, *args):
            return getattr(super(Overriding, self), name)(*args)
        method.__name__ = name
        return method

    body = {override: passthrough(override)} if override != "refill_buffer" \
        else {"refill_buffer": lambda self: None}
    Overriding = type("Overriding", (Echo,), body)
    return Overriding


def _sends_for_pipelined(asyncore, asynchat, use_poll, override=None, lines=16):
    m = {}
    a, b = _seqpacket_pair()
    try:
        _echo_class(asynchat, override)(a, m)
        request = b"".join(b"%064d\n" % i for i in range(lines))
        b.send(request)
        got = []
        run_until(asyncore, m, lambda: (got.extend(_records(b)),
                                        sum(map(len, got)) >= len(request))[1],
                  use_poll=use_poll, what="echo received")
        assert b"".join(got) == request
        return len(got)
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_pipelined_lines_leave_in_two_sends(asyncore, asynchat, ref_modules, use_poll):
    assert _sends_for_pipelined(*ref_modules, use_poll) == 16
    # The first push is sent at once, as 3.11 sends it; the other fifteen
    # leave together when the read's handlers return.
    assert _sends_for_pipelined(asyncore, asynchat, use_poll) == 2


@pytest.mark.parametrize("override", ["push", "initiate_send", "send", "writable",
                                      "refill_buffer", "close"])
def test_overridden_output_methods_keep_one_send_per_push(asyncore, asynchat, override):
    assert _sends_for_pipelined(asyncore, asynchat, False, override) == 16


def test_instance_method_keeps_one_send_per_push(asyncore, asynchat):
    m = {}
    a, b = _seqpacket_pair()
    try:
        chat = _echo_class(asynchat)(a, m)
        sends = []

        def send(data):
            sends.append(data)
            return asynchat.async_chat.send(chat, data)

        chat.send = send
        b.send(b"a\nb\nc\n")
        run_until(asyncore, m, lambda: len(sends) == 3, what="three sends")
        assert _records(b) == [b"a\n", b"b\n", b"c\n"]
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()


def test_full_socket_keeps_the_rest_in_order(asyncore, asynchat):
    # The combined send takes part: the rest goes to the fifo, ahead of
    # what is queued after it, and leaves with the write events.
    m = {}
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        chat_class = _script_chat(asynchat)
        lines = [("push", (b"%05d" % i) * 200 + b"\n") for i in range(64)]
        chat = chat_class(a, m, [lines + [("close_when_done",)]])
        reader = PeerReader(b)
        b.sendall(b"go\n")
        run_until(asyncore, m, lambda: (reader.drain(), not m)[1], what="closed when done")
        reader.drain()
        assert bytes(reader.buf) == b"".join(op[1] for op in lines)
        assert chat.events.count(("handle_close",)) == 1
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()


def test_reset_before_the_combined_send(asyncore, asynchat):
    # The peer resets between the first push's send and the end of the
    # event: the combined send fails and handle_close runs once, as a send
    # at that point would have it.
    m = {}
    a, b = support.tcp_pair()
    a.setblocking(False)
    try:
        chat_class = _script_chat(asynchat)

        class Resetting(chat_class):
            def run(self, op):
                if op == ("reset",):
                    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    b.close()
                    # The RST makes the socket readable (SO_ERROR would clear it).
                    assert select.select([self.socket], [], [], support.DEFAULT_TIMEOUT)[0]
                else:
                    super().run(op)

        chat = Resetting(a, m, [P[:1] + [("reset",)] + P[1:]])
        b.sendall(b"go\n")
        run_until(asyncore, m, lambda: ("found",) in chat.events, what="line read")
        # In the read's own iteration, not at a later write event.
        assert not m
        assert chat.events.count(("handle_close",)) == 1
        assert chat.events[-1] == ("handle_close",)
    finally:
        asyncore.close_all(map=m, ignore_all=True)


def test_another_threads_loop_leaves_deferred_output_alone(asyncore, asynchat):
    # Two loops in two threads, a map each. While A's handler waits, B's loop
    # runs a whole event: B's end of event must not send (nor run handlers
    # for) what A's event deferred; A's own end of event sends it.
    chat_class = _script_chat(asynchat)
    a_pushed = support.threading.Event()
    b_done = support.threading.Event()
    seen_by_a = []

    class Waiting(chat_class):
        def run(self, op):
            if op == ("wait",):
                a_pushed.set()
                assert b_done.wait(support.DEFAULT_TIMEOUT)
                seen_by_a.append(support.recv_available(a_peer)[0])
            else:
                super().run(op)

    map_a, map_b = {}, {}
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    try:
        Waiting(a, map_a, [P[:2] + [("wait",)]])
        chat_b = chat_class(b, map_b, [P[:2]])

        def loop_b():
            # B's event begins once A's pushes are made: one begun before A's
            # second push would leave that push undeferred (sent at once, as
            # 3.11 sends it), and this test about deferred output moot.
            assert a_pushed.wait(support.DEFAULT_TIMEOUT)
            b_peer.sendall(b"0\n")
            run_until(asyncore, map_b, lambda: ("found",) in chat_b.events, what="B's line")
            b_done.set()

        thread = support.start_thread(loop_b)
        a_peer.sendall(b"0\n")
        run_until(asyncore, map_a, lambda: seen_by_a, what="A's line")
        thread.finish()
        assert seen_by_a == [P[0][1]]
        assert support.recv_available(a_peer)[0] == P[1][1]
        assert support.recv_available(b_peer)[0] == P[0][1] + P[1][1]
    finally:
        asyncore.close_all(map=map_a, ignore_all=True)
        asyncore.close_all(map=map_b, ignore_all=True)
        a_peer.close()
        b_peer.close()
