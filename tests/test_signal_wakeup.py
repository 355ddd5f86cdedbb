"""Signals reach their Python handlers while the loop waits.

During a loop()/poll() call on the main thread that may block, the core's
waker is the process's signal wakeup fd, so a signal ends the wait even when
the kernel delivers it to another thread or it comes just before the wait
begins. Its handler runs at once; the wait then goes on for the rest of the
timeout, as select's does after EINTR.
"""

import os
import signal
import socket
import sys
import threading
import time
import warnings

import pytest
from support import DEFAULT_TIMEOUT, can_see_kernel_waits, start_thread, wait_until_polling

pytestmark = [
    pytest.mark.fastcore_only,
    pytest.mark.skipif(not hasattr(signal, "pthread_kill") or not hasattr(signal, "SIGUSR1"),
                       reason="needs pthread_kill and SIGUSR1"),
]

needs_kernel_waits = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not can_see_kernel_waits(),
    reason="needs /proc/self/task/N/wchan to tell when the loop waits")


class _Interrupted(Exception):
    pass


@pytest.fixture
def on_sigusr1():
    """on_sigusr1(handler) installs SIGUSR1's Python handler for the test."""
    previous = signal.getsignal(signal.SIGUSR1)
    yield lambda handler: signal.signal(signal.SIGUSR1, handler)
    signal.signal(signal.SIGUSR1, previous)


@pytest.fixture
def backend(request, fastcore_pkg):
    if request.param not in fastcore_pkg.available_backends():
        pytest.skip("no %s on this platform" % request.param)
    return request.param


def current_wakeup_fd():
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def signal_this_thread_once_polling(main_native_id):
    """On a helper thread: once the main thread sleeps in its wait, raise
    SIGUSR1 on this thread (the main thread's wait sees no EINTR)."""
    wait_until_polling(main_native_id)
    sent = time.monotonic()
    signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
    return sent


def idle_dispatcher(kit, sockmap):
    a, b = socket.socketpair()
    kit.Reader(a, map=sockmap)
    return b


@needs_kernel_waits
@pytest.mark.parametrize("backend", ["epoll", "kqueue", "poll", "select"], indirect=True)
def test_a_signal_on_another_thread_ends_the_wait(asyncore, kit, sockmap, backend, on_sigusr1):
    def interrupt(signum, frame):
        raise _Interrupted()

    on_sigusr1(interrupt)
    peer = idle_dispatcher(kit, sockmap)
    helper = start_thread(signal_this_thread_once_polling, threading.get_native_id())
    with pytest.raises(_Interrupted):
        asyncore.loop(timeout=20.0, map=sockmap, count=1, backend=backend)
    sent = helper.finish()
    assert time.monotonic() - sent < 5.0  # not the 20 s timeout
    peer.close()


@needs_kernel_waits
@pytest.mark.parametrize("use_poll", [False, True])
def test_the_wait_goes_on_after_the_handler_ran(asyncore, kit, sockmap, use_poll, on_sigusr1):
    ran = []
    on_sigusr1(lambda signum, frame: ran.append(time.monotonic()))
    peer = idle_dispatcher(kit, sockmap)
    helper = start_thread(signal_this_thread_once_polling, threading.get_native_id())
    started = time.monotonic()
    asyncore.loop(timeout=1.5, map=sockmap, count=1, use_poll=use_poll)
    elapsed = time.monotonic() - started
    sent = helper.finish()
    assert len(ran) == 1 and ran[0] - sent < 1.0
    assert elapsed >= 1.4
    peer.close()


def test_the_waker_is_the_wakeup_fd_only_while_a_loop_may_block(fastcore_pkg, asyncore, sockmap):
    assert current_wakeup_fd() == -1
    seen = []
    fastcore_pkg.call_later(0.05, lambda: seen.append(current_wakeup_fd()))
    asyncore.loop(timeout=1.0, map=sockmap)  # ends once the timer ran
    assert len(seen) == 1 and seen[0] >= 0
    assert current_wakeup_fd() == -1

    fastcore_pkg.call_later(0.05, lambda: seen.append(current_wakeup_fd()))
    asyncore.loop(timeout=0, map=sockmap)  # never blocks: nothing lent
    assert seen[1] == -1


def test_a_nested_loop_leaves_the_outer_one_its_wakeup_fd(fastcore_pkg, asyncore, sockmap):
    seen = []

    def nested():
        before = current_wakeup_fd()
        asyncore.loop(timeout=0.01, map={}, count=1)
        asyncore.poll(0.01, map={})
        seen.append((before, current_wakeup_fd()))

    fastcore_pkg.call_later(0.05, nested)
    asyncore.loop(timeout=1.0, map=sockmap)
    (before, after), = seen
    assert before >= 0 and after == before
    assert current_wakeup_fd() == -1


