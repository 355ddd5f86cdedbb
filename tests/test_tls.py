"""fastcore.tls: TLS for dispatchers and async_chat, against the standard
``ssl`` module as the peer (a blocking client or server in a thread, or an
``ssl.SSLObject`` over memory BIOs where the test must control which bytes
go out in which send). Certificates: tests/certs/ (test-only, made by
tests/certs/make_certs.sh).
"""

import hashlib
import os
import socket
import ssl
import struct

import pytest
import support

pytestmark = pytest.mark.fastcore_only

CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "certs")
CA = os.path.join(CERTS, "ca.pem")
SERVER_CERT = os.path.join(CERTS, "server.pem")
CLIENT_CERT = os.path.join(CERTS, "client.pem")
TIMEOUT = 20.0
BIG = 64 << 20  # bytes each way in the bulk test


@pytest.fixture(scope="module")
def tls():
    from fastcore import tls

    return tls


def server_context(require_client_cert=False):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(SERVER_CERT)
    if require_client_cert:
        ctx.load_verify_locations(CA)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cert=False):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=CA)
    if cert:
        ctx.load_cert_chain(CLIENT_CERT)
    return ctx


def tls_client(port, ctx=None):
    """A blocking TLS client connected to the loopback port; a close without
    close_notify raises SSLEOFError."""
    raw = socket.create_connection((support.LOCALHOST, port), timeout=TIMEOUT)
    return (ctx or client_context()).wrap_socket(
        raw, server_hostname="localhost", suppress_ragged_eofs=False)


def read_line(sock, buf):
    """One b"\\r\\n"-terminated line from a blocking socket; buf keeps the rest."""
    while b"\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise EOFError("closed before a full line: %r" % bytes(buf))
        buf += data
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def read_line_bytewise(sock):
    """One b"\r\n"-terminated line from a blocking socket, nothing after it."""
    line = bytearray()
    while not line.endswith(b"\r\n"):
        data = sock.recv(1)
        if not data:
            raise EOFError("closed before a full line: %r" % bytes(line))
        line += data
    return bytes(line[:-2])


class BioClient:
    """A TLS client over memory BIOs on a blocking socket: the test decides
    which bytes go out together (plaintext and records in one send)."""

    def __init__(self, sock):
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = client_context().wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost")

    def pump(self, step):
        """Run step() until it stops wanting to read; returns its result."""
        while True:
            try:
                result = step()
            except ssl.SSLWantReadError:
                self.flush()
                data = self.sock.recv(65536)
                if not data:
                    self.incoming.write_eof()
                else:
                    self.incoming.write(data)
                continue
            self.flush()
            return result

    def flush(self, extra=b""):
        out = self.outgoing.read() + extra
        if out:
            self.sock.sendall(out)

    def read_line(self):
        buf = b""
        while b"\r\n" not in buf:
            buf += self.pump(lambda: self.obj.read(65536))
        line, _, rest = buf.partition(b"\r\n")
        assert not rest
        return line

    def write(self, data):
        self.obj.write(data)
        self.flush()


# ---------------------------------------------------------------------------
# fastcore servers
# ---------------------------------------------------------------------------


def make_server(asyncore, map, handler_factory):
    class Listener(asyncore.dispatcher):
        def __init__(self):
            asyncore.dispatcher.__init__(self, map=map)
            self.create_socket()
            self.set_reuse_addr()
            self.bind((support.LOCALHOST, 0))
            self.listen(16)
            self.port = self.socket.getsockname()[1]
            self.handlers = []

        def handle_accepted(self, sock, addr):
            self.handlers.append(handler_factory(sock))

    return Listener()


