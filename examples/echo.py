"""A line-echo server on fastcore's asynchat, with clients in the same loop.

    python examples/echo.py                  # 50 clients x 200 lines, then exit
    python examples/echo.py --serve --port 8007   # just serve, until Ctrl-C

The server is written against the standard asyncore/asynchat API only; with
``--reference`` it runs on the standard modules instead (Python <= 3.11, or
pyasyncore/pyasynchat installed), for comparison.
"""

import argparse
import socket
import sys
import time


def load(reference):
    if reference:
        import warnings

        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat
        import asyncore

        return asyncore, asynchat, "reference asyncore"
    import fastcore
    from fastcore import asynchat, asyncore

    impl = "extension" if fastcore.EXTENSION else "pure Python"
    return asyncore, asynchat, "fastcore (%s, %s)" % (impl, fastcore.default_backend())


def build(asyncore, asynchat):
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

    class EchoServer(asyncore.dispatcher):
        def __init__(self, host, port, map):
            asyncore.dispatcher.__init__(self, map=map)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind((host, port))
            self.listen(1024)

        def handle_accepted(self, sock, addr):
            EchoHandler(sock, self._map)

    class EchoClient(asynchat.async_chat):
        def __init__(self, addr, lines, map):
            asynchat.async_chat.__init__(self, map=map)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.connect(addr)
            self.set_terminator(b"\n")
            self.lines = lines
            self.answered = 0
            self.push(b"line 0\n")

        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            self.answered += 1
            if self.answered < self.lines:
                self.push(b"line %d\n" % self.answered)
            else:
                self.close()

    return EchoServer, EchoClient


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--serve", action="store_true", help="serve until interrupted")
    parser.add_argument("--use-poll", action="store_true", help="poll()-style dispatch")
    parser.add_argument("--reference", action="store_true", help="use the standard modules")
    args = parser.parse_args(argv)

    asyncore, asynchat, label = load(args.reference)
    echo_server, echo_client = build(asyncore, asynchat)
    socket_map = {}
    server = echo_server(args.host, args.port, socket_map)
    addr = server.socket.getsockname()
    print("echo server on %s:%d, %s" % (addr[0], addr[1], label))
    if args.serve:
        try:
            asyncore.loop(timeout=1.0, map=socket_map, use_poll=args.use_poll)
        except KeyboardInterrupt:
            pass
        return 0

    clients = [echo_client(addr, args.lines, socket_map) for _ in range(args.clients)]
    start = time.perf_counter()
    deadline = start + 120
    while any(c.answered < c.lines for c in clients) and time.perf_counter() < deadline:
        asyncore.loop(timeout=1.0, map=socket_map, count=1, use_poll=args.use_poll)
    elapsed = time.perf_counter() - start
    answered = sum(c.answered for c in clients)
    asyncore.close_all(socket_map)
    print(
        "%d clients x %d lines: %d round trips in %.3f s (%.0f/s)"
        % (args.clients, args.lines, answered, elapsed, answered / elapsed)
    )
    return 0 if answered == args.clients * args.lines else 1


if __name__ == "__main__":
    sys.exit(main())