def test_a_wakeup_fd_the_program_set_is_left_alone(fastcore_pkg, asyncore, sockmap):
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno())
    try:
        seen = []
        fastcore_pkg.call_later(0.05, lambda: seen.append(current_wakeup_fd()))
        asyncore.loop(timeout=1.0, map=sockmap)
        assert seen == [writer.fileno()]
        assert current_wakeup_fd() == writer.fileno()
    finally:
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()


def test_a_wakeup_fd_set_by_a_handler_is_kept(fastcore_pkg, asyncore, sockmap):
    """As asyncio's add_signal_handler would, called from a timer."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        fastcore_pkg.call_later(0.05, signal.set_wakeup_fd, writer.fileno())
        asyncore.loop(timeout=1.0, map=sockmap)
        assert current_wakeup_fd() == writer.fileno()
    finally:
        signal.set_wakeup_fd(-1)
        reader.close()
        writer.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_by_a_handler_gives_the_wakeup_fd_back(fastcore_pkg, asyncore, sockmap):
    """Left set, the child's signals would write to the parent's waker."""
    forked = []

    def fork():
        lent = current_wakeup_fd()
        with warnings.catch_warnings():
            # 3.12+ warns when other threads (earlier tests' helpers) exist;
            # the child only calls set_wakeup_fd and exits.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            os._exit(0 if current_wakeup_fd() == -1 else 1)
        forked.append((lent, pid))

    fastcore_pkg.call_later(0.05, fork)
    asyncore.loop(timeout=1.0, map=sockmap)
    (lent, pid), = forked
    _, status = os.waitpid(pid, 0)
    assert lent >= 0
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# loop(timeout=0) never waits, so no wakeup fd is lent; the core still runs
# pending handlers at every iteration, as 3.11's interpreter does between its
# select() calls. The loop's count bounds a test whose signal is never handled
# (about a second on the extension, whose idle iteration is the fast one).
SPIN = 1_000_000


def built_in_idle_pair(asynchat, sockmap):
    """Two idle async_chat dispatchers of the core's own readable/writable:
    the extension runs no Python code for them in a quiet iteration."""
    class Idle(asynchat.async_chat):
        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            pass

    for sock in socket.socketpair():
        Idle(sock, map=sockmap)


def signal_once_spinning(fastcore_pkg, signum):
    """A thread that raises signum on itself once the loop has spun quietly
    a while (past its first timer callback, Python code that would run the
    handler): the main thread's system calls see no EINTR, only the flag the
    C handler sets."""
    spinning = threading.Event()
    fastcore_pkg.call_later(0, spinning.set)

    def send():
        assert spinning.wait(DEFAULT_TIMEOUT)
        first = fastcore_pkg.stats()["iterations"]
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while fastcore_pkg.stats()["iterations"] - first < 1000 and time.monotonic() < deadline:
            time.sleep(0.001)  # no event to wait for: the loop runs no code of ours
        signal.pthread_kill(threading.get_ident(), signum)

    return start_thread(send)


def test_a_handler_stops_a_loop_that_never_waits(fastcore_pkg, asyncore, asynchat, sockmap,
                                                 on_sigusr1):
    built_in_idle_pair(asynchat, sockmap)
    handled = []

    def stop(signum, frame):
        handled.append(fastcore_pkg.stats()["iterations"])
        asyncore.close_all(sockmap)

    on_sigusr1(stop)
    first = fastcore_pkg.stats()["iterations"]
    sender = signal_once_spinning(fastcore_pkg, signal.SIGUSR1)
    asyncore.loop(timeout=0, map=sockmap, count=SPIN)
    sender.finish()
    assert handled and handled[0] - first < SPIN
    assert not sockmap


def test_ctrl_c_ends_a_loop_that_never_waits(fastcore_pkg, asyncore, asynchat, sockmap):
    built_in_idle_pair(asynchat, sockmap)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    first = fastcore_pkg.stats()["iterations"]
    sender = signal_once_spinning(fastcore_pkg, signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt):
            asyncore.loop(timeout=0, map=sockmap, count=SPIN)
        # Raised inside loop(), not at the first bytecode after it returned.
        assert fastcore_pkg.stats()["iterations"] - first < SPIN
    finally:
        signal.signal(signal.SIGINT, previous)
        sender.finish()
        asyncore.close_all(sockmap)
