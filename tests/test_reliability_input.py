"""Reliability: bad input to async_chat.

A line that never ends (the opt-in ``fastcore.limit_line_length`` cap), binary garbage
and NUL bytes, terminators split across thousands of one-byte reads, and
rejected ``set_terminator`` values leaving the chat as it was.  (The type
checks of ``set_terminator`` themselves are in test_asynchat.py.)
"""

import random
import socket

import pytest
import support
from support import USE_POLL, PeerReader, feed, pump, run_until

fastcore_only = pytest.mark.fastcore_only
LIMIT = 64


def _capped(kit, limit=LIMIT):
    from fastcore import limit_line_length

    class Capped(kit.EchoChat):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            limit_line_length(self, limit)
    return Capped


def _collected(chat):
    """Bytes handed to collect_incoming_data since the last found_terminator."""
    n = 0
    for ev in chat.events:
        if ev[0] == "collect":
            n += len(ev[1])
        elif ev[0] == "found":
            n = 0
    return n


# ---------------------------------------------------------------------------
# fastcore.limit_line_length
# ---------------------------------------------------------------------------

@fastcore_only
def test_line_length_limit_is_off_by_default(fastcore_pkg, kit, sockmap):
    a, b = socket.socketpair()
    c = kit.EchoChat(a, map=sockmap)
    assert fastcore_pkg.get_line_length_limit(c) is None
    fastcore_pkg.limit_line_length(c, 10)
    assert fastcore_pkg.get_line_length_limit(c) == 10
    fastcore_pkg.limit_line_length(c, None)
    assert fastcore_pkg.get_line_length_limit(c) is None
    b.close()


@fastcore_only
def test_max_line_length_of_a_subclass_is_its_own(asyncore, kit, sockmap):
    """asynchat defines no max_line_length: the core neither reads nor checks it."""
    class Own(kit.EchoChat):
        max_line_length = "unlimited"

    a, b = socket.socketpair()
    c = Own(a, map=sockmap, terminator=b"\n")
    Own.max_line_length = 4
    reader = PeerReader(b)
    b.sendall(b"a long line\n")
    assert pump(asyncore, sockmap, reader, 12) == b"a long line\n"
    assert c.lines == [b"a long line"] and c.count("handle_error") == 0
    b.close()


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("term", [b"\n", b"\r\n", b"<<END-OF-RECORD-20>>"],
                         ids=["LF", "CRLF", "20-byte"])
def test_overlong_line_closes_only_that_connection(asyncore, kit, sockmap, capsys, use_poll,
                                                   term):
    Capped = _capped(kit)
    a, b = socket.socketpair()
    victim = Capped(a, map=sockmap, terminator=term)
    oa, ob = socket.socketpair()
    other = Capped(oa, map=sockmap, terminator=term)
    other_reader = PeerReader(ob)

    b.sendall(b"short" + term + b"y" * (LIMIT + 1))
    ob.sendall(b"before" + term)
    pump(asyncore, sockmap, other_reader, 6 + len(term), use_poll=use_poll)
    run_until(asyncore, sockmap, lambda: victim not in sockmap.values(), use_poll=use_poll,
              what="over-long line closed")

    assert victim.lines == [b"short"]
    assert victim.count("handle_close") == 1, victim.events
    assert _collected(victim) <= LIMIT
    assert victim.socket is None or victim.socket.fileno() == -1
    out = capsys.readouterr().out
    assert "line longer than its limit" in out and str(LIMIT) in out, out
    assert PeerReader(b).at_eof()
    # the other connection is served as before
    ob.sendall(b"after" + term)
    got = pump(asyncore, sockmap, other_reader, 11 + 2 * len(term), use_poll=use_poll)
    assert got == b"before" + term + b"after" + term
    assert other.lines == [b"before", b"after"]
    b.close()
    ob.close()


