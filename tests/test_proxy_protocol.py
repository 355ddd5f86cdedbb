"""fastcore.proxy: listeners that read the PROXY protocol (v1 and v2).

In this process: hand-made headers to a listener on loopback, good ones (the
handler gets the client's address and every byte after the header) and bad
ones (the connection is closed with a logged reason, the handler sees
nothing, the next good connection is served). In subprocesses:
serve_forever() workers behind a real HAProxy (send-proxy, send-proxy-v2,
TLS through it).
"""

import json
import os
import queue
import socket
import ssl
import struct
import subprocess
import sys
import threading

import pytest
import support

import fastcore
from fastcore import asynchat, asyncore
from fastcore.proxy import accept_proxy_protocol, peer_address, proxy_header
from fastcore.tls import start_tls
from fastcore.workers import Listener

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "proxy_server.py")
CERTS = os.path.join(HERE, "certs")
TIMEOUT = 20.0  # the machine is shared: generous, but every wait is for an event

pytestmark = [pytest.mark.fastcore_only, pytest.mark.timeout(90)]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(command=0x1, family=0x11, addresses=None, tlvs=b"", length=None):
    if addresses is None:
        addresses = {
            0x11: socket.inet_aton("203.0.113.7") + socket.inet_aton("198.51.100.1")
            + struct.pack("!HH", 40001, 443),
            0x21: socket.inet_pton(socket.AF_INET6, "2001:db8::7")
            + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", 40002, 443),
            0x31: b"/run/client.sock".ljust(108, b"\0") + b"/run/server.sock".ljust(108, b"\0"),
        }.get(family, b"")
    body = addresses + tlvs
    return (V2_SIGNATURE + bytes([0x20 | command, family])
            + struct.pack("!H", len(body) if length is None else length) + body)


class Handler(asynchat.async_chat):
    """Collects what the connection sends; answers each line with its echo."""

    def __init__(self, sock, addr, server):
        asynchat.async_chat.__init__(self, sock, map=server._map)
        self.set_terminator(b"\n")
        self.lines = []
        self.parts = []
        server.handlers.append((self, addr))

    def collect_incoming_data(self, data):
        self.parts.append(data)

    def found_terminator(self):
        line, self.parts = b"".join(self.parts), []
        self.lines.append(line)
        self.push(line + b"\n")

    def handle_close(self):
        self.close()


class Server(Listener):
    handler = Handler

    def __init__(self, sock, map, **proxy_options):
        Listener.__init__(self, sock, map)
        self.handlers = []  # (handler, addr) per connection handed on
        self.logged = []  # (type, message) of log_info
        self.blocking_timeouts = []  # sock.gettimeout() in handle_accepted
        self.errors = []
        accept_proxy_protocol(self, **proxy_options)

    def handle_accepted(self, sock, addr):
        self.blocking_timeouts.append(sock.gettimeout())
        self.handler(sock, addr, self)

    def log_info(self, message, type="info"):
        self.logged.append((type, message))

    def handle_error(self):
        self.errors.append(sys.exc_info()[1])


@pytest.fixture
def serve(sockmap):
    def serve(**proxy_options):
        sock = socket.create_server((support.LOCALHOST, 0))
        return Server(sock, sockmap, **proxy_options)

    return serve


def connect(server):
    return socket.create_connection(server.addr, timeout=TIMEOUT)


def run_until(server, predicate, what):
    support.run_until(asyncore, server._map, predicate, timeout=TIMEOUT, what=what)


def exchange(server, sent, line=b"hello"):
    """Connect, send ``sent`` then ``line`` + b"\\n" in one write; returns the
    client socket and the (handler, addr) the server made for it."""
    client = connect(server)
    client.sendall(sent + line + b"\n")
    run_until(server, lambda: server.handlers and server.handlers[-1][0].lines,
              "the handler read the line")
    handler, addr = server.handlers[-1]
    assert handler.lines == [line]  # every byte after the header, none of the header
    client.settimeout(TIMEOUT)
    return client, handler, addr


def rejected():
    return fastcore.stats()["rejected"]


def assert_served(server):
    """One more connection with a good header is served: the listener goes on."""
    before = len(server.handlers)
    rejected_before = rejected()
    client, handler, addr = exchange(server, b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\n",
                                     b"next")
    with client:
        assert addr == ("192.0.2.1", 5000)
        assert len(server.handlers) == before + 1
    assert rejected() == rejected_before


