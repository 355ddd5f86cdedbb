"""An async_chat line server and asyncio clients sharing one asyncio loop.

    python examples/asyncio_bridge.py            # asyncio's own loop
    python examples/asyncio_bridge.py --uvloop   # uvloop, if installed

The server is written against the asyncore API; fastcore.aio.attach() runs it
on the asyncio loop the clients (coroutines) use. Each line is answered after
a coroutine spawned by the handler "looks it up", and a fastcore timer
reports progress.
"""

import asyncio
import sys

import fastcore
import fastcore.aio
from fastcore import asynchat, asyncore

CLIENTS, LINES = 20, 50


class LineHandler(asynchat.async_chat):
    def __init__(self, sock, map):
        super().__init__(sock, map=map)
        self.set_terminator(b"\n")
        fastcore.set_idle_timeout(self, 10)  # idle connections are closed
        self.parts = []

    def collect_incoming_data(self, data):
        self.parts.append(data)

    def found_terminator(self):
        line = b"".join(self.parts)
        self.parts = []
        fastcore.aio.spawn(lookup(line), callback=self.answer)

    def answer(self, task):
        self.push(task.result() + b"\n")


async def lookup(line):
    await asyncio.sleep(0)  # stands for real asynchronous work
    return line.upper()


class Server(asyncore.dispatcher):
    def __init__(self, map):
        super().__init__(map=map)
        self.map = map
        self.create_socket()
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(128)

    def handle_accepted(self, sock, addr):
        LineHandler(sock, self.map)


async def client(address, i):
    reader, writer = await asyncio.open_connection(*address)
    for k in range(LINES):
        line = b"client %d line %d" % (i, k)
        writer.write(line + b"\n")
        assert await reader.readline() == line.upper() + b"\n"
    writer.close()
    await writer.wait_closed()


async def main():
    socket_map = {}
    server = Server(socket_map)
    bridge = fastcore.aio.attach(socket_map)
    done = []
    progress = fastcore.call_every(0.5, lambda: print("%d clients done" % len(done)))
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i):
        await client(server.socket.getsockname(), i)
        done.append(i)

    await asyncio.gather(*(one(i) for i in range(CLIENTS)))
    elapsed = loop.time() - start
    progress.cancel()
    server.close()
    await bridge.wait_empty()
    print("%d clients x %d lines in %.2f s on %s, fastcore %s"
          % (CLIENTS, LINES, elapsed, type(loop).__module__,
             "extension" if fastcore.EXTENSION else "pure Python"))


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    asyncio.run(main())