def line_server_class(asynchat, tls, record):
    """A line protocol: ``STARTTLS`` (reply, then TLS), ``CCC`` (reply, then
    back to plaintext), ``QUIT``; any other line is echoed with its mode."""

    class LineServer(asynchat.async_chat):
        ctx = None

        def __init__(self, sock, map, ctx=None, tls_now=False):
            asynchat.async_chat.__init__(self, sock, map=map)
            self.set_terminator(b"\r\n")
            self.parts = []
            self.ctx = ctx
            self.errors = []
            if tls_now:
                tls.start_tls(self, ctx, server_side=True)

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            line = b"".join(self.parts)
            self.parts = []
            record.append(line)
            if line == b"STARTTLS":
                self.push(b"220 go ahead\r\n")
                tls.start_tls(self, self.ctx, server_side=True)
            elif line == b"STARTTLS TWO":
                # The second push waits for the end of the read (coalescing):
                # start_tls() must send it in the clear first.
                self.push(b"220-ready\r\n")
                self.push(b"220 go ahead\r\n")
                tls.start_tls(self, self.ctx, server_side=True)
            elif line == b"STARTTLS BIG":
                # More than one send: the reply is still queued at start_tls().
                self.push(b"x" * (1 << 20) + b"\r\n220 go ahead\r\n")
                tls.start_tls(self, self.ctx, server_side=True)
            elif line == b"CCC":
                self.push(b"200 plaintext from now on\r\n")
                tls.stop_tls(self)
            elif line == b"QUIT":
                self.push(b"221 bye\r\n")
                self.close_when_done()
            else:
                mode = b"tls" if tls.tls_state(self) == "open" else b"plain"
                self.push(mode + b": " + line + b"\r\n")

        def handle_handshake_done(self):
            record.append("handshake done")
            self.peer = tls.tls_object(self).getpeercert()

        def handle_unwrap_done(self):
            record.append("unwrap done")

        def handle_error(self):
            self.errors.append(support.sys.exc_info()[1])
            record.append("error")
            self.close()

        def handle_close(self):
            record.append("close")
            self.close()

    return LineServer


@pytest.fixture(params=[False, True], ids=["select", "poll"])
def use_poll(request):
    return request.param


def serve_lines(asyncore, asynchat, tls, sockmap, tls_now, ctx=None):
    record = []
    cls = line_server_class(asynchat, tls, record)
    ctx = ctx or server_context()
    server = make_server(asyncore, sockmap, lambda sock: cls(sock, sockmap, ctx, tls_now))
    return server, record


def run_with(asyncore, sockmap, thread, use_poll=False, timeout=TIMEOUT):
    support.run_until(asyncore, sockmap, lambda: not thread.is_alive(), timeout=timeout,
                      use_poll=use_poll, what="the peer thread to finish")
    return thread.finish()


# ---------------------------------------------------------------------------
# handshakes
# ---------------------------------------------------------------------------


def test_server_handshake_and_lines(fastcore_pkg, asyncore, asynchat, tls, sockmap, use_poll):
    fastcore_pkg.stats.reset()
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=True)

    def client():
        with tls_client(server.port) as s:
            buf = bytearray()
            replies = []
            for i in range(50):
                s.sendall(b"line %d\r\n" % i)
                replies.append(read_line(s, buf))
            s.sendall(b"".join(b"burst %d\r\n" % i for i in range(200)))
            replies += [read_line(s, buf) for _ in range(200)]
            s.sendall(b"QUIT\r\n")
            replies.append(read_line(s, buf))
            assert not buf
            assert s.recv(100) == b""  # close_notify (a bare EOF would raise, below)
            return s.version(), replies

    version, replies = run_with(asyncore, sockmap, support.start_thread(client), use_poll)
    assert version in ("TLSv1.2", "TLSv1.3")
    assert replies[:50] == [b"tls: line %d" % i for i in range(50)]
    assert replies[50:250] == [b"tls: burst %d" % i for i in range(200)]
    assert replies[250] == b"221 bye"
    assert record[0] == "handshake done"
    handler = server.handlers[0]
    assert tls.tls_object(handler).version() == version
    support.run_until(asyncore, sockmap, lambda: "close" in record)
    snapshot = fastcore_pkg.stats(sockmap)
    assert (snapshot["tls_handshakes"], snapshot["tls_handshake_failures"]) == (1, 0)


