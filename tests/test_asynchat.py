"""asynchat.async_chat over real sockets: terminators, buffers, producers."""

import random
import socket

import pytest
import support
from support import USE_POLL, PeerReader, feed, pump, run_until

TERM20 = b"<<END-OF-RECORD-20>>"
assert len(TERM20) == 20

MESSAGES = {
    b"\n": [b"hello", b"", b"world wide", b"x", b"\r"],
    b"\r\n": [b"GET / HTTP/1.0", b"", b"a\rb\nc", b"\n", b"tail\r"],
    b"\r\n.\r\n": [b"line1\r\nline2", b".\r\n", b"", b"a\r\n.b\r\n", b"\r\n\r\n"],
    TERM20: [b"<<END-OF-RECORD-20", b"<", b"record <<END", b"", b">>"],
}
TERMINATORS = list(MESSAGES)
TERM_IDS = ["LF", "CRLF", "CRLF.CRLF", "20-byte"]


def _stream(term):
    msgs = MESSAGES[term]
    for m in msgs:            # each message ends exactly at its terminator
        assert (m + term).find(term) == len(m), (m, term)
    return msgs, b"".join(m + term for m in msgs)


@pytest.fixture
def chat_pair(kit, sockmap):
    """(chat, peer): a recording Chat on one end of a socketpair."""
    made = []

    def make(cls=None, terminator=b"\n"):
        a, b = socket.socketpair()
        c = (cls or kit.Chat)(a, map=sockmap, terminator=terminator)
        made.append(b)
        return c, b

    yield make
    for b in made:
        b.close()


# ---------------------------------------------------------------------------
# echo
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
def test_line_echo_tcp(asyncore, kit, sockmap, use_poll):
    server = kit.EchoServer(sockmap)
    c = socket.create_connection(server.address)
    reader = PeerReader(c)
    c.sendall(b"hello\nworld\n")
    assert pump(asyncore, sockmap, reader, 12, use_poll=use_poll) == b"hello\nworld\n"
    c.sendall(b"part")
    support.run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    c.sendall(b"ial\n")
    assert pump(asyncore, sockmap, reader, 20, use_poll=use_poll) == b"hello\nworld\npartial\n"
    assert server.handlers[0].lines == [b"hello", b"world", b"partial"]
    c.close()
    run_until(asyncore, sockmap, lambda: len(sockmap) == 1, use_poll=use_poll)


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_chat_client_and_server(asyncore, kit, sockmap, use_poll):
    server = kit.EchoServer(sockmap, handler_class=kit.EchoChat)
    client = kit.ClientChat(server.address, sockmap, payload=b"one\ntwo\nthree\n")
    run_until(asyncore, sockmap, lambda: len(client.lines) == 3, use_poll=use_poll)
    assert client.lines == [b"one", b"two", b"three"]
    assert server.handlers[0].lines == [b"one", b"two", b"three"]
    client.close_when_done()
    run_until(asyncore, sockmap, lambda: len(sockmap) == 1, use_poll=use_poll)
    assert client.count("handle_close") == 1


# ---------------------------------------------------------------------------
# terminators split across reads
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("term", TERMINATORS, ids=TERM_IDS)
def test_terminator_split_at_every_offset(asyncore, sockmap, chat_pair, term):
    msgs, stream = _stream(term)
    c, peer = chat_pair(terminator=term)
    for k in range(1, len(stream)):
        feed(asyncore, sockmap, c, peer, [stream[:k], stream[k:]])
        assert c.lines == msgs, k
        assert c.ac_in_buffer == b"" and c.incoming == []
        del c.lines[:]


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("term", TERMINATORS, ids=TERM_IDS)
def test_terminator_byte_by_byte(asyncore, sockmap, chat_pair, term, use_poll):
    msgs, stream = _stream(term)
    c, peer = chat_pair(terminator=term)
    feed(asyncore, sockmap, c, peer, [stream[i:i + 1] for i in range(len(stream))],
         use_poll=use_poll)
    assert c.lines == msgs
    # nothing beyond a (possible) terminator prefix is held back
    assert c.ac_in_buffer == b""


