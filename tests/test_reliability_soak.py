"""Reliability: load and soak.

Connections opened and closed in churn, an echo on each, in rounds; after
every round the process must be where it was: descriptors and live
dispatcher objects back to the baseline, RSS within a stated bound, and
tracemalloc (where the interpreter has it) showing no growth from one round
to the next.

Short form by default (CI: 5 rounds of 2,000 connections = 10,000, up to 500
at a time).  Long form: ``FASTCORE_SOAK=long`` (50 rounds = 100,000
connections), or set ``FASTCORE_SOAK_ROUNDS`` / ``FASTCORE_SOAK_PER_ROUND`` /
``FASTCORE_SOAK_CONCURRENCY``.  ``-s`` shows the figures of every round.
"""

import gc
import os
import socket
import sys
import time
import weakref

try:
    import tracemalloc
except ImportError:  # PyPy has none: the RSS, fd and object bounds still hold
    tracemalloc = None

import pytest
import support

LONG = os.environ.get("FASTCORE_SOAK") == "long"
ROUNDS = int(os.environ.get("FASTCORE_SOAK_ROUNDS", 50 if LONG else 5))
PER_ROUND = int(os.environ.get("FASTCORE_SOAK_PER_ROUND", 2000))
CONCURRENCY = int(os.environ.get("FASTCORE_SOAK_CONCURRENCY", 500))
# Stated bounds.  RSS: growth after the first (warm-up) round.  tracemalloc
# (started after the warm-up round), from the first traced round on: live
# allocations (blocks) may not grow by BLOCKS_BOUND -- anything kept per
# connection adds thousands a round -- and traced bytes by TRACED_BOUND (a
# buffer grown once to a new high-water mark is the same block, bigger).
RSS_BOUND = 16 << 20
BLOCKS_BOUND = 100
TRACED_BOUND = 256 << 10


def _fd_count():
    for d in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(d):
            return len(os.listdir(d))
    return None


def _rss():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _traced():
    """(bytes, blocks) tracemalloc sees allocated, except by this file."""
    snap = tracemalloc.take_snapshot().filter_traces([
        tracemalloc.Filter(False, __file__),
        tracemalloc.Filter(False, tracemalloc.__file__),
    ])
    stats = snap.statistics("filename")
    return sum(s.size for s in stats), sum(s.count for s in stats)


def _raise_nofile_to_hard():
    """Soft RLIMIT_NOFILE up to the hard limit; returns (restore, limit)."""
    try:
        import resource
    except ImportError:
        return (lambda: None), None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
        else:
            return (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))), target
    return (lambda: None), (soft if soft != resource.RLIM_INFINITY else target)


def _soak_kit(asyncore, asynchat):
    live = weakref.WeakSet()

    class Handler(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map)
            self.set_terminator(b"\n")
            self.parts = []
            live.add(self)

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            self.push(b"".join(self.parts) + b"\n")
            self.parts = []
            self.close_when_done()

    class Server(asyncore.dispatcher):
        def __init__(self, map):
            asyncore.dispatcher.__init__(self, map=map)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind((support.LOCALHOST, 0))
            self.listen(1024)
            self.accepted = 0
            live.add(self)

        def handle_accept(self):
            while True:
                pair = self.accept()
                if pair is None:
                    return
                self.accepted += 1
                Handler(pair[0], self._map)

    class Client(asynchat.async_chat):
        def __init__(self, address, map, n, done):
            asynchat.async_chat.__init__(self, map=map)
            self.set_terminator(b"\n")
            self.parts = []
            self.expect = b"ping %d" % n
            self.done = done
            self.echoed = False
            live.add(self)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.push(self.expect + b"\n")
            self.connect(address)

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            self.echoed = b"".join(self.parts) == self.expect

        def handle_close(self):
            self.close()
            self.done.append(self.echoed)

        def handle_error(self):
            self.done.append(sys.exc_info()[1])
            self.close()

    return Server, Client, live


def _round(asyncore, m, Client, address, n0, count, concurrency, use_poll):
    done = []
    started = 0
    deadline = time.monotonic() + 120
    while len(done) < count:
        while started < count and started - len(done) < concurrency:
            Client(address, m, n0 + started, done)
            started += 1
        asyncore.loop(timeout=0.05, map=m, count=1, use_poll=use_poll)
        if time.monotonic() > deadline:
            pytest.fail("round stalled: %d of %d connections done" % (len(done), count))
    bad = [r for r in done if r is not True]
    assert not bad, "%d connections without their echo, e.g. %r" % (len(bad), bad[:5])


