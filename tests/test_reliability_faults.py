"""Reliability: peers that fail.

A reset in the middle of a large push, half-closes, peers gone before
handle_accepted, connects to closed ports: each case with other connections
being served at the same time, which must not notice.  (Single-dispatcher
errno mapping is in test_dispatcher.py, handle_close-once in test_fixes.py.)
"""

import socket

import pytest
import support
from support import USE_POLL, PeerReader, pump, run_until

fastcore_only = pytest.mark.fastcore_only
BIG = 8 << 20


def _bystander(kit, m):
    """An echo connection over a socketpair: (chat, peer, reader)."""
    a, b = socket.socketpair()
    return kit.EchoChat(a, map=m), b, PeerReader(b)


def _check_bystander(asyncore, m, chat, peer, reader, use_poll, tag):
    line = b"bystander %s\n" % tag
    before = len(reader.buf)
    peer.sendall(line)
    got = pump(asyncore, m, reader, before + len(line), use_poll=use_poll)
    assert got[before:] == line
    assert chat.count("handle_error") == 0 and chat.count("handle_close") == 0


def _big_sender(kit, asyncore, how):
    """A server-side connection that pushes BIG bytes as soon as it exists."""
    if how == "chat":
        class Sender(kit.IOChat):
            def start(self):
                self.push(b"x" * BIG)
    else:
        class Sender(kit.Reader):
            def start(self):
                self.send(b"x" * BIG)
    return Sender


def _tcp_with_sender(kit, asyncore, m, how):
    client, server_side = support.tcp_pair()
    s = _big_sender(kit, asyncore, how)(server_side, map=m)
    s.start()
    return client, s


# ---------------------------------------------------------------------------
# reset in the middle of a large push
# ---------------------------------------------------------------------------

@fastcore_only   # the reference closes twice with use_poll (RST: read error, then HUP)
@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("how", ["chat", "with_send"])
@pytest.mark.parametrize("when", ["after-some-reads", "before-any-read"])
def test_reset_mid_push(asyncore, kit, sockmap, use_poll, how, when):
    chat, peer, reader = _bystander(kit, sockmap)
    client, sender = _tcp_with_sender(kit, asyncore, sockmap, how)
    if when == "after-some-reads":
        pr = PeerReader(client)
        pump(asyncore, sockmap, pr, 256 * 1024, use_poll=use_poll)
    _check_bystander(asyncore, sockmap, chat, peer, reader, use_poll, b"during")
    support.reset(client)
    # run_until fails the test if loop() raises
    run_until(asyncore, sockmap, lambda: sender not in sockmap.values(), use_poll=use_poll,
              what="sender closed after the reset")
    support.run_iterations(asyncore, sockmap, 5, use_poll=use_poll)
    assert sender.count("handle_close") == 1, sender.events
    assert sender.count("handle_error") == 0, sender.events
    assert sender.socket is None or sender.socket.fileno() == -1
    _check_bystander(asyncore, sockmap, chat, peer, reader, use_poll, b"after")
    peer.close()


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_reset_of_many_pushing_connections_at_once(asyncore, kit, sockmap, use_poll):
    """Twenty connections each with 8 MiB queued, reset in the same instant:
    twenty handle_closes, one each, and the bystander keeps its echo."""
    chat, peer, reader = _bystander(kit, sockmap)
    pairs = [_tcp_with_sender(kit, asyncore, sockmap, "chat") for _ in range(20)]
    support.run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    for client, _ in pairs:
        support.reset(client)
    run_until(asyncore, sockmap, lambda: len(sockmap) == 1, use_poll=use_poll,
              what="all reset senders closed")
    assert [s.count("handle_close") for _, s in pairs] == [1] * 20
    assert sum(s.count("handle_error") for _, s in pairs) == 0
    _check_bystander(asyncore, sockmap, chat, peer, reader, use_poll, b"after")
    peer.close()