@pytest.mark.parametrize("stream,term,lines", [
    (b"ab\r\ncd\r\n", b"\r\n", [b"ab", b"cd"]),
    (b"\r\n\r\nx\r\r\n", b"\r\n", [b"", b"", b"x\r"]),
    (b"\r\n.\r\nb\r\n.\r\n", b"\r\n.\r\n", [b"", b"b"]),
], ids=["CRLF", "CRLF-empty", "dot"])
def test_terminator_every_chunking(asyncore, sockmap, chat_pair, stream, term, lines):
    c, peer = chat_pair(terminator=term)
    n = 0
    for pieces in support.all_chunkings(stream):
        feed(asyncore, sockmap, c, peer, pieces)
        assert c.lines == lines, pieces
        del c.lines[:]
        n += 1
    assert n == 2 ** (len(stream) - 1)


def test_terminator_prefix_held_back(asyncore, sockmap, chat_pair):
    c, peer = chat_pair(terminator=b"\r\n.\r\n")
    feed(asyncore, sockmap, c, peer, [b"abc\r\n."])
    assert c.ac_in_buffer == b"\r\n."
    assert c.events == [("collect", b"abc")]
    feed(asyncore, sockmap, c, peer, [b"x"])
    assert c.ac_in_buffer == b""
    assert c.events[1:] == [("collect", b"\r\n.x")]
    feed(asyncore, sockmap, c, peer, [b"\r\n.\r\n"])
    assert c.lines == [b"abc\r\n.x"]
    assert c.events[2:] == [("found",)]


def test_many_lines_in_one_read(asyncore, sockmap, chat_pair):
    c, peer = chat_pair(terminator=b"\n")
    lines = [("line %d" % i).encode() for i in range(500)]
    feed(asyncore, sockmap, c, peer, [b"\n".join(lines) + b"\n"])
    assert c.lines == lines


# ---------------------------------------------------------------------------
# numeric and None terminators
# ---------------------------------------------------------------------------

def test_int_terminator_spanning_reads(asyncore, sockmap, chat_pair):
    c, peer = chat_pair(terminator=10)
    seen = []
    for chunk in (b"abc", b"def", b"ghi"):
        feed(asyncore, sockmap, c, peer, [chunk])
        seen.append(c.get_terminator())
    assert seen == [7, 4, 1]
    assert c.lines == []
    feed(asyncore, sockmap, c, peer, [b"jkl"])
    assert c.lines == [b"abcdefghij"]
    assert c.get_terminator() == 0
    assert c.events == [("collect", b"abc"), ("collect", b"def"), ("collect", b"ghi"),
                        ("collect", b"j"), ("found",), ("collect", b"kl")]


def test_int_terminator_zero_collects_everything(asyncore, sockmap, chat_pair):
    c, peer = chat_pair(terminator=0)
    feed(asyncore, sockmap, c, peer, [b"abc", b"\n\n", b"def"])
    assert c.events == [("collect", b"abc"), ("collect", b"\n\n"), ("collect", b"def")]
    assert c.get_terminator() == 0


def test_int_terminator_exact_and_reset(asyncore, kit, sockmap, chat_pair):
    class Records(kit.Chat):
        def on_line(self, line):
            self.set_terminator(4)

    c, peer = chat_pair(Records, terminator=4)
    feed(asyncore, sockmap, c, peer, [b"aaaabbbbccccdd", b"dd"])
    assert c.lines == [b"aaaa", b"bbbb", b"cccc", b"dddd"]
    assert c.get_terminator() == 4


def test_none_terminator(asyncore, sockmap, chat_pair):
    c, peer = chat_pair(terminator=None)
    feed(asyncore, sockmap, c, peer, [b"any\r\n", b"thing\n"])
    assert c.events == [("collect", b"any\r\n"), ("collect", b"thing\n")]
    assert c.get_terminator() is None
    assert c.lines == []


def test_empty_bytes_terminator_collects_everything(asyncore, sockmap, chat_pair):
    c, peer = chat_pair(terminator=b"")
    feed(asyncore, sockmap, c, peer, [b"abc\n"])
    assert c.events == [("collect", b"abc\n")]


# ---------------------------------------------------------------------------
# changing the terminator inside found_terminator
# ---------------------------------------------------------------------------

def _http_class(kit):
    class HTTPish(kit.Chat):
        """Headers up to a blank line, then a Content-Length body, repeat."""

        def __init__(self, sock, map, terminator=None):
            kit.Chat.__init__(self, sock, map, terminator=b"\r\n\r\n")
            self.requests = []
            self.headers = None

        def on_line(self, data):
            if self.headers is None:
                length = 0
                for line in data.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    self.headers = data
                    self.set_terminator(length)
                else:
                    self.requests.append((data, b""))
            else:
                self.requests.append((self.headers, data))
                self.headers = None
                self.set_terminator(b"\r\n\r\n")

    return HTTPish