# -- good headers ------------------------------------------------------------------


@pytest.mark.parametrize("header, client_address, server_address", [
    (b"PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\r\n",
     ("203.0.113.7", 40001), ("198.51.100.1", 443)),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 40002 443\r\n",
     ("2001:db8::7", 40002, 0, 0), ("2001:db8::1", 443, 0, 0)),
    (v2_header(family=0x11), ("203.0.113.7", 40001), ("198.51.100.1", 443)),
    (v2_header(family=0x21), ("2001:db8::7", 40002, 0, 0), ("2001:db8::1", 443, 0, 0)),
    (v2_header(family=0x31), "/run/client.sock", "/run/server.sock"),
    # TLVs (ALPN "h2", a NOOP) are skipped
    (v2_header(family=0x11, tlvs=b"\x01\x00\x02h2" + b"\x04\x00\x03xyz"),
     ("203.0.113.7", 40001), ("198.51.100.1", 443)),
], ids=["v1-tcp4", "v1-tcp6", "v2-ipv4", "v2-ipv6", "v2-unix", "v2-tlvs"])
def test_the_handler_gets_the_client_address_and_the_bytes(serve, header, client_address,
                                                          server_address):
    server = serve()
    client, handler, addr = exchange(server, header)
    with client:
        assert addr == client_address
        assert peer_address(handler) == client_address
        assert peer_address(handler.socket) == client_address
        found = proxy_header(handler)
        assert (found.command, found.source, found.destination) == (
            "PROXY", client_address, server_address)
        assert found.version == (1 if header.startswith(b"PROXY") else 2)
        # getpeername() is the balancer's (here the client's real socket)
        assert handler.addr == client.getsockname()
        assert client.recv(100) == b"hello\n"
    # the socket handed on is accept()'s, in its blocking mode
    assert server.blocking_timeouts == [None]
    assert server.logged == []
    assert list(server._map.values()) == [server, handler]


@pytest.mark.parametrize("header, version, command", [
    (b"PROXY UNKNOWN\r\n", 1, "PROXY"),
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", 1, "PROXY"),
    (v2_header(command=0x0, family=0x00), 2, "LOCAL"),  # a health check
    (v2_header(command=0x0, family=0x11), 2, "LOCAL"),  # its addresses are ignored
    (v2_header(command=0x0, family=0x41, addresses=bytes(5)), 2, "LOCAL"),  # and its family
    (v2_header(command=0x1, family=0x00), 2, "PROXY"),
], ids=["v1-unknown", "v1-unknown-addresses", "v2-local", "v2-local-addresses",
        "v2-local-any-family", "v2-unspecified"])
def test_no_client_address_gives_the_real_peer(serve, header, version, command):
    server = serve()
    client, handler, addr = exchange(server, header)
    with client:
        assert addr == client.getsockname()
        assert peer_address(handler) == client.getsockname()
        assert proxy_header(handler) == (version, command, None, None)
    assert server.logged == []


def test_a_header_in_pieces_over_several_iterations(serve):
    server = serve()
    header = b"PROXY TCP4 203.0.113.7 198.51.100.1 40001 443\r\n" + b"first\nsecond\n"
    client = connect(server)
    with client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(header), 5):
            client.sendall(header[i:i + 5])
            support.run_iterations(asyncore, server._map, 2)
        run_until(server, lambda: server.handlers and len(server.handlers[0][0].lines) == 2,
                  "both lines read")
        assert server.handlers[0][1] == ("203.0.113.7", 40001)
        assert server.handlers[0][0].lines == [b"first", b"second"]


def test_v2_in_pieces(serve):
    server = serve()
    client = connect(server)
    data = v2_header(family=0x21, tlvs=b"\x04\x00\x10" + bytes(16)) + b"line\n"
    with client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (data[:3], data[3:15], data[15:17], data[17:60], data[60:]):
            client.sendall(piece)
            support.run_iterations(asyncore, server._map, 3)
        run_until(server, lambda: server.handlers and server.handlers[0][0].lines, "line read")
        assert server.handlers[0][1] == ("2001:db8::7", 40002, 0, 0)
        assert server.handlers[0][0].lines == [b"line"]


