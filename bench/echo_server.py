"""The line-echo servers of the end-to-end benchmark, one per process.

    python bench/echo_server.py ext|pure|ref [--raw|--doc]    # the asyncore-API server
    python bench/echo_server.py asyncio|uvloop          # the same protocol on Protocols

Prints ``PORT <n>`` once listening on 127.0.0.1, then serves until killed.
Every server sets TCP_NODELAY on its connections (asyncio and uvloop do it
themselves), so that no run waits on Nagle's algorithm.
"""

import argparse
import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import impls  # noqa: E402


def asyncore_server(asyncore, asynchat, variant, backlog):
    """The server written once against the asyncore API: async_chat with one
    push per line; --raw a dispatcher_with_send echoing each recv; --doc the
    asyncore documentation's dispatcher pattern (readable() True, writable()
    while its output buffer holds bytes), echoing whole lines."""

    class EchoHandler(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map=map)
            self.set_terminator(b"\n")
            self.parts = []

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            self.push(b"".join(self.parts) + b"\n")
            self.parts = []

    class RawEchoHandler(asyncore.dispatcher_with_send):
        def handle_read(self):
            data = self.recv(65536)
            if data:
                self.send(data)

    class DocEchoHandler(asyncore.dispatcher):
        def __init__(self, sock, map):
            asyncore.dispatcher.__init__(self, sock, map=map)
            self.pending = b""   # input after the last newline
            self.buffer = b""    # output

        def readable(self):
            return True

        def writable(self):
            return len(self.buffer) > 0

        def handle_read(self):
            data = self.pending + self.recv(65536)
            end = data.rfind(b"\n") + 1
            self.buffer += data[:end]
            self.pending = data[end:]

        def handle_write(self):
            sent = self.send(self.buffer)
            self.buffer = self.buffer[sent:]

    handler = {"raw": RawEchoHandler, "doc": DocEchoHandler}.get(variant, EchoHandler)

    class EchoServer(asyncore.dispatcher):
        def __init__(self, map):
            asyncore.dispatcher.__init__(self, map=map)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(backlog)

        def handle_accepted(self, sock, addr):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handler(sock, self._map)

    socket_map = {}
    server = EchoServer(socket_map)
    announce(server.socket.getsockname()[1])
    # poll-style dispatch: select() cannot watch fds past 1024 in the reference.
    asyncore.loop(timeout=1.0, map=socket_map, use_poll=True)


class LineEcho(asyncio.Protocol):
    """asyncio Protocol: a linear input buffer, one write per line."""

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data):
        buffer = self.buffer
        scan = len(buffer)  # the bytes before it hold no newline
        buffer += data
        start = 0
        write = self.transport.write
        while True:
            end = buffer.find(b"\n", scan)
            if end < 0:
                break
            write(buffer[start : end + 1])
            start = scan = end + 1
        if start:
            del buffer[:start]

    def connection_lost(self, exc):
        self.transport = None


def asyncio_server(use_uvloop, backlog):
    if use_uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(LineEcho, "127.0.0.1", 0, backlog=backlog)
    )
    announce(server.sockets[0].getsockname()[1])
    loop.run_forever()


def announce(port):
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("impl", choices=["ext", "pure", "ref", "asyncio", "uvloop"])
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--raw", action="store_const", const="raw", dest="variant",
                         help="dispatcher_with_send echo")
    variant.add_argument("--doc", action="store_const", const="doc", dest="variant",
                         help="the documentation's dispatcher, writable() overridden")
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args()
    impls.raise_fd_limit()
    if args.impl in impls.ASYNCORE_IMPLS:
        asyncore, asynchat = impls.load(args.impl)
        asyncore_server(asyncore, asynchat, args.variant, args.backlog)
    else:
        asyncio_server(args.impl == "uvloop", args.backlog)


if __name__ == "__main__":
    main()