@pytest.mark.slow
@pytest.mark.parametrize("use_poll", support.USE_POLL)
def test_churn_soak(asyncore, asynchat, use_poll, capsys):
    restore, limit = _raise_nofile_to_hard()
    try:
        concurrency = CONCURRENCY
        if limit is not None and 2 * concurrency + 100 > limit:
            concurrency = (limit - 100) // 2
            if concurrency < 50:
                pytest.skip("RLIMIT_NOFILE %d (hard limit reached) leaves room for %d "
                            "connections at a time: too few to soak" % (limit, concurrency))
        Server, Client, live = _soak_kit(asyncore, asynchat)
        # fastcore makes its wake-up pipe (for call_soon_threadsafe) with the
        # first poller and keeps it for the process: let it exist already.
        warm = {}
        Server(warm)
        asyncore.loop(timeout=0, map=warm, count=1, use_poll=use_poll)
        asyncore.close_all(map=warm)
        gc.collect()
        fd0, obj0 = _fd_count(), len(live)
        m = {}
        server = Server(m)
        figures = []
        tracing = tracemalloc is not None and not tracemalloc.is_tracing()
        try:
            for r in range(ROUNDS):
                _round(asyncore, m, Client, server.address if hasattr(server, "address")
                       else server.socket.getsockname(), r * PER_ROUND, PER_ROUND,
                       concurrency, use_poll)
                assert list(m.values()) == [server], "only the server is left in the map"
                # The core holds the dispatchers closed in the last iteration
                # (queued for an interest update) until the next one begins.
                asyncore.loop(timeout=0, map=m, count=1, use_poll=use_poll)
                gc.collect()
                fig = {"round": r, "fds": _fd_count(), "dispatchers": len(live),
                       "rss": _rss(),
                       "traced": _traced() if r and tracemalloc is not None else None}
                figures.append(fig)
                assert fig["dispatchers"] == obj0 + 1, fig       # the server
                if fd0 is not None:
                    # The server's socket (and poller) at most: no more. (Fewer is
                    # possible on PyPy, whose collector may close sockets that
                    # earlier tests left behind only now.)
                    assert fig["fds"] - fd0 <= 2, fig
                if r == 0 and tracing:
                    tracemalloc.start()     # after the warm-up: caches are filled
        finally:
            if tracing:
                tracemalloc.stop()
            asyncore.close_all(map=m, ignore_all=True)
        assert server.accepted == ROUNDS * PER_ROUND
        del server
        gc.collect()
        # close_all() released the map: the core keeps nothing it closed.
        assert not set(live)
        if fd0 is not None:
            assert _fd_count() <= fd0   # (fewer on PyPy: see above)
        with capsys.disabled():
            print("\nsoak (%s, use_poll=%s): %d rounds x %d connections, %d at a time"
                  % ("extension" if _extension(asyncore) else "pure/ref", use_poll, ROUNDS,
                     PER_ROUND, concurrency))
            for f in figures:
                print("  round %(round)d: fds %(fds)s, dispatchers %(dispatchers)d, "
                      "rss %(rss)s, traced (bytes, blocks) %(traced)s" % f)
        # Under AddressSanitizer (.ci/asan) freed memory waits in its quarantine:
        # the RSS moves by tens of MiB and says nothing; the traced bound holds.
        if ROUNDS > 1 and "libasan" not in os.environ.get("LD_PRELOAD", ""):
            rss = [f["rss"] for f in figures]
            if None not in rss:
                assert max(rss[1:]) - rss[0] < RSS_BOUND, rss
        if ROUNDS > 2 and tracemalloc is not None:
            traced = [f["traced"][0] for f in figures[1:]]
            blocks = [f["traced"][1] for f in figures[1:]]
            assert max(blocks[1:]) - blocks[0] < BLOCKS_BOUND, blocks
            assert max(traced[1:]) - traced[0] < TRACED_BOUND, traced
    finally:
        restore()


def _extension(asyncore):
    return getattr(sys.modules.get("fastcore"), "EXTENSION", False) and \
        asyncore.__name__.startswith("fastcore")