def test_tls_after_the_header_in_the_same_segment(serve):
    # The ClientHello is sent in one write with the header: it must reach TLS.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.path.join(CERTS, "server.pem"))

    class TLSHandler(Handler):
        def __init__(self, sock, addr, server):
            Handler.__init__(self, sock, addr, server)
            start_tls(self, context, server_side=True)

    server = serve()
    server.handler = TLSHandler
    client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                                cafile=os.path.join(CERTS, "ca.pem"))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    client = connect(server)
    client.sendall(v2_header() + outgoing.read())
    answers = []

    def client_side():
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                client.sendall(outgoing.read())
                incoming.write(client.recv(65536))
        tls.write(b"over tls\n")
        client.sendall(outgoing.read())
        while True:
            try:
                answers.append(tls.read(100))
                return
            except ssl.SSLWantReadError:
                incoming.write(client.recv(65536))

    with client:
        thread = support.start_thread(client_side)
        run_until(server, lambda: not thread.is_alive(), "the client's TLS exchange")
        thread.finish()
    assert answers == [b"over tls\n"]
    assert server.handlers[0][1] == ("203.0.113.7", 40001)
    assert server.handlers[0][0].lines == [b"over tls"]


def test_an_error_in_handle_accepted_goes_to_the_listener(serve):
    class Failing(Handler):
        def __init__(self, sock, addr, server):
            sock.close()
            raise ValueError("handler failed")

    server = serve()
    server.handler = Failing
    with connect(server) as client:
        client.sendall(b"PROXY UNKNOWN\r\n")
        run_until(server, lambda: server.errors, "the listener's handle_error")
    assert [str(e) for e in server.errors] == ["handler failed"]
    assert list(server._map.values()) == [server]


# -- bad headers -------------------------------------------------------------------


def closed_by_server(server, client, what):
    def closed():
        try:
            return client.recv(100) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:  # closed with our bytes unread
            return True

    client.setblocking(False)
    run_until(server, closed, what)