# ---------------------------------------------------------------------------
# half-close
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
def test_half_close_after_requests_gets_all_replies(asyncore, kit, sockmap, use_poll):
    """The peer sends 200 lines and shuts its write side: every echo arrives
    before the connection is closed."""
    server = kit.EchoServer(sockmap)
    c = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
    lines = b"".join(b"line %d\n" % i for i in range(200))
    c.sendall(lines)
    c.shutdown(socket.SHUT_WR)
    reader = PeerReader(c)
    run_until(asyncore, sockmap, lambda: reader.at_eof(), use_poll=use_poll,
              what="server closed after the half-close")
    assert bytes(reader.buf) == lines
    (h,) = server.handlers
    assert h.count("handle_close") == 1 and h.count("handle_error") == 0
    c.close()


@fastcore_only
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_half_close_reply_in_handle_close(asyncore, asynchat, sockmap, use_poll):
    """A request-until-EOF protocol: handle_close (the peer is done sending)
    queues a 4 MiB reply and close_when_done.  The reply arrives once and
    whole; the EOF still readable meanwhile brings no second handle_close."""
    reply = bytes(range(256)) * (16 << 10)

    class UntilEOF(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map)
            self.set_terminator(None)
            self.request = bytearray()
            self.closes = 0

        def collect_incoming_data(self, data):
            self.request += data

        def handle_close(self):
            self.closes += 1
            self.push(bytes(self.request) + reply)
            self.close_when_done()

    client, server_side = support.tcp_pair()
    u = UntilEOF(server_side, sockmap)
    client.sendall(b"request body")
    client.shutdown(socket.SHUT_WR)
    reader = PeerReader(client)
    run_until(asyncore, sockmap, lambda: reader.at_eof(), use_poll=use_poll, timeout=10,
              what="reply sent and closed")
    assert bytes(reader.buf) == b"request body" + reply
    assert u.closes == 1
    assert u not in sockmap.values()
    client.close()


# ---------------------------------------------------------------------------
# a peer gone before handle_accepted
# ---------------------------------------------------------------------------

@fastcore_only   # the reference closes a reset one twice with use_poll
@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("how", ["reset", "close"])
def test_peer_gone_before_accept(asyncore, kit, sockmap, use_poll, how):
    """Clients that connect and vanish before the server's loop runs: each
    accepted handler is closed once without a traceback, and the next client
    is served."""
    server = kit.EchoServer(sockmap)
    for _ in range(10):
        s = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
        if how == "reset":
            support.reset(s)
        else:
            s.close()
    good = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
    good.sendall(b"hello\n")
    reader = PeerReader(good)
    pump(asyncore, sockmap, reader, 6, use_poll=use_poll)
    assert bytes(reader.buf) == b"hello\n"
    run_until(asyncore, sockmap, lambda: len(sockmap) == 2, use_poll=use_poll,
              what="vanished clients' handlers closed")
    gone = server.handlers[:-1]
    # a connection reset while in the backlog may never reach accept()
    assert len(gone) == 10 if how == "close" else len(gone) <= 10
    for h in gone:
        assert h.count("handle_close") == 1, h.events
        assert h.count("handle_error") == 0, h.events
    assert server.count("handle_error") == 0
    assert server.connected is False and server.accepting
    good.close()


# ---------------------------------------------------------------------------
# connects to a closed port
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("use_poll", USE_POLL)
def test_refused_connects_among_live_traffic(asyncore, kit, sockmap, use_poll, capsys):
    """Fifty connects to a closed port while an echo is in progress: each
    refused client is closed once and its fd released; the echo goes on."""
    chat, peer, reader = _bystander(kit, sockmap)
    port = support.closed_port()
    clients = []
    for i in range(50):
        c = kit.ClientChat(("127.0.0.1", port), sockmap) if i % 2 else kit.Reader(map=sockmap)
        if not i % 2:
            c.create_socket()
            c.connect(("127.0.0.1", port))
        clients.append((c, c.socket.fileno()))
    _check_bystander(asyncore, sockmap, chat, peer, reader, use_poll, b"during")
    run_until(asyncore, sockmap, lambda: len(sockmap) == 1, use_poll=use_poll,
              what="refused clients closed")
    capsys.readouterr()  # the reference modules print handle_error's traceback
    for c, fd in clients:
        assert c.count("handle_close") == 1, c.events
        assert c.count("handle_connect") == 0
        assert c.connected is False
        assert not support.fd_is_open(fd)   # no socket was made since
    _check_bystander(asyncore, sockmap, chat, peer, reader, use_poll, b"after")
    peer.close()