def test_client_handshake(asyncore, asynchat, tls, sockmap, use_poll):
    listener = socket.create_server((support.LOCALHOST, 0))
    port = listener.getsockname()[1]

    def server():
        raw, _ = listener.accept()
        raw.settimeout(TIMEOUT)
        with server_context().wrap_socket(raw, server_side=True) as s:
            buf = bytearray()
            line = read_line(s, buf)
            s.sendall(b"you said " + line + b"\r\n")
            return line, read_line(s, buf)

    events = []

    class Client(asynchat.async_chat):
        def __init__(self):
            asynchat.async_chat.__init__(self, map=sockmap)
            self.set_terminator(b"\r\n")
            self.parts = []
            self.create_socket()
            self.connect((support.LOCALHOST, port))

        def handle_connect(self):
            tls.start_tls(self, client_context(), server_hostname="localhost")
            events.append(tls.tls_state(self))

        def handle_handshake_done(self):
            events.append("handshake done")
            # (After a ragged EOF the SSL object is in its error state: no peer cert.)
            self.peer = tls.tls_object(self).getpeercert()
            self.push(b"hello\r\n")

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            events.append(b"".join(self.parts))
            self.push(b"bye\r\n")

    thread = support.start_thread(server)
    try:
        client = Client()
        assert run_with(asyncore, sockmap, thread, use_poll) == (b"hello", b"bye")
    finally:
        listener.close()
    assert events == ["handshaking", "handshake done", b"you said hello"]
    assert client.peer["subject"] == ((("commonName", "fastcore test server"),),)
    client.close()


def test_client_rejects_wrong_hostname(asyncore, asynchat, tls, sockmap):
    listener = socket.create_server((support.LOCALHOST, 0))
    port = listener.getsockname()[1]

    def server():
        raw, _ = listener.accept()
        raw.settimeout(TIMEOUT)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            server_context().wrap_socket(raw, server_side=True).recv(1)
        raw.close()

    errors = []

    class Client(asyncore.dispatcher):
        def handle_connect(self):
            tls.start_tls(self, client_context(), server_hostname="not-the-server.example")

        def handle_error(self):
            errors.append(support.sys.exc_info()[1])
            self.close()

    thread = support.start_thread(server)
    try:
        client = Client(map=sockmap)
        client.create_socket()
        client.connect((support.LOCALHOST, port))
        run_with(asyncore, sockmap, thread)
    finally:
        listener.close()
    assert len(errors) == 1 and isinstance(errors[0], ssl.SSLCertVerificationError)
    assert not sockmap


def test_client_certificate_required(asyncore, asynchat, tls, sockmap):
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=True,
                                 ctx=server_context(require_client_cert=True))

    def client():
        with tls_client(server.port, client_context(cert=True)) as s:
            buf = bytearray()
            s.sendall(b"with a certificate\r\n")
            return read_line(s, buf)

    assert run_with(asyncore, sockmap, support.start_thread(client)) == \
        b"tls: with a certificate"
    peer = server.handlers[0].peer
    assert peer["subject"] == ((("commonName", "fastcore test client"),),)


def test_client_certificate_missing(asyncore, asynchat, tls, sockmap):
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=True,
                                 ctx=server_context(require_client_cert=True))

    def client():
        # TLS 1.3: the client's handshake ends before the server checks its
        # certificate; the server's alert arrives on the first read.
        with tls_client(server.port) as s:
            s.sendall(b"no certificate\r\n")
            try:
                data = s.recv(100)
            except (ssl.SSLError, ConnectionError) as e:
                return e
            return data

    outcome = run_with(asyncore, sockmap, support.start_thread(client))
    assert isinstance(outcome, ssl.SSLError) or outcome == b""
    support.run_until(asyncore, sockmap, lambda: "error" in record)
    handler = server.handlers[0]
    assert isinstance(handler.errors[0], ssl.SSLError)
    assert b"no certificate" not in record
    assert list(sockmap.values()) == [server]


