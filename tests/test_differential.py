"""Differential tests: the same scenario on the reference and on fastcore.

Every scenario runs on (ref_asyncore, ref_asynchat) and on the modules under
test; the recorded call sequences (per dispatcher: the interleaving across
dispatchers within one iteration is not part of the contract, fastcore
dispatches in the kernel's event order) and the delivered bytes must be
equal.  Chunking is deterministic: socketpair(), and each chunk is consumed
by the loop before the next one is sent.

Documented normalisations (docs/design.md, deliberate differences):
  * with use_poll=True on a socketpair, a peer's close comes with POLLHUP;
    the reference calls handle_close right after the read in that same
    iteration, fastcore reads again and closes on the b'' read: one
    ``handle_read`` more, so ``handle_read`` entries are dropped there.
  * handle_close at most once: where the reference calls it again (a push
    to the closed peer closed already, then POLLHUP closes again), repeated
    handle_close/close entries are dropped.
"""

import copy
import select
import socket

import pytest
import support
from support import PeerReader, feed, run_until

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    given = None

USE_POLL = support.USE_POLL
snapshot = copy.deepcopy   # results are taken before the scenario's cleanup closes things
TERM20 = b"<<END-OF-RECORD-20>>"


@pytest.fixture(scope="session")
def diff(ref_modules, modules):
    def run(scenario, normalise=None, **kw):
        return support.differential(scenario, ref_modules, modules, normalise=normalise, **kw)
    return run


def _settle(asyncore, m, chat, reader, use_poll):
    """Run until the chat has nothing queued, draining the peer."""
    run_until(asyncore, m, lambda: (reader.drain(), not chat.producer_fifo)[1],
              use_poll=use_poll, what="output flushed")
    reader.drain()


# ---------------------------------------------------------------------------
# echo
# ---------------------------------------------------------------------------

def scenario_echo(asyncore, asynchat, chunks, term, use_poll):
    K = support.kit(asyncore, asynchat)
    m = {}
    a, b = socket.socketpair()
    try:
        chat = K.IOEchoChat(a, map=m, terminator=term)
        chat.record_sends = True
        reader = PeerReader(b)
        for chunk in chunks:
            feed(asyncore, m, chat, b, [chunk], use_poll=use_poll)
            _settle(asyncore, m, chat, reader, use_poll)
        return snapshot({"events": chat.events, "lines": chat.lines, "echo": bytes(reader.buf)})
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()


ECHO_STREAM = b"hello\r\nworld\r\n\r\nlonger line with \r inside\r\n" * 3


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("sizes", [[1], [2], [3], [7], [64], [5, 1, 9, 2]], ids=str)
def test_echo(diff, use_poll, sizes):
    res = diff(scenario_echo, chunks=support.chunked(ECHO_STREAM, sizes), term=b"\r\n",
               use_poll=use_poll)
    assert res["echo"] == ECHO_STREAM


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("term", [b"\n", b"\r\n.\r\n", TERM20, 7, None],
                         ids=["LF", "dot", "term20", "int", "None"])
def test_echo_terminators_byte_by_byte(diff, use_poll, term):
    stream = (b"ab\r\n.\r\ncd" + TERM20 + b"e\nf\r\n.\r") * 2
    diff(scenario_echo, chunks=support.chunked(stream, [1]), term=term, use_poll=use_poll)


# ---------------------------------------------------------------------------
# a protocol switching terminators, random streams and chunkings
# ---------------------------------------------------------------------------

def _protocol_kit(asyncore, asynchat):
    K = support.kit(asyncore, asynchat)

    class Protocol(K.IOChat):
        """Lines 'L...' are data; 'N:<k>' announces a k-byte block, 'DOT' a
        block up to CRLF.CRLF, 'BIG' a block up to a 20-byte terminator;
        'SKIP' discards the rest of the input buffer.  Acks every item."""

        def __init__(self, sock, map):
            K.IOChat.__init__(self, sock, map, terminator=b"\r\n")
            self.items = []
            self.mode = None

        def on_line(self, data):
            if self.mode is not None:
                self.items.append((self.mode, data))
                self.mode = None
                self.set_terminator(b"\r\n")
                self.push(b"ok %d\n" % len(data))
            elif data.startswith(b"N:"):
                n = int(data[2:])
                self.mode = "block"
                if n == 0:
                    self.items.append(("block", b""))
                    self.mode = None
                    self.push(b"ok 0\n")
                else:
                    self.set_terminator(n)
            elif data == b"DOT":
                self.mode = "dot"
                self.set_terminator(b"\r\n.\r\n")
            elif data == b"BIG":
                self.mode = "big"
                self.set_terminator(TERM20)
            elif data == b"SKIP":
                self.items.append(("skip", self.ac_in_buffer))
                self.ac_in_buffer = b""
            else:
                self.items.append(("line", data[1:]))
                self.push(data[1:] + b"\n")

    return Protocol


