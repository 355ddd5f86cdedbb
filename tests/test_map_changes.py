"""Map changes made outside add_channel/del_channel, while one loop() call
spins over hundreds of idle dispatchers, are found at once: made by another
thread, a Python signal handler, or a finaliser run by a garbage collection.
(The pure core skips comparing the map with its registry in iterations that
nothing but its own code can have followed; these are the ways other code
runs anyway.)"""

import gc
import signal
import socket
import threading
import time
import types

import pytest
import support

pytestmark = pytest.mark.fastcore_only

IDLE = 300  # above the pure core's SKIP_MIN_ENTRIES
SPIN = 200000  # iterations of loop(timeout=0): seconds at most, ended early by the newcomer


@pytest.fixture
def no_python_signal_handlers():
    """Every signal handler written in Python (pytest-timeout's among them)
    set aside for the test: with one, the pure core compares at every
    iteration and the test would prove nothing."""
    saved = {}
    for signum in signal.valid_signals():
        handler = signal.getsignal(signum)
        if callable(handler) and handler is not signal.default_int_handler:
            saved[signum] = handler
            signal.signal(signum, signal.SIG_DFL)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def idle(asyncore, asynchat, sockmap):
    class Idle(asynchat.async_chat):
        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            pass

    for _ in range(IDLE // 2):
        for sock in socket.socketpair():
            Idle(sock, map=sockmap)
    return sockmap


def newcomer(asyncore, map):
    """A dispatcher with a byte to read, in no map yet; its read empties
    ``map`` (ending the loop) and records that it was found."""
    a, b = socket.socketpair()
    b.send(b"x")

    class Newcomer(asyncore.dispatcher):
        found = False

        def writable(self):
            return False

        def handle_read(self):
            self.recv(1)
            self.peer.close()
            type(self).found = True
            asyncore.close_all(map)

    d = Newcomer(a, map={})
    d.peer = b
    return d


def pure_core_only(fastcore_pkg, why):
    if fastcore_pkg.EXTENSION:
        pytest.skip(why)


def spin(asyncore, map, count=SPIN):
    asyncore.loop(timeout=0, map=map, count=count)


def test_the_pure_core_skips_comparing_while_nothing_else_can_run(
        fastcore_pkg, asyncore, idle, no_python_signal_handlers):
    pure_core_only(fastcore_pkg, "the pure core's skipping of comparisons")
    from fastcore._core_py import registry

    if not registry.SKIPS_COMPARISONS:
        pytest.skip("compares at every iteration where objects are not reference-counted")
    asyncore.loop(timeout=0, map=idle, count=50)
    assert registry.registry_of(idle).watch == registry.WATCH_SKIPPING
    # Between loop() calls the program runs: the next call compares first.
    d = newcomer(asyncore, idle)
    idle[d._fileno] = d
    spin(asyncore, idle)
    assert d.found


def test_a_change_by_another_thread(fastcore_pkg, asyncore, idle, no_python_signal_handlers):
    d = newcomer(asyncore, idle)
    started = threading.Event()

    def add():
        # Once the loop has spun quietly a while.
        started.wait(support.DEFAULT_TIMEOUT)
        first = fastcore_pkg.stats()["iterations"]
        deadline = time.monotonic() + support.DEFAULT_TIMEOUT
        while fastcore_pkg.stats()["iterations"] - first < 1000 and time.monotonic() < deadline:
            time.sleep(0.001)  # no event to wait for: the loop runs no code of ours
        idle[d._fileno] = d

    thread = support.start_thread(add)
    # started is set from the loop's first timer callback.
    fastcore_pkg.call_later(0, started.set)
    spin(asyncore, idle)
    thread.finish()
    assert d.found


def test_a_change_by_a_signal_handler(fastcore_pkg, asyncore, idle, no_python_signal_handlers):
    d = newcomer(asyncore, idle)

    def add(signum, frame):
        idle[d._fileno] = d

    # Virtual time runs only while the process spins in the loop.
    signal.signal(signal.SIGVTALRM, add)
    signal.setitimer(signal.ITIMER_VIRTUAL, 0.05)
    try:
        # The extension's SPIN iterations can take less CPU time than that.
        spin(asyncore, idle, 20 * SPIN)
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, signal.SIG_DFL)
    assert d.found


def test_a_change_by_a_finaliser_in_a_collection(fastcore_pkg, asyncore, idle,
                                                  no_python_signal_handlers):
    pure_core_only(fastcore_pkg, "the extension's quiet iterations keep no new objects:"
                                 " they set off no collection")
    if not hasattr(gc, "get_threshold"):
        pytest.skip("no generation thresholds (PyPy): collections cannot be set off here")
    d = newcomer(asyncore, idle)
    first = fastcore_pkg.stats()["iterations"]

    class Garbage:
        """A cycle whose finaliser adds d to the map once the loop has spun a
        while (quiet iterations by then); before that it leaves another."""

        def __init__(self):
            self.cycle = self

        def __del__(self):
            if fastcore_pkg.stats()["iterations"] - first < 100:
                Garbage()
            else:
                idle[d._fileno] = d

    thresholds = gc.get_threshold()
    Garbage()
    gc.set_threshold(1)  # the loop's own allocations set off collections
    try:
        spin(asyncore, idle)
    finally:
        gc.set_threshold(*thresholds)
    assert d.found


def test_a_collection_runs_no_python_code_of_the_core(fastcore_pkg):
    """A signal handler's exception raised inside a gc callback written in
    Python is only printed by the collector: a Ctrl-C (or a SIGTERM handler's
    SystemExit) that arrived during a collection would be lost. The pure core
    notices collections through a built-in method."""
    pure_core_only(fastcore_pkg, "the extension registers no gc callback")
    from fastcore._core_py import registry

    if not registry.SKIPS_COMPARISONS:
        pytest.skip("no gc callback where comparisons are never skipped")
    ours = [cb for cb in gc.callbacks
            if getattr(cb, "__module__", None) == registry.__name__
            or getattr(cb, "__self__", None) is registry._collection_info]
    assert ours, "the pure core watches collections through gc.callbacks"
    for callback in ours:
        assert not isinstance(callback, types.FunctionType), callback
    # And it sees them.
    before = registry._collection_info.get("start")
    gc.collect()
    assert registry._collection_info.get("start") is not before