@fastcore_only
@pytest.mark.parametrize("term", [b"\n", b"\r\n.\r\n"], ids=["LF", "dot"])
@pytest.mark.parametrize("whole", [True, False], ids=["one-read", "byte-by-byte"])
def test_line_of_exactly_the_limit_is_delivered(asyncore, kit, sockmap, term, whole):
    Capped = _capped(kit)
    a, b = socket.socketpair()
    c = Capped(a, map=sockmap, terminator=term)
    # the line ends with a terminator prefix that turns out to be data
    line = b"x" * (LIMIT - len(term) + 1) + term[:-1]
    assert len(line) == LIMIT
    stream = line + term + line + term
    chunks = [stream] if whole else [stream[i:i + 1] for i in range(len(stream))]
    feed(asyncore, sockmap, c, b, chunks)
    assert c.lines == [line, line]
    assert c in sockmap.values()
    feed(asyncore, sockmap, c, b, [b"z" + line + term])
    run_until(asyncore, sockmap, lambda: c not in sockmap.values())
    assert c.lines == [line, line]
    b.close()


@fastcore_only
def test_line_that_never_ends_from_a_flooding_peer(asyncore, kit, sockmap, capsys):
    """A peer sending 16 MiB without a terminator: closed after the cap, not
    buffered, no MemoryError; the sender sees the connection go away."""
    limit = 1 << 20
    Capped = _capped(kit, limit)
    a, b = support.tcp_pair()
    c = Capped(a, map=sockmap)

    def flood():
        block = b"\0garbage" * 8192
        sent = 0
        try:
            while sent < 16 << 20:
                b.sendall(block)
                sent += len(block)
        except OSError:
            return sent, True
        return sent, False

    t = support.start_thread(flood)
    run_until(asyncore, sockmap, lambda: c not in sockmap.values(), timeout=20,
              what="flooding connection closed")
    assert _collected(c) <= limit
    assert c.count("handle_error") == 0
    assert "line longer than its limit" in capsys.readouterr().out
    # closed with unread data: the kernel resets, which ends sendall()
    sent, failed = t.finish(timeout=20)
    assert failed and sent < 16 << 20
    b.close()


@fastcore_only
def test_cap_does_not_apply_to_counts_and_none(asyncore, kit, sockmap):
    class Proto(_capped(kit, 8)):
        """'N' announces a 100-byte block, 'R' switches to raw (None)."""

        def on_line(self, line):
            if line == b"N":
                self.set_terminator(100)
            elif line == b"R":
                self.set_terminator(None)
            elif isinstance(self.get_terminator(), int):
                self.set_terminator(b"\n")

    a, b = socket.socketpair()
    c = Proto(a, map=sockmap)
    block = bytes(range(100))
    feed(asyncore, sockmap, c, b, [b"N\n" + block[:50], block[50:] + b"abc\nR\n",
                                   b"r" * 300])
    assert c.lines == [b"N", block, b"abc", b"R"]
    assert c in sockmap.values()
    assert _collected(c) == 300
    b.close()


@fastcore_only
def test_cap_counts_from_the_last_terminator(asyncore, kit, sockmap):
    """Many short lines adding up to far more than the cap are fine."""
    Capped = _capped(kit, 10)
    a, b = socket.socketpair()
    c = Capped(a, map=sockmap)
    lines = [b"%09d" % i for i in range(300)]
    feed(asyncore, sockmap, c, b, support.chunked(b"\n".join(lines) + b"\n", [7, 13, 1]))
    assert c.lines == lines
    c.discard_buffers()
    feed(asyncore, sockmap, c, b, [b"0123456789\n"])
    assert c.lines[-1] == b"0123456789"
    b.close()


# ---------------------------------------------------------------------------
# binary garbage, NUL bytes
# ---------------------------------------------------------------------------

def _split_reference(stream, term):
    *lines, rest = stream.split(term)
    return lines, rest


@pytest.mark.parametrize("term", [b"\0", b"\0\0", b"\n", b"\x00\xff\x00", b"\xff" * 5],
                         ids=["NUL", "NULNUL", "LF", "NUL-FF-NUL", "FFx5"])