def encode_items(items):
    out = []
    for kind, data in items:
        if kind == "line":
            out.append(b"L" + data + b"\r\n")
        elif kind == "block":
            out.append(b"N:%d\r\n" % len(data) + data)
        elif kind == "dot":
            out.append(b"DOT\r\n" + data + b"\r\n.\r\n")
        elif kind == "big":
            out.append(b"BIG\r\n" + data + TERM20)
    return b"".join(out)


def scenario_protocol(asyncore, asynchat, chunks, use_poll):
    Protocol = _protocol_kit(asyncore, asynchat)
    m = {}
    a, b = socket.socketpair()
    try:
        chat = Protocol(a, m)
        chat.record_sends = True
        reader = PeerReader(b)
        for chunk in chunks:
            feed(asyncore, m, chat, b, [chunk], use_poll=use_poll)
            _settle(asyncore, m, chat, reader, use_poll)
        return snapshot({"events": chat.events, "items": chat.items, "out": bytes(reader.buf),
                "term": chat.get_terminator(), "in_buffer": chat.ac_in_buffer,
                "incoming": list(chat.incoming)})
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()


def _valid(term):
    return lambda d: (d + term).find(term) == len(d)


if given is not None:
    _item = st.one_of(
        st.tuples(st.just("line"), st.binary(max_size=30).filter(_valid(b"\r\n"))),
        st.tuples(st.just("block"), st.binary(max_size=60)),
        st.tuples(st.just("dot"), st.binary(max_size=40).filter(_valid(b"\r\n.\r\n"))),
        st.tuples(st.just("big"), st.binary(max_size=40).filter(_valid(TERM20))),
    )

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(items=st.lists(_item, min_size=1, max_size=10),
           sizes=st.lists(st.integers(1, 48), min_size=1, max_size=8),
           use_poll=st.booleans())
    def test_protocol_random_chunkings(diff, items, sizes, use_poll):
        if use_poll and not support.HAS_POLL:
            use_poll = False
        stream = encode_items(items)
        res = diff(scenario_protocol, chunks=support.chunked(stream, sizes), use_poll=use_poll)
        assert res["items"] == items
        assert res["term"] == b"\r\n"


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("seed", range(6))
def test_protocol_seeded_chunkings_with_skip(diff, use_poll, seed):
    import random
    rnd = random.Random(seed)
    items = [("line", b"first"), ("block", b"0123456789\r\n" * 3), ("dot", b"a\r\n.b"),
             ("big", b"<<END"), ("line", b"")]
    stream = encode_items(items)
    stream = stream[:40] + b"SKIP\r\n" + stream[40:]      # SKIP lands mid-stream
    sizes = [rnd.randint(1, 30) for _ in range(6)]
    diff(scenario_protocol, chunks=support.chunked(stream, sizes), use_poll=use_poll)


# ---------------------------------------------------------------------------
# producers, close_when_done
# ---------------------------------------------------------------------------

class ListProducer:
    def __init__(self, parts):
        self.parts = list(parts)

    def more(self):
        return self.parts.pop(0) if self.parts else b""


def scenario_producers(asyncore, asynchat, use_poll, close):
    K = support.kit(asyncore, asynchat)
    m = {}
    a, b = socket.socketpair()
    try:
        chat = K.IOChat(a, map=m, terminator=b"\n")
        chat.record_sends = True
        reader = PeerReader(b)
        chat.push(b"head ")
        chat.push_with_producer(asynchat.simple_producer(b"s" * 3000, buffer_size=700))
        chat.push(b"")
        chat.push_with_producer(ListProducer([b"p1 ", b"", b"x" * 70000, b"p3 "]))
        chat.push(bytearray(b"y" * 140000))
        chat.push_with_producer(asynchat.simple_producer(b"tail"))
        if close:
            chat.close_when_done()
            run_until(asyncore, m, lambda: reader.at_eof(), use_poll=use_poll)
        else:
            _settle(asyncore, m, chat, reader, use_poll)
        return snapshot({"events": chat.events, "out": bytes(reader.buf), "eof": reader.at_eof(),
                "in_map": bool(m)})
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("close", [False, True], ids=["open", "close_when_done"])
def test_producers(diff, use_poll, close):
    res = diff(scenario_producers, use_poll=use_poll, close=close)
    # a producer's empty more() ends it: ListProducer stops at its b""
    expected = b"head " + b"s" * 3000 + b"p1 " + b"y" * 140000 + b"tail"
    assert res["out"] == expected
    assert res["eof"] is close