BAD_HEADERS = [
    ("missing", b"GET / HTTP/1.0\r\n\r\n", "sent no PROXY protocol header"),
    ("missing-binary", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "no PROXY protocol"),
    ("v1-bad-address", b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "not TCP4 addresses"),
    ("v1-v6-as-v4", b"PROXY TCP4 ::1 ::1 1 2\r\n", "not TCP4 addresses"),
    ("v1-bad-port", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad port"),
    ("v1-port-sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "bad port"),
    ("v1-bad-protocol", b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "malformed"),
    ("v1-fields", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "malformed"),
    ("v1-two-spaces", b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "malformed"),
    ("v1-no-cr", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "does not end with CRLF"),
    ("v1-not-ascii", b"PROXY TCP4 1.2.3.4 5.6.7.\xb8 1 2\r\n", "not ASCII"),
    ("v1-oversized", b"PROXY TCP6 " + b"f" * 200 + b"\r\n", "no line end within 107 bytes"),
    ("v2-unknown-family", v2_header(family=0x41, addresses=bytes(12)),
     "unknown address family and transport 0x41"),
    ("v2-unknown-transport", v2_header(family=0x13, addresses=bytes(12)),
     "unknown address family and transport 0x13"),
    ("v2-unknown-command", v2_header(command=0x2), "unknown command 0x2"),
    ("v2-version-3", b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12), "version 3"),
    ("v2-bad-signature", b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + bytes(12),
     "sent no PROXY protocol header"),
    ("v2-oversized", v2_header(length=0xFFFF), "header is 65551 bytes, over the 4112"),
    ("v2-short-addresses", v2_header(family=0x21, addresses=bytes(12)),
     "too short for its addresses"),
]


@pytest.mark.parametrize("name, sent, reason", BAD_HEADERS, ids=[b[0] for b in BAD_HEADERS])
def test_a_bad_header_closes_that_connection(serve, name, sent, reason):
    server = serve()
    before = rejected()
    with connect(server) as client:
        client.sendall(sent + b"data\n")
        closed_by_server(server, client, "the connection closed")
    assert server.handlers == []
    assert rejected() == before + 1
    assert len(server.logged) == 1
    kind, message = server.logged[0]
    assert kind == "error"
    assert message.startswith("PROXY protocol: closing the connection from 127.0.0.1:")
    assert reason in message
    assert list(server._map.values()) == [server]
    assert_served(server)


@pytest.mark.parametrize("sent, log_type, reason", [
    (b"", "info", "closed before sending a PROXY protocol header"),
    (b"PROXY TCP4 1.2.3.4", "error",
     "closed within its PROXY protocol header (18 bytes of it read)"),
    (V2_SIGNATURE + b"\x21\x11", "error", "(14 bytes of it read)"),
    (v2_header()[:20], "error", "(20 bytes of it read)"),
], ids=["nothing", "v1", "v2-fixed-part", "v2-addresses"])
def test_a_header_cut_short_by_the_client(serve, sent, log_type, reason):
    server = serve()
    before = rejected()
    with connect(server) as client:
        client.sendall(sent)
        client.shutdown(socket.SHUT_WR)
        closed_by_server(server, client, "the connection closed")
    assert server.handlers == []
    # A truncated header is rejected; a peer gone before its first byte is not.
    assert rejected() == before + (log_type == "error")
    assert [m for t, m in server.logged if t == log_type and reason in m], server.logged
    assert_served(server)


@pytest.mark.parametrize("sent, log_type", [(b"", "info"), (b"PROXY TCP4 1.2", "error")],
                         ids=["nothing", "part"])
def test_a_connection_reset_before_its_header(serve, sent, log_type):
    # A health check's end: connect, (a header,) then a reset. Gone before a byte of
    # it was read, it is no bad input: logged as "info", not as an error.
    server = serve()
    before = rejected()
    client = connect(server)
    client.sendall(sent)
    if sent:
        run_until(server, lambda: len(server._map) == 2, "accepted")
        support.run_iterations(asyncore, server._map, 3)  # the bytes are read
    support.reset(client)
    run_until(server, lambda: server.logged, "the close logged")
    assert server.handlers == []
    [(kind, message)] = server.logged
    assert kind == log_type, message
    assert rejected() == before + (log_type == "error")
    assert list(server._map.values()) == [server]
    assert_served(server)


@pytest.mark.parametrize("versions, sent, reason", [
    ((1,), v2_header(), "a PROXY protocol v2 header; accepted: v1"),
    ((2,), b"PROXY UNKNOWN\r\n", "a PROXY protocol v1 header; accepted: v2"),
])
def test_only_the_versions_asked_for(serve, versions, sent, reason):
    server = serve(versions=versions)
    with connect(server) as client:
        client.sendall(sent)
        closed_by_server(server, client, "the connection closed")
    assert server.handlers == []
    assert reason in server.logged[0][1]


def test_a_header_that_never_completes(serve):
    server = serve(timeout=0.3)
    before = rejected()
    with connect(server) as slow, connect(server) as silent:
        slow.sendall(b"PROXY TCP4 ")
        closed_by_server(server, slow, "the slow client closed")
        closed_by_server(server, silent, "the silent client closed")
    assert server.handlers == []
    assert [m.split(": ", 2)[2] for _, m in server.logged] == [
        "no complete PROXY protocol header within 0.3 s"] * 2
    assert rejected() == before + 2
    assert list(server._map.values()) == [server]
    assert_served(server)


def test_the_loop_serves_others_while_a_header_is_pending(serve):
    server = serve()
    with connect(server) as pending:
        pending.sendall(b"PROXY TCP4 ")
        assert_served(server)  # not blocked behind the pending one
        assert len(server._map) == 3  # the listener, the pending header, the handler
        pending.sendall(b"203.0.113.7 198.51.100.1 40001 443\r\nlate\n")
        run_until(server, lambda: len(server.handlers) == 2 and server.handlers[1][0].lines,
                  "the late line")
        assert server.handlers[1][1] == ("203.0.113.7", 40001)


def test_wrong_arguments(serve, sockmap):
    server = serve()
    with pytest.raises(ValueError, match="already reads the PROXY protocol"):
        accept_proxy_protocol(server)
    plain = Listener(socket.create_server((support.LOCALHOST, 0)), sockmap)
    with pytest.raises(TypeError, match="fastcore asyncore.dispatcher"):
        accept_proxy_protocol(plain.socket)
    for versions in ((), (3,), (1, 2, 3)):
        with pytest.raises(ValueError, match="versions"):
            accept_proxy_protocol(plain, versions=versions)
    with pytest.raises(TypeError, match="versions"):
        accept_proxy_protocol(plain, versions=1)
    for timeout in (0, -1.0):
        with pytest.raises(ValueError, match="timeout"):
            accept_proxy_protocol(plain, timeout=timeout)
    with pytest.raises(TypeError, match="timeout"):
        accept_proxy_protocol(plain, timeout="5")
    assert "handle_accepted" not in vars(plain)


def test_a_socket_without_a_header(sockmap):
    a, b = socket.socketpair()
    with a, b:
        assert proxy_header(a) is None
        assert peer_address(a) == a.getpeername()
        d = asyncore.dispatcher(a, sockmap)
        assert proxy_header(d) is None


# -- behind HAProxy ----------------------------------------------------------------


class Workers:
    """tests/proxy_server.py in its own session; a thread collects its lines."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, SERVER] + list(args), text=True,
                                     stdout=subprocess.PIPE, start_new_session=True)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix):
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail("no line starting %r within %.0f s: %s" % (prefix, TIMEOUT, self.seen))
            if line is None:
                pytest.fail("the server ended before a line starting %r: %s" % (prefix, self.seen))
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def stop(self):
        try:
            os.killpg(self.proc.pid, 15)
            assert self.proc.wait(TIMEOUT) == 0
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(TIMEOUT)


@pytest.fixture
def behind_haproxy(haproxy, tmp_path):
    started = []

    def start(server_options, *server_args):
        workers = Workers(*server_args)
        started.append(workers)
        port = int(workers.expect("ready ").split()[3])
        workers.expect("ready ")
        front = support.closed_port()
        (tmp_path / "haproxy.cfg").write_text(
            "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n"
            "    timeout server 30s\n"
            "frontend front\n    bind 127.0.0.1:%d\n    default_backend hosts\n"
            "backend hosts\n    server host1 127.0.0.1:%d %s\n"
            % (front, port, server_options))
        balancer = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(balancer)
        support.wait_for(lambda: _listening(front), timeout=TIMEOUT, what="haproxy listening")
        return workers, front

    yield start
    for p in reversed(started):
        if isinstance(p, Workers):
            p.stop()
        else:
            p.kill()
            p.wait(TIMEOUT)


def _listening(port):
    try:
        socket.create_connection((support.LOCALHOST, port), timeout=TIMEOUT).close()
    except ConnectionRefusedError:
        return False
    return True


def ask_who(client):
    client.sendall(b"echo me\nwho\n")
    data = b""
    while data.count(b"\n") < 2:
        chunk = client.recv(4096)
        assert chunk, "closed after %r" % data
        data += chunk
    echo, who = data.split(b"\n")[:2]
    assert echo == b"echo me"
    return json.loads(who)


@pytest.mark.parametrize("option", ["send-proxy", "send-proxy-v2"])
def test_behind_haproxy(behind_haproxy, option):
    workers, front = behind_haproxy(option)
    for _ in range(4):  # over both workers, most likely; each one must get it right
        with socket.create_connection((support.LOCALHOST, front), timeout=TIMEOUT) as client:
            me = list(client.getsockname())
            assert ask_who(client) == {"addr": me, "peer": me}
        workers.expect("accepted PROXY %s %d" % tuple(me))
    # (An 'info' line may tell of the fixture's probe of the front port, which
    # HAProxy may pass on as a connection closed before its header.)
    assert not [line for line in workers.seen
                if line.startswith("log ") and not line.startswith("log info ")]


def test_haproxy_health_checks_send_local(behind_haproxy):
    # check-send-proxy: HAProxy's checks open connections with a v2 LOCAL header,
    # which must be accepted (with the balancer's own address), or the host is down.
    workers, front = behind_haproxy("send-proxy-v2 check check-send-proxy inter 200ms")
    line = workers.expect("accepted LOCAL ")
    assert line.split()[2] == "127.0.0.1"
    with socket.create_connection((support.LOCALHOST, front), timeout=TIMEOUT) as client:
        me = list(client.getsockname())
        assert ask_who(client) == {"addr": me, "peer": me}
    # A check's reset that came before its header was read is logged, not as an error.
    assert not [line for line in workers.seen if line.startswith("log error ")]


def test_tls_behind_haproxy(behind_haproxy):
    workers, front = behind_haproxy("send-proxy-v2", "--tls", os.path.join(CERTS, "server.pem"))
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=os.path.join(CERTS, "ca.pem"))
    raw = socket.create_connection((support.LOCALHOST, front), timeout=TIMEOUT)
    me = list(raw.getsockname())
    with context.wrap_socket(raw, server_hostname="localhost") as client:
        assert ask_who(client) == {"addr": me, "peer": me}

