"""fastcore.limit_connections(): a listener stops accepting at the limit, resumes below it."""

import socket

import pytest
from support import DEFAULT_TIMEOUT, LOCALHOST, PeerReader, pump, run_iterations, run_until

pytestmark = pytest.mark.fastcore_only


@pytest.fixture
def server(fastcore_pkg, asyncore):
    map = {}
    handlers = []

    class Handler(asyncore.dispatcher_with_send):
        def handle_read(self):
            data = self.recv(64)
            if data:
                self.send(data)

        def handle_close(self):
            self.close()

    class Server(asyncore.dispatcher):
        def __init__(self, limit):
            super().__init__(map=map)
            self.create_socket()
            self.bind((LOCALHOST, 0))
            self.listen(64)
            fastcore_pkg.limit_connections(self, limit)
            self.address = self.socket.getsockname()

        def handle_accepted(self, sock, addr):
            handlers.append(Handler(sock, map=map))

    clients = []

    def connect(n):
        for _ in range(n):
            clients.append(socket.create_connection(server.address, timeout=DEFAULT_TIMEOUT))

    server = Server(3)
    server.map, server.handlers, server.connect, server.clients = map, handlers, connect, clients
    yield server
    for c in clients:
        c.close()
    asyncore.close_all(map=map, ignore_all=True)


def test_stops_accepting_at_the_limit_and_resumes_as_connections_close(asyncore, server):
    server.connect(5)
    run_until(asyncore, server.map, lambda: len(server.handlers) == 3)
    # The other two wait in the kernel's backlog, not accepted.
    run_iterations(asyncore, server.map, 20)
    assert len(server.handlers) == 3
    # Each close lets one more in.
    server.handlers[0].close()
    run_until(asyncore, server.map, lambda: len(server.handlers) == 4)
    run_iterations(asyncore, server.map, 10)
    assert len(server.handlers) == 4
    server.handlers[1].close()
    run_until(asyncore, server.map, lambda: len(server.handlers) == 5)
    # The late ones are served like the others.
    late = server.clients[4]
    late.sendall(b"ping")
    assert pump(asyncore, server.map, PeerReader(late), 4) == b"ping"


def test_peer_closing_frees_a_slot(asyncore, server):
    server.connect(4)
    run_until(asyncore, server.map, lambda: len(server.handlers) == 3)
    server.clients[0].close()
    run_until(asyncore, server.map, lambda: len(server.handlers) == 4)


def test_raising_the_limit_resumes_and_none_removes_it(fastcore_pkg, asyncore, server):
    server.connect(6)
    run_until(asyncore, server.map, lambda: len(server.handlers) == 3)
    fastcore_pkg.limit_connections(server, 5)
    assert fastcore_pkg.get_connection_limit(server) == 5
    run_until(asyncore, server.map, lambda: len(server.handlers) == 5)
    run_iterations(asyncore, server.map, 10)
    assert len(server.handlers) == 5
    fastcore_pkg.limit_connections(server, None)
    assert fastcore_pkg.get_connection_limit(server) is None
    run_until(asyncore, server.map, lambda: len(server.handlers) == 6)


def test_with_poll_style_dispatch(asyncore, server):
    server.connect(4)
    run_until(asyncore, server.map, lambda: len(server.handlers) == 3, use_poll=True)
    run_iterations(asyncore, server.map, 10, use_poll=True)
    assert len(server.handlers) == 3
    server.handlers[2].close()
    run_until(asyncore, server.map, lambda: len(server.handlers) == 4, use_poll=True)


def test_accepted_socket_not_kept_does_not_count(fastcore_pkg, asyncore):
    map = {}
    accepted = []

    class Refuser(asyncore.dispatcher):
        def handle_accepted(self, sock, addr):
            accepted.append(addr)
            sock.close()

    server = Refuser(map=map)
    server.create_socket()
    server.bind((LOCALHOST, 0))
    server.listen(16)
    fastcore_pkg.limit_connections(server, 1)
    clients = [socket.create_connection(server.socket.getsockname(), timeout=DEFAULT_TIMEOUT)
               for _ in range(3)]
    try:
        assert fastcore_pkg.get_connection_limit(server) == 1
        run_until(asyncore, map, lambda: len(accepted) == 3)
    finally:
        for c in clients:
            c.close()
        asyncore.close_all(map=map)


def test_max_connections_of_a_subclass_is_its_own(asyncore):
    """asyncore defines no max_connections: any value is the program's, and
    the listener accepts every connection."""
    map = {}
    handlers = []

    class Server(asyncore.dispatcher):
        max_connections = "many"

        def handle_accepted(self, sock, addr):
            handlers.append(asyncore.dispatcher(sock, map=map))

    server = Server(map=map)
    server.create_socket()
    server.bind((LOCALHOST, 0))
    server.listen(16)
    assert Server.__dict__["max_connections"] == "many"
    server.max_connections = 1
    clients = [socket.create_connection(server.socket.getsockname(), timeout=DEFAULT_TIMEOUT)
               for _ in range(3)]
    try:
        run_until(asyncore, map, lambda: len(handlers) == 3)
        assert server.max_connections == 1
    finally:
        for c in clients:
            c.close()
        asyncore.close_all(map=map)


def test_limit_is_checked_at_the_call(fastcore_pkg, asyncore):
    disp = asyncore.dispatcher(map={})
    for bad, exc in ((0, ValueError), (-2, ValueError), ("3", TypeError), (2.5, TypeError),
                     (True, TypeError)):
        with pytest.raises(exc):
            fastcore_pkg.limit_connections(disp, bad)
    assert fastcore_pkg.get_connection_limit(disp) is None
    for not_a_dispatcher in (None, socket.socket, object()):
        with pytest.raises(TypeError):
            fastcore_pkg.limit_connections(not_a_dispatcher, 3)
        with pytest.raises(TypeError):
            fastcore_pkg.get_connection_limit(not_a_dispatcher)


def test_a_connection_handed_on_by_the_proxy_protocol_still_counts(asyncore, server):
    from fastcore.proxy import accept_proxy_protocol

    accept_proxy_protocol(server)
    header = b"PROXY TCP4 192.0.2.1 192.0.2.2 1111 2222\r\n"
    server.connect(4)
    for client in server.clients:
        client.sendall(header)
    run_until(asyncore, server.map, lambda: len(server.handlers) == 3)
    # Handed on, the three still count: the fourth waits for a slot.
    run_iterations(asyncore, server.map, 20)
    assert len(server.handlers) == 3
    server.handlers[0].close()
    run_until(asyncore, server.map, lambda: len(server.handlers) == 4)
