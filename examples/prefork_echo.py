"""A line-echo server on every core: fastcore.serve_forever() pre-forks workers.

    python examples/prefork_echo.py --port 8007              # one worker per CPU
    python examples/prefork_echo.py --port 8007 --workers 4
    printf 'hello\\npid\\n' | nc 127.0.0.1 8007    # "pid" answers with the worker's pid

Each worker announces itself; Ctrl-C (or SIGTERM to the parent) stops them all.
Kill a worker (kill -9 <pid>) to see the parent replace it.
"""

import argparse
import logging
import os
import sys

from fastcore import asynchat, serve_forever
from fastcore.workers import Listener


class EchoHandler(asynchat.async_chat):
    def __init__(self, sock):
        asynchat.async_chat.__init__(self, sock)
        self.set_terminator(b"\n")
        self.parts = []

    def collect_incoming_data(self, data):
        self.parts.append(data)

    def found_terminator(self):
        line = b"".join(self.parts)
        self.parts = []
        if line.rstrip(b"\r") == b"pid":
            line = b"%d" % os.getpid()
        self.push(line + b"\n")


class EchoServer(Listener):
    """Made in each worker over the listening socket serve_forever() gives it."""

    def handle_accepted(self, sock, addr):
        EchoHandler(sock)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007)
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: one per core; 0: in this process)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    servers = []

    def make_server(sock):
        servers.append(EchoServer(sock))

    def announce(index):
        host, port = servers[0].addr[:2]
        # one write: the workers share stdout
        sys.stdout.write("worker %d (pid %d) serving %s:%d\n" % (index, os.getpid(), host, port))
        sys.stdout.flush()

    serve_forever(make_server, (args.host, args.port), args.workers, on_worker_start=announce)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
