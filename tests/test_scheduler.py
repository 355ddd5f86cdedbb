"""Timers (call_later/call_every), call_soon_threadsafe and run_in_executor."""

import concurrent.futures
import logging
import socket
import threading
import time

import pytest
from support import DEFAULT_TIMEOUT, run_until, start_thread

pytestmark = pytest.mark.fastcore_only


@pytest.fixture
def timers(fastcore_pkg):
    """Timers made through it are cancelled after the test, whatever happens."""
    made = []

    class Maker:
        def later(self, *args, **kwargs):
            made.append(fastcore_pkg.call_later(*args, **kwargs))
            return made[-1]

        def every(self, *args, **kwargs):
            made.append(fastcore_pkg.call_every(*args, **kwargs))
            return made[-1]

    yield Maker()
    for timer in made:
        timer.cancel()


class Idle:
    """A connected socket pair with one side in the map: the loop has a
    dispatcher that never gets an event."""

    def __init__(self, asyncore, map):
        self.a, self.b = socket.socketpair()
        self.disp = asyncore.dispatcher_with_send(self.a, map=map)

    def close(self):
        self.disp.close()
        self.b.close()


def test_call_later_runs_once_after_its_delay_in_due_order(asyncore, timers):
    fired = []
    start = time.monotonic()
    timers.later(0.06, lambda: fired.append(("b", time.monotonic() - start)))
    timers.later(0.02, lambda tag, key: fired.append((tag + key, time.monotonic() - start)),
                 "a", key="!")
    # An empty map: loop() keeps going while timers wait, then returns.
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map={})
    assert [name for name, _ in fired] == ["a!", "b"]
    assert fired[0][1] >= 0.02 and fired[1][1] >= 0.06
    assert time.monotonic() - start < DEFAULT_TIMEOUT


def test_loop_sleeps_only_until_the_next_timer(asyncore, timers):
    map = {}
    idle = Idle(asyncore, map)
    try:
        fired = []
        timers.later(0.05, fired.append, 1)
        start = time.monotonic()
        # One iteration with a 30 s timeout: the timer cuts the wait short.
        asyncore.loop(timeout=30, map=map, count=1)
        assert fired == [1]
        assert time.monotonic() - start < DEFAULT_TIMEOUT
    finally:
        idle.close()


def test_call_every_repeats_until_cancelled_from_its_callback(asyncore, timers):
    runs = []

    def tick():
        runs.append(time.monotonic())
        if len(runs) == 4:
            timer.cancel()

    start = time.monotonic()
    timer = timers.every(0.01, tick)
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map={})
    assert len(runs) == 4
    assert timer.cancelled
    # A fixed rate: the k-th run is due k intervals after the start.
    assert all(t - start >= 0.01 * (k + 1) for k, t in enumerate(runs))


def test_count_is_honoured_while_timers_remain(asyncore, timers):
    runs = []
    timers.every(0.001, runs.append, 1)
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map={}, count=3)
    assert 1 <= len(runs) <= 3


def test_cancelled_timer_never_runs_and_no_longer_keeps_the_loop(asyncore, timers):
    fired = []
    keep = [timers.later(0.01 * (i % 7), fired.append, i) for i in range(300)]
    for timer in keep:
        timer.cancel()
        timer.cancel()  # twice is fine
    start = time.monotonic()
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map={})
    assert fired == []
    assert time.monotonic() - start < 1.0


def test_reset_moves_the_due_time_later(asyncore, timers):
    fired = []
    start = time.monotonic()
    timer = timers.later(0.05, lambda: fired.append(time.monotonic() - start))
    timers.later(0.03, timer.reset)
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map={})
    assert len(fired) == 1 and fired[0] >= 0.08
    # A timer that ran can be armed again.
    timer.reset()
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map={})
    assert len(fired) == 2


def test_timer_api_errors_at_the_call(fastcore_pkg, timers):
    with pytest.raises(ValueError):
        fastcore_pkg.call_later(-1, print)
    with pytest.raises(ValueError):
        fastcore_pkg.call_later(float("nan"), print)
    with pytest.raises(TypeError):
        fastcore_pkg.call_later("soon", print)
    with pytest.raises(TypeError):
        fastcore_pkg.call_later(1, None)
    with pytest.raises(ValueError):
        fastcore_pkg.call_every(0, print)
    with pytest.raises(TypeError):
        fastcore_pkg.call_soon_threadsafe(42)
    timer = timers.later(10, print)
    timer.cancel()
    with pytest.raises(RuntimeError):
        timer.reset()
    assert "cancelled" in repr(timer)


