"""In-process microbenchmarks of one implementation; prints one JSON object.

    python bench/micro.py ext,ref [--quick]
    FASTCORE_NO_EXTENSIONS=1 python bench/micro.py pure,ref [--quick]

fastcore's two cores cannot share a process; the reference can share either's,
and the samples of the implementations in one process alternate, so that their
ratio is measured under the same load. Times are the thread's CPU time
(time.thread_time), so that waiting for the CPU is not counted. Every figure
is the median over repeats, with the smallest and largest sample beside it.
"""

import argparse
import json
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import impls  # noqa: E402

IDLE_SIZES = (10, 100, 1000, 10000)
DOC_IDLE_SIZES = (10, 100, 1000, 5000, 10000)
READY_SIZES = (10, 100, 1000)
LINE_SIZES = (8, 64, 1024, 16384)
TERMINATORS = {"1-byte": b"\n", "multi-byte": b"\r\n", "int": None}
SELECT_LIMIT = 1024  # FD_SETSIZE: select() cannot watch fds at or past it


def summary(samples, scale=1.0):
    """Median, min and max of ``samples`` times ``scale``, and their number."""
    return {
        "median": statistics.median(samples) * scale,
        "min": min(samples) * scale,
        "max": max(samples) * scale,
        "repeats": len(samples),
    }


def time_loop(asyncore, socket_map, use_poll, sample_s, count=None):
    """(seconds per loop iteration, iterations) of one sample of about sample_s."""
    if count is None:
        asyncore.loop(timeout=0, map=socket_map, count=3, use_poll=use_poll)
        t = time.thread_time()
        asyncore.loop(timeout=0, map=socket_map, count=3, use_poll=use_poll)
        per = max((time.thread_time() - t) / 3, 1e-7)
        count = max(2, min(200000, int(sample_s / per)))
    t = time.thread_time()
    asyncore.loop(timeout=0, map=socket_map, count=count, use_poll=use_poll)
    return (time.thread_time() - t) / count, count


def styles(name, socket_map):
    """(label, use_poll) of the dispatch styles to time on socket_map."""
    if name != "ref":
        return [("epoll", False)]
    result = [("poll", True)]
    if max(socket_map, default=0) < SELECT_LIMIT:
        result.append(("select", False))
    return result


def chat_idle_class(asyncore, asynchat):
    class Idle(asynchat.async_chat):
        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            pass

    return Idle


def doc_idle_class(asyncore, asynchat):
    """The asyncore documentation's dispatcher pattern."""

    class DocIdle(asyncore.dispatcher):
        def __init__(self, sock, map):
            asyncore.dispatcher.__init__(self, sock, map=map)
            self.buffer = b""

        def readable(self):
            return True

        def writable(self):
            return len(self.buffer) > 0

    return DocIdle