def test_api_errors(asyncore, asynchat, tls, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    with pytest.raises(ValueError):
        tls.start_tls(d, server_context(), server_side=True)  # no socket
    a, b = support.tcp_pair()
    try:
        d = asyncore.dispatcher(a, map=sockmap)
        with pytest.raises(TypeError):
            tls.start_tls(d, "not a context")
        with pytest.raises(TypeError):
            tls.start_tls(object(), server_context())
        with pytest.raises(ValueError):
            tls.stop_tls(d)
        assert tls.tls_state(d) == "plain" and tls.tls_object(d) is None
        obj = tls.start_tls(d, client_context(), server_hostname="localhost")
        assert isinstance(obj, ssl.SSLObject) and tls.tls_object(d) is obj
        assert tls.tls_state(d) == "handshaking"
        with pytest.raises(ValueError):
            tls.start_tls(d, client_context(), server_hostname="localhost")
        with pytest.raises(ValueError):
            tls.stop_tls(d)  # not established yet
    finally:
        b.close()


# ---------------------------------------------------------------------------
# bulk
# ---------------------------------------------------------------------------


def test_64_mib_each_way(asyncore, asynchat, tls, sockmap):
    """Upload BIG bytes (the server hashes them), then download BIG bytes
    (the client hashes them); every byte checked."""
    upload = os.urandom(BIG)
    download = os.urandom(BIG)

    class Sink(asynchat.async_chat):
        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock, map=sockmap)
            self.set_terminator(8)
            self.header = True
            self.parts = []
            self.digest = hashlib.sha256()
            tls.start_tls(self, server_context(), server_side=True)

        def collect_incoming_data(self, data):
            if self.header:
                self.parts.append(data)
            else:
                self.digest.update(data)

        def found_terminator(self):
            if self.header:
                self.header = False
                self.set_terminator(struct.unpack("!Q", b"".join(self.parts))[0])
                return
            self.push(self.digest.digest())
            view = memoryview(download)
            for i in range(0, len(view), 1 << 20):
                self.push(view[i:i + (1 << 20)])

    server = make_server(asyncore, sockmap, Sink)

    def client():
        with tls_client(server.port) as s:
            s.sendall(struct.pack("!Q", BIG))
            view = memoryview(upload)
            for i in range(0, BIG, 1 << 20):
                s.sendall(view[i:i + (1 << 20)])
            got = support.recv_exactly(s, 32, timeout=TIMEOUT)
            digest = hashlib.sha256()
            n = 0
            while n < BIG:
                data = s.recv(1 << 20)
                assert data, "closed after %d bytes" % n
                digest.update(data)
                n += len(data)
            return got, digest.digest(), n

    got, down_digest, n = run_with(asyncore, sockmap, support.start_thread(client),
                                   timeout=120)
    assert got == hashlib.sha256(upload).digest()
    assert n == BIG and down_digest == hashlib.sha256(download).digest()


def test_dispatcher_with_send_echo(asyncore, tls, sockmap):
    """dispatcher_with_send: out_buffer carries plaintext; bytes checked."""
    class Echo(asyncore.dispatcher_with_send):
        def handle_read(self):
            self.send(self.recv(4096))  # smaller than a record: the layer keeps the rest

    def accept(sock):
        echo = Echo(sock, map=sockmap)
        tls.start_tls(echo, server_context(), server_side=True)
        return echo

    server = make_server(asyncore, sockmap, accept)
    payload = os.urandom(3 << 20)

    def client():
        with tls_client(server.port) as s:
            s.sendall(payload)
            return support.recv_exactly(s, len(payload), timeout=TIMEOUT)

    assert run_with(asyncore, sockmap, support.start_thread(client)) == payload


