"""The server test_proxy_protocol.py runs behind HAProxy: fastcore.serve_forever()
workers whose listener reads the PROXY protocol (fastcore.proxy).

Each worker prints "ready <index> <pid> <port>" when it is serving and
"accepted <command> <host> <port>" for every connection handed on (command:
PROXY or LOCAL, the balancer's health checks). A connection's handler answers
the line "who" with a JSON object {"addr": the addr handle_accepted got,
"peer": fastcore.proxy.peer_address(handler)}, and echoes any other line. With
--tls CERTFILE the handler starts TLS first.
"""

import argparse
import json
import os
import ssl
import sys

from fastcore import asynchat, asyncore, serve_forever
from fastcore.proxy import accept_proxy_protocol, peer_address, proxy_header
from fastcore.tls import start_tls
from fastcore.workers import Listener


def say(line):
    # One write per line: the workers share this pipe.
    os.write(1, line.encode() + b"\n")


class LineHandler(asynchat.async_chat):
    def __init__(self, sock, addr, context):
        asynchat.async_chat.__init__(self, sock)
        self.accepted_addr = addr
        self.set_terminator(b"\n")
        self.parts = []
        if context is not None:
            start_tls(self, context, server_side=True)

    def collect_incoming_data(self, data):
        self.parts.append(data)

    def found_terminator(self):
        line, self.parts = b"".join(self.parts), []
        if line == b"who":
            answer = {"addr": list(self.accepted_addr), "peer": list(peer_address(self))}
            self.push(json.dumps(answer).encode() + b"\n")
        else:
            self.push(line + b"\n")

    def handle_close(self):
        self.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tls", metavar="CERTFILE")
    args = parser.parse_args()
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls)

    class Server(Listener):
        def __init__(self, sock):
            Listener.__init__(self, sock)
            accept_proxy_protocol(self, timeout=10.0)

        def handle_accepted(self, sock, addr):
            say("accepted %s %s %s" % (proxy_header(sock).command, addr[0], addr[1]))
            LineHandler(sock, addr, context)

        def log_info(self, message, type="info"):
            say("log %s %s" % (type, message))

    def on_worker_start(index):
        port = [d for d in asyncore.socket_map.values() if isinstance(d, Server)][0].addr[1]
        say("ready %d %d %d" % (index, os.getpid(), port))

    serve_forever(Server, ("127.0.0.1", 0), args.workers, reuse_port=False,
                  loop_kwargs={"timeout": 5.0}, on_worker_start=on_worker_start)
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
