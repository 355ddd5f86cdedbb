"""fastcore.aio: dispatchers and coroutines on one asyncio (or uvloop) loop."""

import asyncio
import socket
import threading

import pytest
from support import DEFAULT_TIMEOUT, LOCALHOST, start_thread

pytestmark = pytest.mark.fastcore_only

LOOPS = ["asyncio"]
try:
    import uvloop  # noqa: F401

    LOOPS.append("uvloop")
except ImportError:
    pass


@pytest.fixture(params=LOOPS)
def run(request):
    """Run a coroutine to completion on a fresh loop of the given kind, bounded in time."""

    def runner(coro_fn, *args):
        async def bounded():
            return await asyncio.wait_for(coro_fn(*args), DEFAULT_TIMEOUT)

        if request.param == "uvloop":
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(bounded())
        finally:
            loop.close()

    return runner


@pytest.fixture
def aio():
    from fastcore import aio

    yield aio
    for bridge in list(aio._bridges):
        bridge.detach()


def echo_server(asyncore, asynchat, map, on_line=None):
    class EchoHandler(asynchat.async_chat):
        def __init__(self, sock):
            super().__init__(sock, map=map)
            self.set_terminator(b"\n")
            self.parts = []

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            line = b"".join(self.parts)
            self.parts = []
            if on_line is not None:
                on_line(self, line)
            else:
                self.push(line + b"\n")

    class Server(asyncore.dispatcher):
        def __init__(self):
            super().__init__(map=map)
            self.create_socket()
            self.set_reuse_addr()
            self.bind((LOCALHOST, 0))
            self.listen(64)
            self.address = self.socket.getsockname()

        def handle_accepted(self, sock, addr):
            EchoHandler(sock)

    return Server()


def test_asynchat_server_and_asyncio_clients_share_one_loop(asyncore, asynchat, aio, run):
    map = {}
    server = echo_server(asyncore, asynchat, map)

    async def client(i):
        reader, writer = await asyncio.open_connection(*server.address)
        got = []
        for k in range(20):
            writer.write(b"client %d line %d\n" % (i, k))
            got.append(await reader.readline())
        writer.close()
        return got

    async def main():
        bridge = aio.attach(map)
        results = await asyncio.gather(*(client(i) for i in range(10)))
        server.close()
        await bridge.wait_empty()  # the handlers close as their clients leave
        return results

    results = run(main)
    for i, got in enumerate(results):
        assert got == [b"client %d line %d\n" % (i, k) for k in range(20)]
    assert map == {}


def test_dispatcher_made_and_pushed_from_a_coroutine(asyncore, asynchat, aio, run):
    """A fastcore client created inside a coroutine, talking to an asyncio
    server: the change hook registers it without any event."""
    map = {}
    received = []

    class Client(asynchat.async_chat):
        def __init__(self, address):
            super().__init__(map=map)
            self.create_socket()
            self.connect(address)
            self.set_terminator(b"\n")
            self.parts = []

        def handle_connect(self):
            pass

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            received.append(b"".join(self.parts))
            self.parts = []
            if len(received) == 2:
                self.close()

    async def handle(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line.upper())
        writer.close()

    async def main():
        srv = await asyncio.start_server(handle, LOCALHOST, 0)
        address = srv.sockets[0].getsockname()
        bridge = aio.attach(map)
        client = Client(address)
        client.push(b"one\n")
        await asyncio.sleep(0.05)  # lets the asyncio side run; not synchronisation
        client.push(b"two\n")
        await bridge.wait_empty()
        srv.close()
        await srv.wait_closed()

    run(main)
    assert received == [b"ONE", b"TWO"]


def test_fastcore_timers_and_thread_handoff_run_under_the_bridge(fastcore_pkg, aio, run):
    map = {}
    events = []

    async def main():
        bridge = aio.attach(map)
        done = asyncio.get_running_loop().create_future()
        fastcore_pkg.call_later(0.02, events.append, "timer")

        def from_thread():
            fastcore_pkg.call_soon_threadsafe(
                lambda: (events.append(("soon", threading.get_ident())), done.set_result(None)))

        thread = start_thread(from_thread)
        await done
        thread.finish()
        while "timer" not in events:
            await asyncio.sleep(0.005)
        bridge.detach()

    run(main)
    assert ("soon", threading.get_ident()) in events and "timer" in events