# ---------------------------------------------------------------------------
# the peer closes
# ---------------------------------------------------------------------------

def scenario_peer_closes(asyncore, asynchat, transport, use_poll, payload, echo):
    K = support.kit(asyncore, asynchat)
    m = {}
    a, b = support.make_pair(transport)
    try:
        chat = (K.IOEchoChat if echo else K.IOChat)(a, map=m, terminator=b"\n")
        b.sendall(payload)
        b.close()
        select.select([a], [], [], 5)
        run_until(asyncore, m, lambda: not m, use_poll=use_poll)
        return snapshot({"events": chat.events, "lines": chat.lines,
                         "incoming": list(chat.incoming), "connected": chat.connected})
    finally:
        asyncore.close_all(map=m, ignore_all=True)


def close_once(events):
    """handle_close/close after the first handle_close dropped (fastcore
    runs handle_close at most once; the reference may repeat it)."""
    out = []
    closed = False
    for ev in events:
        if ev[0] in ("handle_close", "close") and closed:
            continue
        if ev[0] == "handle_close":
            closed = True
        out.append(ev)
    return out


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("payload", [b"", b"one\ntwo\npartial"], ids=["empty", "data"])
@pytest.mark.parametrize("echo", [False, True], ids=["quiet", "echo"])
def test_peer_closes(diff, use_poll, transport, payload, echo):
    def normalise(res):
        res = dict(res)
        events = res["events"]
        if use_poll and transport == "unix":
            # POLLHUP with the data: the reference closes right after the read
            events = support.drop(events, "handle_read")
        if echo:
            # pushing to the closed peer closes (EPIPE) before the HUP does
            events = close_once(events)
        res["events"] = events
        return res

    if not payload and use_poll and transport == "unix":
        pytest.skip("reference calls handle_close twice here (HUP after the b'' read): "
                    "covered by test_fixes")
    res = diff(scenario_peer_closes, normalise=normalise, transport=transport,
               use_poll=use_poll, payload=payload, echo=echo)
    assert res["connected"] is False
    assert [e for e in res["events"] if e[0] == "handle_close"] == [("handle_close",)]


# ---------------------------------------------------------------------------
# accept + echo, errors in handlers
# ---------------------------------------------------------------------------

def scenario_accept_echo(asyncore, asynchat, use_poll):
    K = support.kit(asyncore, asynchat)
    m = {}
    try:
        server = K.EchoServer(m, handler_class=K.IOEchoChat)
        c = socket.create_connection(server.address)
        reader = PeerReader(c)
        run_until(asyncore, m, lambda: server.handlers, use_poll=use_poll)
        h = server.handlers[0]
        expected = b""
        for chunk, echo in ((b"abc\n", b"abc\n"), (b"de", b""), (b"f\ng\nh", b"def\ng\n"),
                            (b"\n", b"h\n")):
            c.sendall(chunk)
            select.select([h.socket], [], [], 5)           # arrived
            expected += echo
            n = len(expected)
            run_until(asyncore, m, lambda n=n: support.consumed(h) and reader.has(n),
                      use_poll=use_poll)
        c.close()
        run_until(asyncore, m, lambda: len(m) == 1, use_poll=use_poll)
        return snapshot({"server": server.events, "handler": h.events,
                "lines": h.lines, "out": bytes(reader.buf)})
    finally:
        asyncore.close_all(map=m, ignore_all=True)


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_accept_echo(diff, use_poll):
    res = diff(scenario_accept_echo, use_poll=use_poll)
    assert res["lines"] == [b"abc", b"def", b"g", b"h"]
    assert res["out"] == b"abc\ndef\ng\nh\n"
    assert res["server"] == [("handle_accepted",)]


def scenario_handler_raises(asyncore, asynchat, use_poll, exc_name):
    K = support.kit(asyncore, asynchat)
    exc = asyncore.ExitNow if exc_name == "ExitNow" else ValueError

    class Fragile(K.IOChat):
        def on_line(self, line):
            if line == b"boom":
                raise exc("boom")

    m = {}
    a, b = socket.socketpair()
    try:
        chat = Fragile(a, map=m, terminator=b"\n")
        chat.log_info = lambda *args: None
        b.sendall(b"ok\nboom\nafter\n")
        raised = None
        try:
            run_until(asyncore, m, lambda: not m, use_poll=use_poll)
        except asyncore.ExitNow:
            raised = "ExitNow"
        return snapshot({"events": chat.events, "raised": raised, "in_map": bool(m),
                "lines": chat.lines, "in_buffer": chat.ac_in_buffer})
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("exc_name", ["ValueError", "ExitNow"])
def test_handler_raises(diff, use_poll, exc_name):
    res = diff(scenario_handler_raises, use_poll=use_poll, exc_name=exc_name)
    if exc_name == "ExitNow":
        assert res["raised"] == "ExitNow" and res["in_map"]
    else:
        assert ("handle_error", "ValueError") in res["events"] and not res["in_map"]


