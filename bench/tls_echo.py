"""TLS line-echo servers compared: fastcore.tls, the reference asyncore with the
ssl wrapping done by hand (the usual do_handshake_on_connect=False loop), and
asyncio's TLS streams.

    python bench/tls_echo.py                        # all three servers
    python bench/tls_echo.py --servers fastcore     # one of fastcore,reference,asyncio
    FASTCORE_NO_EXTENSIONS=1 python bench/tls_echo.py --servers fastcore

Each server runs alone in a child process; the load comes from this process
(asyncio TLS clients): ``--clients`` connections each sending ``--depth`` lines
of 64 bytes and waiting for their echoes, for ``--seconds``; then one
connection echoing ``--bulk-mib`` MiB in 64 KiB writes. The client is often
the bottleneck, so the server's own CPU time per line and per GiB (from
/proc, Linux) is printed too: that is the figure to compare. Certificates:
the test-only ones in tests/certs/. Figures are noisy on a shared machine:
run it more than once.
"""

import argparse
import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(HERE, os.pardir, "tests", "certs")
SERVER_CERT = os.path.join(CERTS, "server.pem")
CA = os.path.join(CERTS, "ca.pem")
LINE = b"x" * 63 + b"\n"


def server_context():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(SERVER_CERT)
    return ctx


def listening_socket():
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    return sock


# -- servers (each runs in its own child process) -----------------------------


def serve_fastcore(sock):
    import fastcore
    from fastcore import asynchat, asyncore
    from fastcore.tls import start_tls

    ctx = server_context()

    class Echo(asynchat.async_chat):
        def __init__(self, conn):
            asynchat.async_chat.__init__(self, conn)
            self.set_terminator(None)

        def collect_incoming_data(self, data):
            self.push(data)

    class Server(asyncore.dispatcher):
        def handle_accepted(self, conn, addr):
            start_tls(Echo(conn), ctx, server_side=True)

    Server(sock).accepting = True  # a listening socket handed over
    impl = "extension" if fastcore.EXTENSION else "pure Python"
    ready("fastcore.tls (%s)" % impl)
    asyncore.loop(timeout=1.0)


def serve_reference(sock):
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    import asynchat
    import asyncore

    ctx = server_context()

    class Echo(asynchat.async_chat):
        """async_chat over an SSLSocket, the handshake driven by hand."""

        def __init__(self, conn):
            conn = ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            asynchat.async_chat.__init__(self, conn)
            self.set_terminator(None)
            self.handshaking = True
            self.want_write = False

        def handshake(self):
            try:
                self.socket.do_handshake()
            except ssl.SSLWantReadError:
                self.want_write = False
            except ssl.SSLWantWriteError:
                self.want_write = True
            else:
                self.handshaking = False

        def handle_read_event(self):
            if self.handshaking:
                self.handshake()
            else:
                asynchat.async_chat.handle_read_event(self)
                # Records already decrypted would wait for the socket otherwise.
                while self.connected and self.socket.pending():
                    asynchat.async_chat.handle_read_event(self)

        def handle_write_event(self):
            if self.handshaking:
                self.handshake()
            else:
                asynchat.async_chat.handle_write_event(self)

        def writable(self):
            if self.handshaking:
                return self.want_write
            return asynchat.async_chat.writable(self)

        def recv(self, size):
            try:
                return asynchat.async_chat.recv(self, size)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise BlockingIOError from None

        def send(self, data):
            try:
                return asynchat.async_chat.send(self, data)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return 0

        def collect_incoming_data(self, data):
            self.push(data)

    class Server(asyncore.dispatcher):
        def handle_accepted(self, conn, addr):
            Echo(conn)

    Server(sock).accepting = True  # a listening socket handed over
    ready("reference asyncore + ssl by hand")
    asyncore.loop(timeout=1.0, use_poll=True)


def serve_asyncio(sock):
    async def echo(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()

    async def main():
        server = await asyncio.start_server(echo, sock=sock, ssl=server_context())
        ready("asyncio streams")
        async with server:
            await server.serve_forever()

    asyncio.run(main())


SERVERS = {"fastcore": serve_fastcore, "reference": serve_reference, "asyncio": serve_asyncio}


def ready(label):
    print(label, flush=True)


# -- the load -------------------------------------------------------------------


def client_context():
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=CA)


async def ping_pong(port, clients, depth, seconds):
    ctx = client_context()
    conns = [
        await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        for _ in range(clients)
    ]
    deadline = time.monotonic() + seconds
    counts = [0] * clients
    burst = LINE * depth

    async def run(i, reader, writer):
        while time.monotonic() < deadline:
            writer.write(burst)
            await reader.readexactly(len(burst))
            counts[i] += depth

    start = time.monotonic()
    await asyncio.gather(*(run(i, r, w) for i, (r, w) in enumerate(conns)))
    elapsed = time.monotonic() - start
    for _, writer in conns:
        writer.close()
    return sum(counts) / elapsed


async def bulk(port, mib):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(), server_hostname="localhost"
    )
    total = mib << 20
    chunk = os.urandom(65536)

    async def send():
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    async def receive():
        n = 0
        while n < total:
            data = await reader.read(1 << 20)
            if not data:
                raise EOFError("server closed after %d bytes" % n)
            n += len(data)

    start = time.monotonic()
    await asyncio.gather(send(), receive())
    elapsed = time.monotonic() - start
    writer.close()
    return mib / elapsed


def measure(name, args):
    sock = listening_socket()
    port = sock.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", name, "--fd", str(sock.fileno())],
        pass_fds=[sock.fileno()],
        stdout=subprocess.PIPE,
        text=True,
    )
    sock.close()
    try:
        label = child.stdout.readline().strip()
        cpu = cpu_seconds(child.pid)
        rate = asyncio.run(ping_pong(port, args.clients, args.depth, args.seconds))
        cpu_lines = cpu_seconds(child.pid) - cpu
        cpu = cpu_seconds(child.pid)
        throughput = asyncio.run(bulk(port, args.bulk_mib))
        cpu_bulk = cpu_seconds(child.pid) - cpu
    finally:
        child.terminate()
        child.wait()
    lines = rate * args.seconds
    print(
        "%-36s %7.0f lines/s, server CPU %5.1f us/line   bulk %6.1f MiB/s, server CPU %5.2f s/GiB"
        % (label, rate, 1e6 * cpu_lines / lines, throughput, cpu_bulk * 1024 / args.bulk_mib),
        flush=True,
    )


def cpu_seconds(pid):
    """User + system CPU time of a process so far (Linux /proc)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="fastcore,reference,asyncio")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bulk-mib", type=int, default=256)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve](socket.socket(fileno=args.fd))
        return
    print("Python %s, %s" % (sys.version.split()[0], ssl.OPENSSL_VERSION))
    for name in args.servers.split(","):
        measure(name, args)


if __name__ == "__main__":
    main()