def test_spawn_from_a_handler_hands_the_result_back(asyncore, asynchat, aio, run):
    map = {}

    async def slow_upper(line):
        await asyncio.sleep(0.01)
        return line.upper()

    def on_line(handler, line):
        def deliver(task):
            handler.push(task.result() + b"\n")

        aio.spawn(slow_upper(line), callback=deliver)

    server = echo_server(asyncore, asynchat, map, on_line)

    async def main():
        bridge = aio.attach(map)
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"abc\ndef\n")
        got = [await reader.readline(), await reader.readline()]
        writer.close()
        bridge.detach()
        return got

    try:
        assert run(main) == [b"ABC\n", b"DEF\n"]
    finally:
        asyncore.close_all(map=map)


def test_polled_dispatcher_is_asked_again_without_events(asyncore, aio, run):
    """A dispatcher with its own writable(): turning true from a coroutine is
    noticed within poll_interval."""
    map = {}
    a, b = socket.socketpair()
    wrote = []

    class Gate(asyncore.dispatcher):
        open = False

        def writable(self):
            return self.open

        def handle_write(self):
            self.send(b"through")
            wrote.append(True)
            self.open = False

        def handle_read(self):
            self.recv(10)

    gate = Gate(a, map=map)

    async def main():
        bridge = aio.attach(map, poll_interval=0.01)
        await asyncio.sleep(0.03)
        assert wrote == []
        gate.open = True
        while not wrote:
            await asyncio.sleep(0.005)
        bridge.detach()

    try:
        run(main)
        b.settimeout(DEFAULT_TIMEOUT)
        assert b.recv(16) == b"through"
    finally:
        gate.close()
        b.close()


def test_exitnow_from_a_handler_ends_the_bridge(asyncore, asynchat, aio, run):
    map = {}

    def on_line(handler, line):
        raise asyncore.ExitNow("stop")

    server = echo_server(asyncore, asynchat, map, on_line)

    async def main():
        bridge = aio.attach(map)
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"bye\n")
        with pytest.raises(asyncore.ExitNow):
            await bridge.wait_empty()
        assert not bridge.attached
        writer.close()

    try:
        run(main)
    finally:
        asyncore.close_all(map=map)


def test_misuse_is_refused_clearly(aio, run):
    with pytest.raises(RuntimeError, match="running asyncio loop"):
        aio.attach({})

    async def nothing():
        return 1

    coro = nothing()
    with pytest.raises(RuntimeError, match="running asyncio loop"):
        aio.spawn(coro)

    async def main():
        map = {}
        bridge = aio.attach(map)
        with pytest.raises(RuntimeError, match="attached already"):
            aio.attach(map)
        with pytest.raises(ValueError, match="epoll or kqueue"):
            aio.attach({}, backend="poll")
        with pytest.raises(ValueError):
            aio.attach({}, poll_interval=0)
        bridge.detach()
        bridge.detach()  # twice is fine

    run(main)


def test_example_runs():
    import os

    from support import run_python

    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "examples", "asyncio_bridge.py")
    args = [example]
    result = run_python(args, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "20 clients x 50 lines" in result.stdout


async def echo_once(address, line):
    reader, writer = await asyncio.open_connection(*address)
    writer.write(line)
    got = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return got


def test_bridge_ends_with_its_loop(asyncore, asynchat, aio, run, capfd):
    """After the loop a map was attached to is closed, changes to the map
    call nothing on it: no "Event loop is closed", printed or raised."""
    map = {}
    server = echo_server(asyncore, asynchat, map)

    async def main():
        bridge = aio.attach(map)
        assert await echo_once(server.address, b"before\n") == b"before\n"
        return bridge

    bridge = run(main)  # closes its loop
    mine, peer = socket.socketpair()
    asyncore.dispatcher(mine, map=map)  # a change to the map
    asyncore.close_all(map=map)
    peer.close()
    assert not bridge.attached
    assert aio._bridges == []
    out, err = capfd.readouterr()
    assert err == ""


def test_attach_in_successive_loops(asyncore, asynchat, aio, run, capfd):
    """One map attached in one asyncio.run() after another (scripts, tests):
    each serves traffic."""
    map = {}
    server = echo_server(asyncore, asynchat, map)

    async def main(n):
        aio.attach(map)
        return await echo_once(server.address, b"run %d\n" % n)

    assert run(main, 1) == b"run 1\n"
    assert run(main, 2) == b"run 2\n"
    asyncore.close_all(map=map)
    out, err = capfd.readouterr()
    assert err == ""
