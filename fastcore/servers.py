"""The example servers of ``python -m fastcore echo|chat``."""

import socket

from fastcore import asynchat, asyncore

MAX_PENDING = 4 << 20  # bytes queued for one slow client before it is dropped
MAX_LINE = 64 << 10  # a chat line longer than this closes its connection


class EchoHandler(asyncore.dispatcher_with_send):
    def handle_read(self):
        data = self.recv(65536)
        if data:
            self.send(data)
            if len(self.out_buffer) > MAX_PENDING:
                self.log_info("%r reads too slowly: closing it" % (self.addr,), "warning")
                self.close()

    def handle_close(self):
        self.close()


class ChatMember(asynchat.async_chat):
    def __init__(self, sock, map, room):
        asynchat.async_chat.__init__(self, sock, map)
        self.room = room
        self.line = []
        self.line_size = 0
        self.set_terminator(b"\n")
        room.add(self)

    def collect_incoming_data(self, data):
        self.line.append(data)
        self.line_size += len(data)
        if self.line_size > MAX_LINE:
            self.log_info(
                "%r sent a line over %d bytes: closing it" % (self.addr, MAX_LINE), "warning"
            )
            self.close()

    def found_terminator(self):
        line = b"".join(self.line) + b"\n"
        self.line = []
        self.line_size = 0
        for member in list(self.room):
            if member is not self:
                member.push(line)

    def handle_close(self):
        self.close()

    def close(self):
        self.room.discard(self)
        asynchat.async_chat.close(self)


def listening_socket(host, port, backlog=1024):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class Server(asyncore.dispatcher):
    def __init__(self, host, port, make_handler, map):
        asyncore.dispatcher.__init__(self, map=map)
        self.make_handler = make_handler
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.create_socket(family, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(1024)
        self.address = self.socket.getsockname()

    def handle_accepted(self, sock, addr):
        self.make_handler(sock, self._map)