def test_binary_garbage_with_nul_bytes(asyncore, kit, sockmap, term):
    rnd = random.Random(term)
    # a small alphabet so that terminators and near-misses are frequent
    alphabet = b"\0\xff\n\r" + bytes(range(1, 8))
    stream = bytes(rnd.choice(alphabet) for _ in range(20000))
    a, b = socket.socketpair()
    c = kit.Chat(a, map=sockmap, terminator=term)
    sizes = [rnd.randint(1, 300) for _ in range(40)]
    feed(asyncore, sockmap, c, b, support.chunked(stream, sizes))
    lines, rest = _split_reference(stream, term)
    assert c.lines == lines
    assert b"".join(c.incoming) + c.ac_in_buffer == rest
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_echo_server_survives_random_binary_floods(asyncore, kit, sockmap, use_poll):
    """Several clients send 256 KiB of random bytes each over TCP: every line
    comes back intact, on every connection."""
    server = kit.EchoServer(sockmap)
    rnd = random.Random(8)
    clients = []
    for _ in range(4):
        s = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
        payload = rnd.randbytes(256 * 1024) if hasattr(rnd, "randbytes") else \
            bytes(rnd.getrandbits(8) for _ in range(256 * 1024))
        last = payload.rfind(b"\n")
        clients.append((s, payload, payload[:last + 1]))
    senders = [support.start_thread(s.sendall, p) for s, p, _ in clients]
    readers = [PeerReader(s) for s, _, _ in clients]
    run_until(asyncore, sockmap,
              lambda: all(r.has(len(e)) for r, (_, _, e) in zip(readers, clients)),
              timeout=30, use_poll=use_poll, what="all echoes")
    for t in senders:
        t.finish()
    for r, (s, _, expected) in zip(readers, clients):
        assert bytes(r.buf) == expected
        s.close()
    assert all(h.count("handle_error") == 0 for h in server.handlers)


# ---------------------------------------------------------------------------
# terminators split across thousands of one-byte reads
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("kind", ["distinct", "self-overlapping"])
def test_long_terminator_over_one_byte_reads(asyncore, kit, sockmap, use_poll, kind):
    if kind == "distinct":
        term = bytes(random.Random(5).getrandbits(8) for _ in range(1024))
    else:
        term = b"ab" * 600 + b"c"
    # near misses: the terminator minus its last byte, then a wrong byte
    line1 = term[:-1] + b"X" + term[:len(term) // 2] + b"Y"
    line2 = b"\0" * 10
    stream = line1 + term + line2 + term + term[:-1]
    assert stream.split(term)[:2] == [line1, line2]
    a, b = socket.socketpair()
    c = kit.Chat(a, map=sockmap, terminator=term)
    c.ac_in_buffer_size = 1
    b.sendall(stream)
    n = run_until(asyncore, sockmap, lambda: support.consumed(c), use_poll=use_poll,
                  timeout=60, what="all bytes read one at a time")
    assert n >= len(stream)
    assert c.lines == [line1, line2]
    # the unfinished terminator at the end is held back, nothing else
    assert c.ac_in_buffer == term[:-1]
    assert c.incoming == []
    b.close()


# ---------------------------------------------------------------------------
# a rejected set_terminator changes nothing
# ---------------------------------------------------------------------------

@fastcore_only
@pytest.mark.parametrize("bad,exc", [("\n", TypeError), (-1, ValueError), (1.0, TypeError),
                                     ([b"\n"], TypeError)],
                         ids=["str", "negative", "float", "list"])
def test_rejected_terminator_leaves_chat_working(asyncore, kit, sockmap, bad, exc):
    a, b = socket.socketpair()
    c = kit.EchoChat(a, map=sockmap, terminator=b"\r\n")
    with pytest.raises(exc):
        c.set_terminator(bad)
    assert c.get_terminator() == b"\r\n"
    reader = PeerReader(b)
    b.sendall(b"still\r\n")
    assert pump(asyncore, sockmap, reader, 7) == b"still\r\n"
    b.close()


@fastcore_only
def test_bad_line_length_limit_is_refused_at_the_call(fastcore_pkg, asyncore, kit, sockmap):
    a, b = socket.socketpair()
    c = kit.Chat(a, map=sockmap)
    for bad, exc in ((-1, ValueError), (10.0, TypeError), ("10", TypeError), (True, TypeError)):
        with pytest.raises(exc):
            fastcore_pkg.limit_line_length(c, bad)
    assert fastcore_pkg.get_line_length_limit(c) is None
    for not_a_chat in (None, asyncore.dispatcher(map={}), object()):
        with pytest.raises(TypeError):
            fastcore_pkg.limit_line_length(not_a_chat, 10)
        with pytest.raises(TypeError):
            fastcore_pkg.get_line_length_limit(not_a_chat)
    b.close()