def test_polled_dispatcher_echo(asyncore, tls, sockmap, use_poll):
    """A dispatcher with readable()/writable() of its own (asked every
    iteration): TLS adds its interest to theirs."""
    class Echo(asyncore.dispatcher):
        def __init__(self, sock):
            asyncore.dispatcher.__init__(self, sock, map=sockmap)
            self.pending = b""

        def readable(self):
            return len(self.pending) < (16 << 20)

        def writable(self):
            return bool(self.pending)

        def handle_read(self):
            self.pending += self.recv(8192)

        def handle_write(self):
            self.pending = self.pending[self.send(self.pending):]

    def accept(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        echo = Echo(sock)
        tls.start_tls(echo, server_context(), server_side=True)
        return echo

    server = make_server(asyncore, sockmap, accept)
    payload = os.urandom(4 << 20)

    def client():
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        raw.settimeout(TIMEOUT)
        raw.connect((support.LOCALHOST, server.port))
        with client_context().wrap_socket(raw, server_hostname="localhost") as s:
            # All of it before reading any: the server's socket fills, and the
            # end of the echo is ciphertext waiting while writable() is False.
            s.sendall(payload)
            return support.recv_exactly(s, len(payload), timeout=TIMEOUT)

    assert run_with(asyncore, sockmap, support.start_thread(client), use_poll) == payload


# ---------------------------------------------------------------------------
# STARTTLS and unwrap
# ---------------------------------------------------------------------------


def test_starttls_client_waits_for_reply(asyncore, asynchat, tls, sockmap, use_poll):
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=False)

    def client():
        raw = socket.create_connection((support.LOCALHOST, server.port), timeout=TIMEOUT)
        buf = bytearray()
        raw.sendall(b"hello\r\n")
        first = read_line(raw, buf)
        raw.sendall(b"STARTTLS\r\n")
        reply = read_line(raw, buf)
        assert not buf
        with client_context().wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"secret\r\n")
            return first, reply, read_line(s, bytearray())

    assert run_with(asyncore, sockmap, support.start_thread(client), use_poll) == (
        b"plain: hello", b"220 go ahead", b"tls: secret")
    assert record[:4] == [b"hello", b"STARTTLS", "handshake done", b"secret"]


def test_starttls_reply_queued_goes_out_in_the_clear(asyncore, asynchat, tls, sockmap,
                                                     use_poll):
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=False)

    def client():
        raw = socket.create_connection((support.LOCALHOST, server.port), timeout=TIMEOUT)
        buf = bytearray()
        raw.sendall(b"STARTTLS BIG\r\n")
        big = read_line(raw, buf)
        reply = read_line(raw, buf)
        assert not buf
        with client_context().wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"secret\r\n")
            return big == b"x" * (1 << 20), reply, read_line(s, bytearray())

    assert run_with(asyncore, sockmap, support.start_thread(client), use_poll) == (
        True, b"220 go ahead", b"tls: secret")


def test_starttls_two_replies_in_one_handler(asyncore, asynchat, tls, sockmap, use_poll):
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=False)

    def client():
        raw = socket.create_connection((support.LOCALHOST, server.port), timeout=TIMEOUT)
        buf = bytearray()
        raw.sendall(b"STARTTLS TWO\r\n")
        replies = read_line(raw, buf), read_line(raw, buf)
        assert not buf
        with client_context().wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"secret\r\n")
            return replies, read_line(s, bytearray())

    assert run_with(asyncore, sockmap, support.start_thread(client), use_poll) == (
        (b"220-ready", b"220 go ahead"), b"tls: secret")


def test_starttls_client_hello_with_the_command(asyncore, asynchat, tls, sockmap, use_poll):
    """The command, the ClientHello and nothing else in one send: the server
    reads the ClientHello together with the command line."""
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=False)

    def client():
        raw = socket.create_connection((support.LOCALHOST, server.port), timeout=TIMEOUT)
        with raw:
            bio = BioClient(raw)
            with pytest.raises(ssl.SSLWantReadError):
                bio.obj.do_handshake()
            raw.sendall(b"STARTTLS\r\n" + bio.outgoing.read())
            buf = bytearray()
            reply = read_line(raw, buf)
            bio.incoming.write(bytes(buf))  # records right behind the reply
            bio.pump(bio.obj.do_handshake)
            bio.write(b"secret\r\n")
            return reply, bio.read_line()

    assert run_with(asyncore, sockmap, support.start_thread(client), use_poll) == (
        b"220 go ahead", b"tls: secret")
    assert record[:3] == [b"STARTTLS", "handshake done", b"secret"]