# ---------------------------------------------------------------------------
# plain dispatchers: readwrite paths with several dispatchers
# ---------------------------------------------------------------------------

def scenario_readers(asyncore, asynchat, use_poll):
    """Several readers; one closes the others' peers; per-object sequences."""
    K = support.kit(asyncore, asynchat)
    m = {}
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        readers = [K.Reader(a, map=m) for a, _ in pairs]
        for i, (_, b) in enumerate(pairs):
            b.sendall(b"r%d" % i)
        run_until(asyncore, m, lambda: all(r.data for r in readers), use_poll=use_poll)
        readers[1].send(b"x" * 10)
        readers[2].out_buffer = b"queued"
        run_until(asyncore, m, lambda: not readers[2].out_buffer, use_poll=use_poll)
        got = [support.recv_available(b)[0] for _, b in pairs]
        pairs[3][1].sendall(b"last")
        run_until(asyncore, m, lambda: readers[3].data.endswith(b"last"), use_poll=use_poll)
        return snapshot({"events": [r.events for r in readers],
                         "data": [bytes(r.data) for r in readers],
                "got": got})
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        for _, b in pairs:
            b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_readers(diff, use_poll):
    res = diff(scenario_readers, use_poll=use_poll)
    assert res["got"] == [b"", b"x" * 10, b"queued", b""]


# ---------------------------------------------------------------------------
# interest tracking: the state writable() depends on, changed directly
# ---------------------------------------------------------------------------

def scenario_direct_state_changes(asyncore, asynchat, use_poll):
    """Fixed numbers of iterations after each direct change of the state
    ``writable()`` reads; what is written and which handlers run must match."""
    import collections
    K = support.kit(asyncore, asynchat)
    m = {}
    a, b = socket.socketpair()
    wa, wb = socket.socketpair()
    steps = []
    try:
        chat = K.IOChat(a, map=m, terminator=b"\n")
        chat.record_sends = True
        ws = K.Reader(wa, map=m)
        reader, wreader = PeerReader(b), PeerReader(wb)

        def step(name, action, n=3):
            action()
            support.run_iterations(asyncore, m, n, use_poll=use_poll)
            reader.drain()
            wreader.drain()
            steps.append((name, len(getattr(chat, "events", ())), len(getattr(ws, "events", ())),
                          bytes(reader.buf),
                          bytes(wreader.buf), len(chat.producer_fifo)))

        step("append", lambda: chat.producer_fifo.append(b"a"))
        step("extend", lambda: chat.producer_fifo.extend([b"b", b"c"]))
        step("appendleft", lambda: chat.producer_fifo.appendleft(b"d"))
        step("append+clear", lambda: (chat.producer_fifo.append(b"X"), chat.producer_fifo.clear()))
        step("append+del", lambda: (chat.producer_fifo.append(b"Y"), chat.producer_fifo.pop()))
        step("new deque", lambda: setattr(chat, "producer_fifo", collections.deque([b"e"])))
        step("append to new", lambda: chat.producer_fifo.append(b"f"))
        step("disconnected", lambda: (setattr(chat, "connected", False),
                                      chat.producer_fifo.append(b"g")))
        step("reconnected", lambda: setattr(chat, "connected", True))
        step("out_buffer", lambda: setattr(ws, "out_buffer", b"w1"))
        step("out_buffer+clear", lambda: (setattr(ws, "out_buffer", b"Z"),
                                          setattr(ws, "out_buffer", b"")))
        step("ws disconnected", lambda: setattr(ws, "connected", False))
        step("ws reconnected", lambda: (setattr(ws, "connected", True),
                                        setattr(ws, "out_buffer", b"w2")))
        step("accepting", lambda: (setattr(ws, "accepting", True),
                                   setattr(ws, "out_buffer", b"w3")))
        step("not accepting", lambda: setattr(ws, "accepting", False))
        step("close_when_done", lambda: (chat.push(b"h"), chat.close_when_done()))
        return snapshot({"steps": steps, "chat": getattr(chat, "events", []),
                         "ws": getattr(ws, "events", []),
                         "eof": reader.at_eof()})
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()
        wb.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_direct_state_changes(diff, use_poll):
    res = diff(scenario_direct_state_changes, use_poll=use_poll)
    assert res["steps"][-1][3] == b"abcdefgh"
    assert res["steps"][-1][4] == b"w1w2w3"
    assert res["eof"] is True