def bench_iteration(impls_, fd_limit, repeats, sample_s, make_class=chat_idle_class,
                    sizes=IDLE_SIZES):
    """One loop iteration with N idle connected dispatchers (async_chat, or
    what make_class makes).

    One implementation's map at a time (10,000 fds each), the next right after.
    """
    rows = {name: [] for name in impls_}
    for n in sizes:
        for name, (asyncore, asynchat) in impls_.items():
            idle_class = make_class(asyncore, asynchat)
            if n + 64 > fd_limit:
                rows[name].append({"idle": n, "poller": "-", "skipped": "fd limit %d" % fd_limit})
                continue
            socket_map = {}
            for _ in range(n // 2):  # both ends of each pair are idle dispatchers
                for sock in socket.socketpair():
                    idle_class(sock, map=socket_map)
            for label, use_poll in styles(name, socket_map):
                samples = [time_loop(asyncore, socket_map, use_poll, sample_s)[0]
                           for _ in range(repeats)]
                rows[name].append({"idle": n, "poller": label, "us": summary(samples, 1e6)})
            asyncore.close_all(socket_map)
    return rows


def bench_dispatch(impls_, repeats, sample_s):
    """Cost per ready event: N dispatchers, every one readable every iteration.

    The implementations' samples alternate, so that they share the machine's load.
    """
    rows = {name: [] for name in impls_}
    for n in READY_SIZES:
        cases = []  # (name, asyncore, map, label, use_poll, peers)
        for name, (asyncore, asynchat) in reversed(list(impls_.items())):  # ref: low fds

            class Ready(asynchat.async_chat):
                def handle_read(self):
                    pass  # leave the byte there: readable again next iteration

            socket_map, peers = {}, []
            for _ in range(n):
                a, b = socket.socketpair()
                b.send(b"x")
                Ready(a, map=socket_map)
                peers.append(b)
            for label, use_poll in styles(name, socket_map):
                cases.append((name, asyncore, socket_map, label, use_poll, peers))
        samples = {case[0] + case[3]: [] for case in cases}
        counts = {}
        for _ in range(repeats):
            for name, asyncore, socket_map, label, use_poll, _peers in cases:
                per, counts[name + label] = time_loop(
                    asyncore, socket_map, use_poll, sample_s, counts.get(name + label)
                )
                samples[name + label].append(per)
        for name, asyncore, socket_map, label, _use_poll, peers in reversed(cases):
            rows[name].append({"ready": n, "poller": label,
                               "us_per_event": summary(samples[name + label], 1e6 / n)})
            if socket_map:
                asyncore.close_all(socket_map)
            for sock in peers:
                sock.close()
            peers.clear()
    return rows


def input_chunk(line, terminator, read_size):
    """read_size bytes of a stream of ``line``-byte records, starting 3 bytes into one.

    The offset makes records and terminators straddle the reads; as ``line``
    divides ``read_size`` every read of the stream is this same chunk.
    """
    if terminator is None:
        record = bytes(range(256)) * (line // 256) + bytes(range(line % 256))
    else:
        record = b"x" * (line - len(terminator)) + terminator
    stream = record * (read_size // line + 2)
    return stream[3 : 3 + read_size]


def bench_chat_input(impls_, repeats, budget_s, line_sizes, terminators, read_size=65536):
    """async_chat input: handle_read over reads of read_size bytes, lines/s and MB/s."""
    rows = {name: [] for name in impls_}
    for term_name in terminators:
        terminator = TERMINATORS[term_name]
        for line in line_sizes:
            chunk = input_chunk(line, terminator, read_size)
            samples = {name: [] for name in impls_}
            for _ in range(repeats):
                for name, (_asyncore, asynchat) in impls_.items():
                    samples[name].append(
                        chat_input_once(asynchat, line, terminator, chunk, budget_s[name])
                    )
            for name, s in samples.items():
                rows[name].append({
                    "line": line,
                    "terminator": term_name,
                    "read": read_size,
                    "lines_per_s": summary([1 / x for x in s]),
                    "mb_per_s": summary([line / x / 1e6 for x in s]),
                    "ns_per_byte": summary([x / line * 1e9 for x in s]),
                })
    return rows


def chat_input_once(asynchat, line, terminator, chunk, budget_s):
    """Seconds per line: chunks fed through a socketpair until budget_s is spent."""
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * len(chunk) + 65536)

    class Reader(asynchat.async_chat):
        ac_in_buffer_size = len(chunk)

        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock, map={})
            self.set_terminator(line if terminator is None else terminator)
            self.parts = []
            self.lines = 0

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            b"".join(self.parts)
            self.parts = []
            self.lines += 1
            if terminator is None:
                self.set_terminator(line)

    reader = Reader(b)
    elapsed, reads = 0.0, 0
    while elapsed < budget_s or reads < 2:
        a.sendall(chunk)
        t = time.thread_time()
        reader.handle_read()
        elapsed += time.thread_time() - t
        reads += 1
    fed = reads * len(chunk)
    expected = (fed + 3) // line
    if reader.lines != expected:
        raise AssertionError("%d lines found in %d bytes, expected %d" % (reader.lines, fed,
                                                                         expected))
    reader.close()
    a.close()
    return elapsed / reader.lines


def drain(sock, buf):
    while True:
        try:
            if not sock.recv_into(buf):
                return
        except BlockingIOError:
            return


def bench_push(impls_, repeats, budget_s):
    """push/initiate_send: 64 B pushes, 1 MiB pushes, producers; samples alternate."""
    cases = [
        ("push 64 B", 64, "push"),
        ("push 1 MiB", 1 << 20, "push"),
        ("16 producers x 16 x 4 KiB more()", 1 << 20, "producer"),
    ]
    rows = {name: [] for name in impls_}
    for label, size, kind in cases:
        samples = {name: [] for name in impls_}
        for _ in range(repeats):
            for name, (_asyncore, asynchat) in impls_.items():
                samples[name].append(push_once(asynchat, size, kind, budget_s))
        for name, s in samples.items():
            rows[name].append({
                "case": label,
                "size": size,
                "items_per_s": summary([1 / x for x in s]),
                "mb_per_s": summary([size / x / 1e6 for x in s]),
            })
    return rows


class ChunkProducer:
    """A producer handing out prepared chunks, then b''."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)

    def more(self):
        return next(self.chunks, b"")


def push_once(asynchat, size, kind, budget_s):
    """Seconds per item pushed and sent; the peer is drained in the same thread."""
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    b.setblocking(False)
    buf = bytearray(1 << 22)
    chat = asynchat.async_chat(a, map={})
    data = b"y" * size
    items = 0
    t = time.thread_time()
    while True:
        if kind == "push" and size < 4096:
            for _ in range(1024):
                chat.push(data)
            items += 1024
        else:
            if kind == "push":
                chat.push(data)
            else:
                chunks = [data[i : i + 4096] for i in range(0, 65536, 4096)]
                for _ in range(size // 65536):
                    chat.push_with_producer(ChunkProducer(chunks))
            while chat.producer_fifo:
                drain(b, buf)
                chat.handle_write()
            items += 1
        drain(b, buf)
        elapsed = time.thread_time() - t
        if elapsed >= budget_s and items >= 2:
            break
    chat.close()
    b.close()
    return elapsed / items


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("impls", help="comma-separated: ext,ref or pure,ref")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated: iteration,doc_iteration,dispatch,"
                        "chat_input,push")
    args = parser.parse_args()
    loaded = {name: impls.load(name) for name in args.impls.split(",")}
    fd_limit = impls.raise_fd_limit()
    repeats, sample_s = (5, 0.02) if args.quick else (11, 0.1)
    budget_s = 0.03 if args.quick else 0.15
    only = set(args.only.split(",")) if args.only else None
    result = {name: {"fd_limit": fd_limit} for name in loaded}

    def wanted(name):
        return only is None or name in only

    def merge(section, rows):
        for name, r in rows.items():
            result[name][section] = r

    if wanted("iteration"):
        merge("iteration", bench_iteration(loaded, fd_limit, repeats, sample_s))
    if wanted("doc_iteration"):
        merge("doc_iteration", bench_iteration(loaded, fd_limit, repeats, sample_s,
                                               doc_idle_class, DOC_IDLE_SIZES))
    if wanted("dispatch"):
        merge("dispatch", bench_dispatch(loaded, repeats, sample_s))
    if wanted("chat_input"):
        merge("chat_input", bench_chat_input(
            loaded, repeats, dict.fromkeys(loaded, budget_s), LINE_SIZES, TERMINATORS
        ))
        # Linear in the input: the same lines in 1 MiB reads cost the same per byte.
        # The reference takes seconds per 1 MiB read: two reads, once, in the full run.
        big = {name: loaded[name] for name in loaded if name != "ref" or not args.quick}
        budgets = {name: 0 if name == "ref" else budget_s for name in big}
        merge("chat_input_linear", bench_chat_input(
            big, 3, budgets, (64,), ("1-byte",), read_size=1 << 20
        ))
    if wanted("push"):
        merge("push", bench_push(loaded, repeats, budget_s))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