def test_plaintext_after_starttls_is_a_handshake_error(asyncore, asynchat, tls, sockmap):
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=False)

    def client():
        raw = socket.create_connection((support.LOCALHOST, server.port), timeout=TIMEOUT)
        with raw:
            raw.sendall(b"STARTTLS\r\nNOT TLS AT ALL\r\n")
            buf = bytearray()
            reply = read_line(raw, buf)
            while True:  # the server's alert, then its close
                try:
                    if not raw.recv(4096):
                        return reply
                except ConnectionError:
                    return reply

    assert run_with(asyncore, sockmap, support.start_thread(client)) == b"220 go ahead"
    support.run_until(asyncore, sockmap, lambda: "error" in record)
    assert isinstance(server.handlers[0].errors[0], ssl.SSLError)
    assert b"NOT TLS AT ALL" not in record


def test_unwrap_back_to_plaintext(asyncore, asynchat, tls, sockmap, use_poll):
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=True)

    def client():
        with tls_client(server.port) as s:
            buf = bytearray()
            s.sendall(b"before\r\n")
            before = read_line(s, buf)
            s.sendall(b"CCC\r\n")
            reply = read_line(s, buf)
            assert not buf
            raw = s.unwrap()  # the same socket, plaintext again
            raw.sendall(b"after\r\n")
            after = read_line(raw, buf)
            return before, reply, after

    assert run_with(asyncore, sockmap, support.start_thread(client), use_poll) == (
        b"tls: before", b"200 plaintext from now on", b"plain: after")
    assert record[:5] == ["handshake done", b"before", b"CCC", "unwrap done", b"after"]
    assert tls.tls_state(server.handlers[0]) == "plain"


def test_client_pushes_then_starttls_in_one_handler(asyncore, asynchat, tls, sockmap,
                                                    use_poll):
    """fastcore as the client pushes two plaintext lines and starts TLS in the
    same handler: both lines leave before the ClientHello (the second push
    waits for the end of the event otherwise)."""
    listener = socket.create_server((support.LOCALHOST, 0))
    port = listener.getsockname()[1]

    def server():
        raw, _ = listener.accept()
        raw.settimeout(TIMEOUT)
        with raw:
            raw.sendall(b"220 welcome\r\n")
            # A byte at a time, so that no byte after the lines is taken from
            # the socket: a ClientHello that overtook the second line would
            # stand in it.
            first, second = read_line_bytewise(raw), read_line_bytewise(raw)
            with server_context().wrap_socket(raw, server_side=True) as s:
                line = read_line(s, bytearray())
                s.sendall(b"tls " + line + b"\r\n")
            return first, second, line

    class Client(asynchat.async_chat):
        def __init__(self):
            asynchat.async_chat.__init__(self, map=sockmap)
            self.set_terminator(b"\r\n")
            self.parts = []
            self.create_socket()
            self.connect((support.LOCALHOST, port))

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            line = b"".join(self.parts)
            self.parts = []
            if line == b"220 welcome":
                self.push(b"EHLO client\r\n")
                self.push(b"STARTTLS\r\n")
                tls.start_tls(self, client_context(), server_hostname="localhost")
            elif line == b"tls hello":
                self.close()

        def handle_handshake_done(self):
            self.push(b"hello\r\n")

    thread = support.start_thread(server)
    try:
        Client()
        assert run_with(asyncore, sockmap, thread, use_poll) == (
            b"EHLO client", b"STARTTLS", b"hello")
    finally:
        listener.close()