def scenario_close_in_found_terminator(asyncore, asynchat, use_poll, chunks):
    K = support.kit(asyncore, asynchat)

    class Quitter(K.IOChat):
        def on_line(self, line):
            if line == b"QUIT":
                self.push(b"bye\n")
                self.close()
            elif line == b"RESET":
                self.discard_buffers()
            else:
                self.push(line + b"\n")

    m = {}
    a, b = socket.socketpair()
    try:
        chat = Quitter(a, map=m, terminator=b"\n")
        chat.record_sends = True
        reader = PeerReader(b)
        for chunk in chunks:
            b.sendall(chunk)
            run_until(asyncore, m, lambda: support.consumed(chat), use_poll=use_poll)
            reader.drain()
        support.run_iterations(asyncore, m, 2, use_poll=use_poll)
        return snapshot({"events": chat.events, "lines": chat.lines,
                         "out": bytes(reader.drain().buf),
                         "in_map": bool(m), "incoming": list(chat.incoming),
                         "fifo": [bytes(x) for x in chat.producer_fifo if x is not None]})
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("chunks", [
    [b"a\nQUIT\nb\nc"],
    [b"a\nRES", b"ET\nlost\npart", b"ial\nQUIT\n"],
], ids=["quit", "reset-quit"])
def test_close_in_found_terminator(diff, use_poll, chunks):
    diff(scenario_close_in_found_terminator, use_poll=use_poll, chunks=chunks)


# ---------------------------------------------------------------------------
# a loop run from inside a handler (re-entrancy)
# ---------------------------------------------------------------------------

def scenario_nested_loop(asyncore, asynchat, use_poll, same_map, b_ready_outside=False):
    """A's handler runs a nested loop until B (same map, or another map)
    received a line; the outer iteration then goes on.

    With ``b_ready_outside`` B already has input when the outer iteration
    starts: whether B or A is dispatched first there is not part of the
    contract, so that variant is checked on the modules under test only.
    """
    K = support.kit(asyncore, asynchat)
    outer = {}
    inner = outer if same_map else {}
    a1, a2 = socket.socketpair()
    b1, b2 = socket.socketpair()
    try:
        B = K.IOChat(b1, map=inner, terminator=b"\n")

        class Caller(K.IOChat):
            def on_line(self, line):
                if line == b"call":
                    b2.sendall(b"world\n" if b_ready_outside else b"hello world\n")
                    run_until(asyncore, inner, lambda: B.lines, use_poll=use_poll)
                    self.push(b"result " + B.lines[0] + b"\n")

        A = Caller(a1, map=outer, terminator=b"\n")
        reader = PeerReader(a2)
        if b_ready_outside:
            b2.sendall(b"hello ")
        a2.sendall(b"call\nnext\n")
        run_until(asyncore, outer, lambda: len(A.lines) == 2 and reader.has(19),
                  use_poll=use_poll)
        support.run_iterations(asyncore, outer, 2, use_poll=use_poll)
        return snapshot({"A": A.events, "B": B.events, "out": bytes(reader.drain().buf),
                         "maps": (len(outer), len(inner)), "B_lines": B.lines})
    finally:
        asyncore.close_all(map=outer, ignore_all=True)
        asyncore.close_all(map=inner, ignore_all=True)
        a2.close()
        b2.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("same_map", [True, False], ids=["same-map", "other-map"])
def test_nested_loop(diff, use_poll, same_map):
    res = diff(scenario_nested_loop, use_poll=use_poll, same_map=same_map)
    assert res["out"] == b"result hello world\n"
    assert [e for e in res["A"] if e[0] in ("found", "handle_error")] == [("found",), ("found",)]


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_nested_loop_with_stale_outer_event(modules, use_poll):
    """B is ready in the outer iteration and is drained by the nested loop:
    its (now stale) outer event must do no harm."""
    res = scenario_nested_loop(modules[0], modules[1], use_poll=use_poll, same_map=True,
                               b_ready_outside=True)
    assert res["out"] == b"result hello world\n"
    assert res["B_lines"] == [b"hello world"]
    for who in ("A", "B"):
        assert not [e for e in res[who] if e[0] in ("handle_error", "handle_close")], res[who]
    assert res["maps"] == (2, 2)