HTTP_STREAM = (b"POST /a HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello\r\n\r\n!!"
               b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /c HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz")
HTTP_REQUESTS = [
    (b"POST /a HTTP/1.1\r\nContent-Length: 11", b"hello\r\n\r\n!!"),
    (b"GET /b HTTP/1.1\r\nHost: x", b""),
    (b"POST /c HTTP/1.1\r\nContent-Length: 3", b"xyz"),
]


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_terminator_changed_in_found_terminator(asyncore, kit, sockmap, chat_pair, use_poll):
    c, peer = chat_pair(_http_class(kit))
    feed(asyncore, sockmap, c, peer, [HTTP_STREAM], use_poll=use_poll)
    assert c.requests == HTTP_REQUESTS
    assert c.get_terminator() == b"\r\n\r\n"


def test_terminator_changed_split_at_every_offset(asyncore, kit, sockmap, chat_pair):
    c, peer = chat_pair(_http_class(kit))
    for k in range(1, len(HTTP_STREAM)):
        feed(asyncore, sockmap, c, peer, [HTTP_STREAM[:k], HTTP_STREAM[k:]])
        assert c.requests == HTTP_REQUESTS, k
        del c.requests[:]


def test_found_terminator_swapped_on_instance(asyncore, asynchat, sockmap):
    """The state-machine idiom: ``self.found_terminator = self.next_state``
    (and the same for collect_incoming_data) on the instance."""
    class Machine(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map)
            self.log = []
            self.buf = []
            self.set_terminator(b"\n")
            self.found_terminator = self.found_header
            self.collect_incoming_data = self.collect_text

        def collect_text(self, data):
            self.buf.append(bytes(data))

        def collect_body(self, data):
            self.buf.append(bytes(data).upper())

        def found_header(self):
            self.log.append(("header", b"".join(self.buf)))
            self.buf = []
            self.set_terminator(4)
            self.found_terminator = self.found_body
            self.collect_incoming_data = self.collect_body

        def found_body(self):
            self.log.append(("body", b"".join(self.buf)))
            self.buf = []
            self.set_terminator(b"\n")
            self.found_terminator = self.found_header
            self.collect_incoming_data = self.collect_text

    a, b = socket.socketpair()
    c = Machine(a, sockmap)
    feed(asyncore, sockmap, c, b, [b"h1\nabcdh2\nef", b"gh"])
    assert c.log == [("header", b"h1"), ("body", b"ABCD"), ("header", b"h2"), ("body", b"EFGH")]
    b.close()


def test_terminator_attribute_assigned_directly(asyncore, kit, sockmap, chat_pair):
    """``self.terminator = ...`` (no set_terminator) takes effect at once."""
    class Direct(kit.Chat):
        def on_line(self, line):
            if line == b"BIN":
                self.terminator = 3
            elif self.terminator == 0:
                self.terminator = b"\n"

    c, peer = chat_pair(Direct)
    feed(asyncore, sockmap, c, peer, [b"a\nBIN\nxyzb\n"])
    assert c.lines == [b"a", b"BIN", b"xyz", b"b"]
    c.terminator = b"::"
    feed(asyncore, sockmap, c, peer, [b"p::q:", b":"])
    assert c.lines[4:] == [b"p", b"q"]


def test_ac_in_buffer_size_changed_at_run_time(asyncore, kit, sockmap, chat_pair):
    c, peer = chat_pair(terminator=None)
    c.ac_in_buffer_size = 4
    feed(asyncore, sockmap, c, peer, [b"abcdefghij"])
    assert [e[1] for e in c.events] == [b"abcd", b"efgh", b"ij"]


# ---------------------------------------------------------------------------
# use_encoding, ac_in_buffer
# ---------------------------------------------------------------------------

def test_use_encoding_str_terminator(asyncore, kit, sockmap, chat_pair):
    class Enc(kit.Chat):
        use_encoding = 1

    c, peer = chat_pair(Enc, terminator="\r\n")
    assert c.terminator == b"\r\n"
    assert c.get_terminator() == b"\r\n"
    feed(asyncore, sockmap, c, peer, [b"caf\xe9\r\nna\xefve\r", b"\n"])
    assert c.lines == [b"caf\xe9", b"na\xefve"]


def test_use_encoding_other_encoding(asyncore, kit, sockmap, chat_pair):
    class Enc(kit.Chat):
        use_encoding = 1
        encoding = "utf-16-le"

    c, peer = chat_pair(Enc, terminator="\n")
    assert c.terminator == "\n".encode("utf-16-le")


def test_use_encoding_str_from_producer(asyncore, asynchat, sockmap):
    class Enc(asynchat.async_chat):
        use_encoding = 1

    class StrProducer:
        def __init__(self):
            self.parts = ["caf\xe9 ", "cr\xe8me"]

        def more(self):
            return self.parts.pop(0) if self.parts else ""

    a, b = socket.socketpair()
    c = Enc(a, map=sockmap)
    c.push_with_producer(StrProducer())
    data = pump(asyncore, sockmap, PeerReader(b), 10)
    assert data == "caf\xe9 cr\xe8me".encode("latin-1")
    b.close()


def test_ac_in_buffer_read_and_replaced_in_found_terminator(asyncore, kit, sockmap, chat_pair):
    class Swap(kit.Chat):
        def on_line(self, line):
            self.seen = getattr(self, "seen", [])
            self.seen.append(self.ac_in_buffer)
            if line == b"CMD":
                self.ac_in_buffer = b"injected\nX"

    c, peer = chat_pair(Swap)
    feed(asyncore, sockmap, c, peer, [b"CMD\nrest1\nrest2\n"])
    assert c.seen == [b"rest1\nrest2\n", b"X"]
    assert isinstance(c.seen[0], bytes)
    assert c.lines == [b"CMD", b"injected"]
    assert c.ac_in_buffer == b""          # "X" has no terminator prefix: collected
    assert c.incoming == [b"X"]
    feed(asyncore, sockmap, c, peer, [b"Y\n"])
    assert c.lines == [b"CMD", b"injected", b"XY"]


def test_ac_in_buffer_cleared_in_found_terminator(asyncore, kit, sockmap, chat_pair):
    class Drop(kit.Chat):
        def on_line(self, line):
            self.ac_in_buffer = b""

    c, peer = chat_pair(Drop)
    feed(asyncore, sockmap, c, peer, [b"first\nsecond\nthird\n"])
    assert c.lines == [b"first"]
    feed(asyncore, sockmap, c, peer, [b"fourth\nfifth\n"])
    assert c.lines == [b"first", b"fourth"]


def test_ac_in_buffer_assigned_outside_handlers(asyncore, sockmap, chat_pair):
    c, peer = chat_pair()
    feed(asyncore, sockmap, c, peer, [b"partial"])
    assert c.incoming == [b"partial"]
    c.ac_in_buffer = b"pre"
    assert c.ac_in_buffer == b"pre"
    feed(asyncore, sockmap, c, peer, [b"fix\n"])
    assert c.lines == [b"partialprefix"]


# ---------------------------------------------------------------------------
# push
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
def test_push_bytes_like(asyncore, asynchat, sockmap, use_poll):
    a, b = socket.socketpair()
    c = asynchat.async_chat(a, map=sockmap)
    c.push(b"bytes ")
    c.push(bytearray(b"bytearray "))
    c.push(memoryview(b"--memoryview--")[2:-2])
    c.push(b"")
    data = pump(asyncore, sockmap, PeerReader(b), 26, use_poll=use_poll)
    assert data == b"bytes bytearray memoryview"
    run_until(asyncore, sockmap, lambda: not c.producer_fifo, use_poll=use_poll)
    b.close()


@pytest.mark.parametrize("bad", ["text", 42, None, [b"x"]], ids=["str", "int", "None", "list"])
def test_push_rejects_non_bytes(asynchat, sockmap, bad):
    c = asynchat.async_chat(map=sockmap)
    with pytest.raises(TypeError):
        c.push(bad)
    assert len(c.producer_fifo) == 0


def test_push_splits_by_out_buffer_size(asynchat, sockmap):
    c = asynchat.async_chat(map=sockmap)          # not connected: nothing is sent
    data = bytes(bytearray(range(256))) * 782       # 200192 bytes
    c.push(data)
    sizes = [len(x) for x in c.producer_fifo]
    assert sizes == [65536, 65536, 65536, 200192 - 3 * 65536]
    assert b"".join(bytes(x) for x in c.producer_fifo) == data
    c.ac_out_buffer_size = 1000
    c.push(b"y" * 2500)
    assert [len(x) for x in c.producer_fifo][4:] == [1000, 1000, 500]


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_push_bigger_than_out_buffer(asyncore, asynchat, sockmap, use_poll):
    a, b = socket.socketpair()
    c = asynchat.async_chat(a, map=sockmap)
    data = random.Random(1).getrandbits(8 * 300000).to_bytes(300000, "little")
    c.push(data)
    assert pump(asyncore, sockmap, PeerReader(b), len(data), use_poll=use_poll) == data
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_push_to_a_registered_chat_that_cannot_send_it_at_once(asyncore, asynchat, sockmap,
                                                               use_poll):
    """The loop, which already polls the socket for reading only, finishes
    a push the socket's buffer cannot take at once; then one it can."""
    a, b = socket.socketpair()
    c = asynchat.async_chat(a, map=sockmap)
    support.run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
    data = random.Random(2).getrandbits(8 * 300000).to_bytes(300000, "little")
    c.push(data)
    reader = PeerReader(b)
    assert pump(asyncore, sockmap, reader, len(data), use_poll=use_poll) == data
    c.push(b"small")
    assert pump(asyncore, sockmap, reader, len(data) + 5, use_poll=use_poll) == data + b"small"
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_push_with_simple_producer(asyncore, asynchat, sockmap, use_poll):
    a, b = socket.socketpair()
    c = asynchat.async_chat(a, map=sockmap)
    data = bytes(bytearray(range(251))) * 400
    c.push(b"<")
    c.push_with_producer(asynchat.simple_producer(data))
    c.push_with_producer(asynchat.simple_producer(data, buffer_size=200000))
    c.push(b">")
    total = 2 + 2 * len(data)
    got = pump(asyncore, sockmap, PeerReader(b), total, use_poll=use_poll, timeout=20)
    assert got == b"<" + data + data + b">"
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_push_with_producer_one_big_chunk(asyncore, asynchat, sockmap, use_poll):
    class OneChunk:
        def __init__(self, data):
            self.data = data
            self.calls = 0

        def more(self):
            self.calls += 1
            d, self.data = self.data, b""
            return d

    a, b = socket.socketpair()
    c = asynchat.async_chat(a, map=sockmap)
    data = random.Random(2).getrandbits(8 << 22).to_bytes(4 << 20, "little")   # 4 MiB
    p = OneChunk(data)
    c.push_with_producer(p)
    got = pump(asyncore, sockmap, PeerReader(b), len(data), use_poll=use_poll, timeout=30)
    assert got == data
    run_until(asyncore, sockmap, lambda: not c.producer_fifo, use_poll=use_poll)
    assert p.calls == 2
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_close_when_done_after_pending_data(asyncore, kit, sockmap, use_poll):
    a, b = socket.socketpair()
    c = kit.IOChat(a, map=sockmap)
    data = b"z" * 150000
    c.push(data)
    c.push(b"end")
    c.close_when_done()
    c.push(b"never sent")          # after the None marker
    reader = PeerReader(b)
    run_until(asyncore, sockmap, lambda: reader.at_eof(), use_poll=use_poll)
    assert bytes(reader.buf) == data + b"end"
    assert sockmap == {}
    assert c.count("handle_close") == 1
    b.close()


def test_close_when_done_on_idle_chat(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    c = kit.IOChat(a, map=sockmap)
    c.close_when_done()
    assert list(c.producer_fifo) == [None]
    assert c.writable()
    run_until(asyncore, sockmap, lambda: not sockmap)
    assert c.names() == ["handle_write", "handle_close", "close"]
    assert b.recv(10) == b""
    b.close()


def test_discard_buffers(asyncore, sockmap, chat_pair):
    c, peer = chat_pair(terminator=b"\r\n.\r\n")
    feed(asyncore, sockmap, c, peer, [b"data\r\n."])
    assert c.incoming == [b"data"] and c.ac_in_buffer == b"\r\n."
    c.connected = False                 # keep pushes queued
    c.push(b"queued")
    c.push_with_producer(object())
    assert len(c.producer_fifo) == 2
    c.discard_buffers()
    assert c.ac_in_buffer == b""
    assert c.incoming == []
    assert len(c.producer_fifo) == 0


# ---------------------------------------------------------------------------
# readable / writable / default methods
# ---------------------------------------------------------------------------

def test_readable_writable_values(asynchat, sockmap):
    c = asynchat.async_chat(map=sockmap)
    assert c.readable() == 1
    assert c.writable() is True                # not connected, nothing queued
    c.push(b"x")
    w = c.writable()
    assert w is c.producer_fifo                # the fifo itself, as the stdlib returns it
    a, b = socket.socketpair()
    d = asynchat.async_chat(a, map=sockmap)
    assert d.writable() is False               # connected, nothing queued
    d.producer_fifo.append(b"x")
    assert d.writable() is d.producer_fifo
    b.close()


def test_default_collect_and_found_raise(asynchat, sockmap):
    c = asynchat.async_chat(map=sockmap)
    with pytest.raises(NotImplementedError):
        c.collect_incoming_data(b"x")
    with pytest.raises(NotImplementedError):
        c.found_terminator()


def test_collect_helpers(asynchat, sockmap):
    c = asynchat.async_chat(map=sockmap)
    c._collect_incoming_data(b"ab")
    c._collect_incoming_data(b"cd")
    assert c.incoming == [b"ab", b"cd"]
    assert c._get_data() == b"abcd"
    assert c.incoming == []
    assert c._get_data() == b""


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_chat_closes_on_eof(asyncore, kit, sockmap, chat_pair, use_poll):
    c, peer = chat_pair()
    feed(asyncore, sockmap, c, peer, [b"last\n"], use_poll=use_poll)
    peer.close()
    run_until(asyncore, sockmap, lambda: not sockmap, use_poll=use_poll)
    assert c.lines == [b"last"]
    assert c.names()[-1] == "handle_close"
    assert c.connected is False


def test_recv_error_goes_to_handle_error(asyncore, kit, sockmap, chat_pair):
    import errno

    class Broken(kit.Chat):
        def recv(self, n):
            raise OSError(errno.EIO, "io")

    c, peer = chat_pair(Broken)
    peer.send(b"x\n")
    run_until(asyncore, sockmap, lambda: c.count("handle_error"))
    assert c.events[0] == ("handle_error", "OSError")
    assert sockmap == {}


def test_recv_would_block_is_ignored(asyncore, kit, sockmap, chat_pair):
    c, peer = chat_pair()
    c.handle_read()                  # nothing to read: BlockingIOError swallowed
    assert getattr(c, "events", []) == []
    assert c.connected


def test_send_error_goes_to_handle_error(asyncore, kit, sockmap, chat_pair):
    import errno

    class Broken(kit.Chat):
        def send(self, data):
            raise OSError(errno.EIO, "io")

    c, peer = chat_pair(Broken)
    c.push(b"x")
    assert c.events[0] == ("handle_error", "OSError")
    assert sockmap == {}


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_readable_override_flow_control(asyncore, kit, sockmap, chat_pair, use_poll):
    class Paused(kit.Chat):
        paused = False

        def readable(self):
            return not self.paused

    c, peer = chat_pair(Paused)
    feed(asyncore, sockmap, c, peer, [b"a\n"], use_poll=use_poll)
    c.paused = True
    peer.send(b"b\n")
    support.run_iterations(asyncore, sockmap, 4, use_poll=use_poll)
    assert c.lines == [b"a"]
    c.paused = False
    run_until(asyncore, sockmap, lambda: c.lines == [b"a", b"b"], use_poll=use_poll)


def test_get_terminator_override(asyncore, kit, sockmap, chat_pair):
    class Custom(kit.Chat):
        def get_terminator(self):
            return b";"

    c, peer = chat_pair(Custom, terminator=b"\n")
    feed(asyncore, sockmap, c, peer, [b"x;y\nz;"])
    assert c.lines == [b"x", b"y\nz"]


def test_collect_incoming_data_gets_bytes(asyncore, asynchat, sockmap):
    types = []

    class C(asynchat.async_chat):
        def collect_incoming_data(self, data):
            types.append(type(data))

        def found_terminator(self):
            types.append("found")

    for term in (b"\r\n", 3, None):
        a, b = socket.socketpair()
        c = C(a, map=sockmap)
        c.set_terminator(term)
        b.sendall(b"ab\r\ncdefg\r")
        run_until(asyncore, sockmap, lambda c=c: support.consumed(c))
        c.close()
        b.close()
    assert types and all(t in (bytes, "found") for t in types), types


def test_close_inside_found_terminator(asyncore, kit, sockmap, chat_pair):
    """The reference goes on splitting what it already read after close()."""
    class Quitter(kit.Chat):
        def on_line(self, line):
            if line == b"QUIT":
                self.close()

    c, peer = chat_pair(Quitter)
    feed(asyncore, sockmap, c, peer, [b"a\nQUIT\nb\nc"])
    assert c.lines == [b"a", b"QUIT", b"b"]
    assert c.incoming == [b"c"]
    assert sockmap == {}


def test_discard_buffers_inside_found_terminator(asyncore, kit, sockmap, chat_pair):
    class Discarder(kit.Chat):
        def on_line(self, line):
            if line == b"RESET":
                self.discard_buffers()

    c, peer = chat_pair(Discarder)
    feed(asyncore, sockmap, c, peer, [b"a\nRESET\nlost\npart"])
    assert c.lines == [b"a", b"RESET"]
    assert c.ac_in_buffer == b"" and c.incoming == []
    feed(asyncore, sockmap, c, peer, [b"ial\n"])
    assert c.lines == [b"a", b"RESET", b"ial"]


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_push_from_another_dispatchers_handler(asyncore, kit, sockmap, use_poll):
    """A chat that becomes writable because another dispatcher pushed to it
    is flushed by the loop."""
    a, b = socket.socketpair()
    target = kit.Chat(a, map=sockmap)
    target.connected = False                      # push only queues
    out = PeerReader(b)

    class Relay(kit.Chat):
        def on_line(self, line):
            target.producer_fifo.append(line + b"!")

    ra, rb = socket.socketpair()
    Relay(ra, map=sockmap)
    rb.sendall(b"relayed\n")
    run_until(asyncore, sockmap, lambda: len(target.producer_fifo) == 1, use_poll=use_poll)
    target.connected = True
    assert pump(asyncore, sockmap, out, 8, use_poll=use_poll) == b"relayed!"
    b.close()
    rb.close()


# ---------------------------------------------------------------------------
# find_prefix_at_end, set_terminator
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("haystack,needle,expected", [
    (b"qwerty\r", b"\r\n", 1),
    (b"qwertydkjf", b"\r\n", 0),
    (b"abc\r\n.", b"\r\n.\r\n", 3),
    (b"abc\r\n.\r", b"\r\n.\r\n", 4),
    (b"abc\r", b"\r\n.\r\n", 1),
    (b"", b"\r\n", 0),
    (b"x\n", b"\n", 0),
    (b"aaa", b"aab", 2),
    (b"ab", b"abcd", 2),
])
def test_find_prefix_at_end(asynchat, haystack, needle, expected):
    assert asynchat.find_prefix_at_end(haystack, needle) == expected


def test_find_prefix_at_end_str(asynchat):
    assert asynchat.find_prefix_at_end("qwerty\r", "\r\n") == 1
    assert asynchat.find_prefix_at_end("qwertydkjf", "\r\n") == 0


def test_find_prefix_at_end_matches_reference(asynchat, ref_asynchat):
    rnd = random.Random(1234)
    for _ in range(3000):
        needle = bytes(rnd.choice(b"ab\r\n") for _ in range(rnd.randint(1, 6)))
        haystack = bytes(rnd.choice(b"ab\r\n") for _ in range(rnd.randint(0, 12)))
        assert asynchat.find_prefix_at_end(haystack, needle) == \
            ref_asynchat.find_prefix_at_end(haystack, needle), (haystack, needle)


def test_set_terminator_negative_int(asynchat, sockmap):
    c = asynchat.async_chat(map=sockmap)
    with pytest.raises(ValueError):
        c.set_terminator(-1)


def test_set_terminator_accepted_values(asynchat, sockmap):
    c = asynchat.async_chat(map=sockmap)
    for t in (b"\r\n", bytearray(b"\n"), 0, 5, None):
        c.set_terminator(t)
        assert c.get_terminator() == t
        assert c.terminator == t


@pytest.mark.fastcore_only
def test_set_terminator_str_without_use_encoding(asynchat, sockmap):
    c = asynchat.async_chat(map=sockmap)
    with pytest.raises(TypeError):
        c.set_terminator("\r\n")


@pytest.mark.fastcore_only
@pytest.mark.parametrize("bad", [1.5, object(), [b"\n"]], ids=["float", "object", "list"])
def test_set_terminator_rejects_other_types(asynchat, sockmap, bad):
    c = asynchat.async_chat(map=sockmap)
    with pytest.raises(TypeError):
        c.set_terminator(bad)