def test_client_starttls_and_unwrap(asyncore, asynchat, tls, sockmap, use_poll):
    """fastcore as the client: STARTTLS after a greeting, then CCC back to
    plaintext, against a blocking ssl server."""
    listener = socket.create_server((support.LOCALHOST, 0))
    port = listener.getsockname()[1]

    def server():
        raw, _ = listener.accept()
        raw.settimeout(TIMEOUT)
        buf = bytearray()
        with raw:
            raw.sendall(b"220 welcome\r\n")
            assert read_line(raw, buf) == b"STARTTLS"
            raw.sendall(b"220 go ahead\r\n")
            s = server_context().wrap_socket(raw, server_side=True)
            line = read_line(s, buf)
            s.sendall(b"tls " + line + b"\r\n")
            assert read_line(s, buf) == b"CCC"
            s.sendall(b"200 ok\r\n")
            plain = s.unwrap()  # wrap_socket took raw's fd: this is the socket now
            line = read_line(plain, buf)
            plain.sendall(b"plain " + line + b"\r\n")
            leftover = bytes(buf)
            plain.close()
            return leftover

    lines = []

    class Client(asynchat.async_chat):
        def __init__(self):
            asynchat.async_chat.__init__(self, map=sockmap)
            self.set_terminator(b"\r\n")
            self.parts = []
            self.create_socket()
            self.connect((support.LOCALHOST, port))

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            line = b"".join(self.parts)
            self.parts = []
            lines.append(line)
            if line == b"220 welcome":
                self.push(b"STARTTLS\r\n")
            elif line == b"220 go ahead":
                tls.start_tls(self, client_context(), server_hostname="localhost")
            elif line == b"tls hello":
                self.push(b"CCC\r\n")
            elif line == b"200 ok":
                tls.stop_tls(self)
            elif line == b"plain again":
                self.close()

        def handle_handshake_done(self):
            self.push(b"hello\r\n")

        def handle_unwrap_done(self):
            lines.append("unwrap done")
            self.push(b"again\r\n")

    thread = support.start_thread(server)
    try:
        Client()
        assert run_with(asyncore, sockmap, thread, use_poll) == b""
        support.run_until(asyncore, sockmap, lambda: not sockmap)
    finally:
        listener.close()
    assert lines == [b"220 welcome", b"220 go ahead", b"tls hello", b"200 ok", "unwrap done",
                     b"plain again"]


def test_unwrap_plaintext_right_behind_close_notify(asyncore, asynchat, tls, sockmap):
    """The client's close_notify and its next plaintext line in one send."""
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=True)

    def client():
        raw = socket.create_connection((support.LOCALHOST, server.port), timeout=TIMEOUT)
        with raw:
            bio = BioClient(raw)
            bio.pump(bio.obj.do_handshake)
            bio.write(b"CCC\r\n")
            reply = bio.read_line()
            with pytest.raises(ssl.SSLWantReadError):
                bio.obj.unwrap()  # our close_notify is in the outgoing BIO
            bio.flush(extra=b"in the clear\r\n")
            bio.pump(bio.obj.unwrap)
            buf = bytearray(bio.incoming.read())
            return reply, read_line(raw, buf)

    assert run_with(asyncore, sockmap, support.start_thread(client)) == (
        b"200 plaintext from now on", b"plain: in the clear")


# ---------------------------------------------------------------------------
# misbehaving peers
# ---------------------------------------------------------------------------


def test_garbage_instead_of_client_hello(fastcore_pkg, asyncore, asynchat, tls, sockmap,
                                        use_poll):
    """The connection that sent garbage gets handle_error and is closed; a
    TLS client served at the same time is not disturbed."""
    fastcore_pkg.stats.reset()
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=True)
    garbage = socket.create_connection((support.LOCALHOST, server.port), timeout=TIMEOUT)
    support.run_until(asyncore, sockmap, lambda: len(server.handlers) == 1)

    def good_client():
        with tls_client(server.port) as s:
            garbage.sendall(b"GET / HTTP/1.0\r\n\r\n" * 20)
            buf = bytearray()
            replies = []
            for i in range(20):
                s.sendall(b"fine %d\r\n" % i)
                replies.append(read_line(s, buf))
            return replies

    try:
        replies = run_with(asyncore, sockmap, support.start_thread(good_client), use_poll)
        assert replies == [b"tls: fine %d" % i for i in range(20)]
        support.run_until(asyncore, sockmap, lambda: "error" in record)
        bad = server.handlers[0]
        assert isinstance(bad.errors[0], ssl.SSLError)
        assert bad not in sockmap.values()
        snapshot = fastcore_pkg.stats(sockmap)
        assert (snapshot["tls_handshakes"], snapshot["tls_handshake_failures"]) == (1, 1)
        garbage.settimeout(TIMEOUT)
        try:
            while garbage.recv(4096):  # an alert, then EOF
                pass
        except ConnectionError:
            pass
    finally:
        garbage.close()


