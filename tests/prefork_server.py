"""The server test_workers.py runs in a subprocess: fastcore.serve_forever()
over a one-line protocol ("pid\\n" -> the worker's pid; "hang\\n" blocks the worker;
"epoll\\n" -> "ok" unless the worker's epoll watches another process's sockets).

Each worker prints "ready <index> <pid> <port>" when it is serving; the
parent prints "stopped" when serve_forever() returns, or "WorkerError: ..."
(exit code 3) when it gives up.
"""

import argparse
import logging
import os
import socket
import sys
import time

from fastcore import asynchat, asyncore, serve_forever
from fastcore.workers import Listener, WorkerError


def say(line):
    # One write per line: the workers share this pipe (and print() writes the
    # newline separately when PYTHONUNBUFFERED is set).
    os.write(1, line.encode() + b"\n")


def foreign_epoll_entries():
    """What this process's epoll instances watch that is not its own: "ok",
    or the foreign entries (a poller shared with another process). Linux only."""
    foreign = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd) != "anon_inode:[eventpoll]":
                continue
            with open("/proc/self/fdinfo/" + fd) as f:
                info = f.read()
        except OSError:  # the listing's own fd, gone
            continue
        for line in info.splitlines():
            if line.startswith("tfd:"):
                fields = line.split()
                target, inode = int(fields[1]), int(fields[-2].split(":")[1], 16)
                try:
                    mine = os.fstat(target).st_ino == inode
                except OSError:
                    mine = False
                if not mine:
                    foreign.append("epoll %s watches fd %d inode %d" % (fd, target, inode))
    return "; ".join(foreign) or "ok"


class PidHandler(asynchat.async_chat):
    def __init__(self, sock, map):
        asynchat.async_chat.__init__(self, sock, map=map)
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data):
        self._collect_incoming_data(data)

    def found_terminator(self):
        line = self._get_data()
        if line == b"epoll":
            self.push(foreign_epoll_entries().encode() + b"\n")
            return
        if line == b"hang":
            # a stuck worker: SIGTERM cannot stop it, only the parent's SIGKILL
            say("hanging %d" % os.getpid())
            time.sleep(600)
        self.push(b"%d\n" % os.getpid())


class PidServer(Listener):
    def __init__(self, sock, map):
        Listener.__init__(self, sock, map)

    def handle_accepted(self, sock, addr):
        PidHandler(sock, self._map)


class CrashNow(asyncore.dispatcher_with_send):
    """Readable at once (its peer has written): its first event ends the worker."""

    def handle_read(self):
        raise SystemExit(7)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2, help="-1: None (one per CPU)")
    parser.add_argument("--one-cpu", action="store_true", help="restrict the affinity first")
    parser.add_argument("--reuse-port", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument("--crash", choices=("start", "serving"))
    parser.add_argument("--max-restarts", type=int, default=10)
    parser.add_argument("--stop-timeout", type=float, default=10.0)
    parser.add_argument("--use-map", action="store_true", help="loop_kwargs map= a dict")
    parser.add_argument("--given-socket", action="store_true",
                        help="pass a listening socket, not an address")
    parser.add_argument("--prime", action="store_true",
                        help="run the loop in the parent before serve_forever (its poller "
                             "must not reach the workers)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    socket_map = {} if args.use_map else None
    loop_map = asyncore.socket_map if socket_map is None else socket_map

    def make_server(sock):
        if args.crash == "start":
            raise ValueError("boom in make_server")
        PidServer(sock, loop_map)
        if args.crash == "serving":
            a, b = socket.socketpair()
            b.send(b"x")
            CrashNow(a, loop_map)

    def on_worker_start(index):
        port = [d for d in loop_map.values() if isinstance(d, PidServer)][0].addr[1]
        say("ready %d %d %d" % (index, os.getpid(), port))

    print("starting")  # left in the buffer: the workers must not inherit it
    if args.prime:
        a, b = socket.socketpair()
        b.send(b"x")
        primed = asyncore.dispatcher_with_send(a, loop_map)
        primed.handle_read = lambda: primed.recv(1)
        asyncore.loop(timeout=5, map=loop_map, count=1)
        primed.close()
        b.close()

    if args.one_cpu:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    workers = None if args.workers == -1 else args.workers
    reuse_port = {"auto": None, "yes": True, "no": False}[args.reuse_port]
    address = ("127.0.0.1", 0)
    if args.given_socket:
        address = socket.create_server(address)
    try:
        serve_forever(make_server, address, workers, reuse_port=reuse_port,
                      loop_kwargs={"map": socket_map, "timeout": 5.0},
                      on_worker_start=on_worker_start, max_restarts=args.max_restarts,
                      stop_timeout=args.stop_timeout)
    except WorkerError as e:
        print("WorkerError: %s" % e, flush=True)
        return 3
    if args.given_socket:
        # still ours, still listening
        print("given socket listening: %d" % address.getsockopt(socket.SOL_SOCKET,
                                                                 socket.SO_ACCEPTCONN))
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