def test_failing_callback_is_logged_and_the_loop_goes_on(asyncore, timers, caplog):
    fired = []

    def broken():
        raise RuntimeError("timer boom")

    timers.later(0.0, broken)
    timers.later(0.01, fired.append, "after")
    with caplog.at_level(logging.ERROR, logger="fastcore"):
        asyncore.loop(timeout=DEFAULT_TIMEOUT, map={})
    assert fired == ["after"]
    assert any("timer boom" in (r.exc_text or "") or
               (r.exc_info and "timer boom" in str(r.exc_info[1])) for r in caplog.records)


def test_exitnow_from_a_timer_leaves_the_loop(asyncore, timers):
    fired = []

    def stop():
        raise asyncore.ExitNow("stop")

    timers.later(0.0, stop)
    later = timers.later(0.05, fired.append, 1)
    with pytest.raises(asyncore.ExitNow):
        asyncore.loop(timeout=DEFAULT_TIMEOUT, map={})
    assert fired == []
    later.cancel()


def test_callback_scheduling_itself_at_zero_waits_for_the_next_iteration(asyncore, timers):
    runs = []

    def again():
        runs.append(1)
        if len(runs) < 1000:
            timers.later(0, again)

    timers.later(0, again)
    asyncore.loop(timeout=DEFAULT_TIMEOUT, map={}, count=5)
    assert len(runs) == 5


def test_call_soon_threadsafe_wakes_a_sleeping_loop(asyncore, fastcore_pkg):
    map = {}
    idle = Idle(asyncore, map)
    ran_on = []
    started = threading.Event()

    def other_thread():
        started.wait(DEFAULT_TIMEOUT)
        time.sleep(0.05)  # let the loop fall asleep; the test passes either way
        fastcore_pkg.call_soon_threadsafe(lambda: ran_on.append(threading.get_ident()))

    thread = start_thread(other_thread)
    try:
        start = time.monotonic()
        started.set()
        asyncore.loop(timeout=30, map=map, count=1)
        elapsed = time.monotonic() - start
        thread.finish()
        assert ran_on == [threading.get_ident()]
        assert elapsed < DEFAULT_TIMEOUT
    finally:
        idle.close()


def test_call_soon_threadsafe_from_many_threads_loses_nothing(asyncore, fastcore_pkg):
    got = []
    n_threads, per_thread = 8, 500

    def producer(k):
        for i in range(per_thread):
            fastcore_pkg.call_soon_threadsafe(got.append, (k, i))

    threads = [start_thread(producer, k) for k in range(n_threads)]
    map = {}
    idle = Idle(asyncore, map)
    try:
        run_until(asyncore, map, lambda: len(got) == n_threads * per_thread)
    finally:
        idle.close()
        for thread in threads:
            thread.finish()
    for k in range(n_threads):
        assert [i for kk, i in got if kk == k] == list(range(per_thread))


def test_run_in_executor_delivers_results_and_errors_on_the_loop_thread(asyncore, fastcore_pkg):
    done = []

    def work(x):
        if x < 0:
            raise ValueError("negative")
        return x * 2

    def callback(future):
        done.append((threading.get_ident(), future))

    map = {}
    idle = Idle(asyncore, map)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            fastcore_pkg.run_in_executor(pool, work, 21, callback=callback)
            fastcore_pkg.run_in_executor(pool, work, -1, callback=callback)
            run_until(asyncore, map, lambda: len(done) == 2)
        finally:
            idle.close()
    assert {ident for ident, _ in done} == {threading.get_ident()}
    values = [f.result() for _, f in done if f.exception() is None]
    errors = [f.exception() for _, f in done if f.exception() is not None]
    assert values == [42]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_run_in_executor_rejects_a_callback_that_cannot_be_called(fastcore_pkg):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with pytest.raises(TypeError):
            fastcore_pkg.run_in_executor(pool, print, 1, callback=3)


def test_timers_run_in_a_blocked_loop_with_dispatchers(asyncore, asynchat, timers):
    """A timer that pushes to an async_chat: its output goes out in the same loop."""
    map = {}
    a, b = socket.socketpair()
    chat = asynchat.async_chat(a, map=map)
    try:
        timers.later(0.01, chat.push, b"tick\n")
        run_until(asyncore, map, lambda: chat.producer_fifo is not None and
                  not chat.producer_fifo and chat.connected and _peek(b) == b"tick\n")
    finally:
        chat.close()
        b.close()


def _peek(sock):
    try:
        return sock.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""