def stall_mid_handshake(port):
    """A raw client that sent half a ClientHello and stops there."""
    stalled = socket.create_connection((support.LOCALHOST, port), timeout=TIMEOUT)
    hello = ssl.MemoryBIO()
    obj = client_context().wrap_bio(ssl.MemoryBIO(), hello, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    first_flight = hello.read()
    stalled.sendall(first_flight[: len(first_flight) // 2])
    return stalled


def test_peer_stalls_mid_handshake(asyncore, asynchat, tls, sockmap):
    """A peer that sends half a ClientHello and stops blocks nobody: another
    client is served meanwhile, and the stalled one stays handshaking.
    (Closing it after a time is the loop's idle timeout, not TLS's job.)"""
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=True)
    stalled = stall_mid_handshake(server.port)
    try:
        support.run_until(asyncore, sockmap, lambda: len(server.handlers) == 1)

        def client():
            with tls_client(server.port) as s:
                s.sendall(b"not stalled\r\n")
                return read_line(s, bytearray())

        assert run_with(asyncore, sockmap, support.start_thread(client)) == b"tls: not stalled"
        assert tls.tls_state(server.handlers[0]) == "handshaking"
        assert "error" not in record
        stalled.close()
        support.run_until(asyncore, sockmap, lambda: "close" in record)
    finally:
        stalled.close()


def test_stalled_handshake_times_out(fastcore_pkg, asyncore, asynchat, tls, sockmap):
    """With an idle timeout set, a peer that stops mid-handshake is closed."""
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=True)
    stalled = stall_mid_handshake(server.port)
    try:
        support.run_until(asyncore, sockmap, lambda: len(server.handlers) == 1)
        handler = server.handlers[0]
        assert tls.tls_state(handler) == "handshaking"
        fastcore_pkg.set_idle_timeout(handler, 0.2)
        start = support.time.monotonic()
        support.run_until(asyncore, sockmap, lambda: handler not in sockmap.values())
        assert support.time.monotonic() - start >= 0.2 - 0.01
        assert stalled.recv(100) == b""  # closed by the server
        assert "error" not in record
    finally:
        stalled.close()


def test_greeting_pushed_during_the_handshake(asyncore, asynchat, tls, sockmap, use_poll):
    """Implicit TLS with a server that speaks first: the greeting pushed
    right after start_tls() waits for the handshake (the loop sleeps
    meanwhile rather than spin on a writable socket), then goes out encrypted."""
    record = []
    cls = line_server_class(asynchat, tls, record)

    def accept(sock):
        handler = cls(sock, sockmap, server_context(), tls_now=True)
        handler.push(b"220 welcome\r\n")
        return handler

    server = make_server(asyncore, sockmap, accept)
    raw = socket.create_connection((support.LOCALHOST, server.port), timeout=TIMEOUT)
    try:
        support.run_until(asyncore, sockmap, lambda: len(server.handlers) == 1)
        assert tls.tls_state(server.handlers[0]) == "handshaking"
        start = support.time.monotonic()
        support.run_iterations(asyncore, sockmap, 3, use_poll=use_poll, timeout=0.1)
        assert support.time.monotonic() - start >= 0.25, "the loop spun during the handshake"

        def client():
            with client_context().wrap_socket(raw, server_hostname="localhost") as s:
                return read_line(s, bytearray())

        assert run_with(asyncore, sockmap, support.start_thread(client), use_poll) == \
            b"220 welcome"
    finally:
        raw.close()


def test_peer_disconnects_mid_handshake(fastcore_pkg, asyncore, asynchat, tls, sockmap):
    fastcore_pkg.stats.reset()
    server, record = serve_lines(asyncore, asynchat, tls, sockmap, tls_now=True)
    with socket.create_connection((support.LOCALHOST, server.port), timeout=TIMEOUT):
        support.run_until(asyncore, sockmap, lambda: len(server.handlers) == 1)
    support.run_until(asyncore, sockmap, lambda: "close" in record)
    assert "error" not in record
    assert list(sockmap.values()) == [server]
    snapshot = fastcore_pkg.stats(sockmap)
    assert (snapshot["tls_handshakes"], snapshot["tls_handshake_failures"]) == (0, 1)
