"""Timers, idle timeouts, callbacks handed over by other threads, and the
waker that cuts a sleeping wait short (the twin of src/scheduler.pxi).

One scheduler per process, run by the loop after each iteration's events.
Timers sit in a heap of (due time, sequence, timer); a cancelled timer stays
in it until it comes to the top or until cancelled entries make up most of
the heap, when the heap is rebuilt without them (lazy cancellation). A timer
whose due time moved later (``reset()``, an idle dispatcher that saw
activity) is not moved in the heap: when its old slot comes up, it is put
back under its new time, so activity costs one float store and no heap work.
"""

import collections
import heapq
import itertools
import logging
import math
import os
import threading
from time import monotonic

from fastcore._common import _reraised_exceptions
from fastcore._core_py import stats

COMPACT_MIN = 64  # cancelled entries tolerated before a compaction is considered

_log = logging.getLogger("fastcore")
_heap = []  # (due time, sequence, Timer)
_cancelled_in_heap = 0
_scheduled_user_timers = 0  # call_later/call_every timers still to run: they keep loop() going
_sequence = itertools.count()
_soon = collections.deque()  # (callback, args) from call_soon_threadsafe
_waker = None  # (read fd, write fd, pid of the process that made them)
_waker_lock = threading.Lock()


def _check_delay(delay, what):
    try:
        delay = float(delay)
    except (TypeError, ValueError):
        raise TypeError("%s must be a number of seconds, not %r" % (what, delay)) from None
    if math.isnan(delay) or delay < 0:
        raise ValueError("%s must be 0 or more seconds, not %r" % (what, delay))
    return delay


class Timer:
    """A handle on a callback due later: ``cancel()``, ``reset()``."""

    __slots__ = (
        "_when",
        "_delay",
        "_repeat",
        "_callback",
        "_args",
        "_kwargs",
        "_cancelled",
        "_in_heap",
        "_scheduled",
    )
    _keeps_loop_running = True

    def __init__(self, delay, callback, args, kwargs, repeat):
        self._scheduled = False
        self._delay = delay
        self._repeat = repeat
        self._callback = callback
        self._args = args
        self._kwargs = kwargs
        self._cancelled = False
        self._in_heap = False
        self._when = monotonic() + delay
        self._schedule()

    def _schedule(self):
        global _scheduled_user_timers
        if not self._scheduled:
            self._scheduled = True
            if self._keeps_loop_running:
                _scheduled_user_timers += 1
        if not self._in_heap:
            _push(self)
        # A later import: the registry imports this module.
        from fastcore._core_py.registry import notify_change

        notify_change()

    def _unschedule(self):
        global _scheduled_user_timers
        if self._scheduled:
            self._scheduled = False
            if self._keeps_loop_running:
                _scheduled_user_timers -= 1

    @property
    def when(self):
        """The time.monotonic() value it is due at."""
        return self._when

    @property
    def cancelled(self):
        return self._cancelled

    def cancel(self):
        """Never run it (again). Safe to call twice, or from its own callback."""
        global _cancelled_in_heap
        if self._cancelled:
            return
        self._cancelled = True
        self._unschedule()
        self._callback = self._args = self._kwargs = None
        if self._in_heap:
            _cancelled_in_heap += 1
            if _cancelled_in_heap > COMPACT_MIN and _cancelled_in_heap * 2 > len(_heap):
                _compact()

    def reset(self):
        """Due again its delay (call_every: its interval) from now, whether it
        ran already or not."""
        if self._cancelled:
            raise RuntimeError("reset() of a cancelled timer")
        self._when = monotonic() + self._delay
        self._schedule()

    def _fire(self, now):
        if self._repeat:
            due = self._when + self._delay
            # Late (a slow handler, a suspended process): skip the missed runs.
            self._when = due if due > now else now + self._delay
            _push(self)
        else:
            self._unschedule()
        _run_timer_callback(self._callback, self._args, self._kwargs)

    def __repr__(self):
        state = "cancelled" if self._cancelled else "due %.3f" % self._when
        what = "call_every" if self._repeat else "call_later"
        return "<fastcore.Timer %s %r %s>" % (what, self._callback, state)


class IdleTimer(Timer):
    """A dispatcher's idle timeout (set_idle_timeout): its action after
    ``delay`` seconds with no read or write event. The loop writes the time of each event to
    ``_activity``; the due time follows it lazily."""

    __slots__ = ("_owner", "_activity")
    _keeps_loop_running = False  # the dispatcher's presence in a map does

    def __init__(self, owner, delay):
        self._owner = owner
        self._activity = monotonic()
        super().__init__(delay, None, (), None, False)

    def cancel(self):
        super().cancel()
        self._owner = None

    def _fire(self, now):
        due = self._activity + self._delay
        if due > now:
            self._when = due
            _push(self)
            return
        # Armed again before the call: an action that closes cancels it.
        owner = self._owner
        self._activity = now
        self._when = now + self._delay
        _push(self)
        stats.timer_ran()
        from fastcore._core_py.registry import call_handle_error

        try:
            owner._fc_idle_timeout_expired()
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(owner, owner._fileno, owner._map)

    def __repr__(self):
        return "<fastcore idle timeout %.3fs of %r>" % (self._delay, self._owner)


def _push(timer):
    timer._in_heap = True
    heapq.heappush(_heap, (timer._when, next(_sequence), timer))


def _compact():
    global _cancelled_in_heap
    live = [item for item in _heap if not item[2]._cancelled]
    for item in _heap:
        if item[2]._cancelled:
            item[2]._in_heap = False
    heapq.heapify(live)
    _heap[:] = live
    _cancelled_in_heap = 0


_scheduled_user_timers = 0  # call_later/call_every timers still to run: they keep loop() going


def _run_timer_callback(callback, args, kwargs):
    stats.timer_ran()
    if stats.state.debug:
        started = monotonic()
        _run_callback(callback, args, kwargs)
        stats.trace_timer(callback, started)  # slow ones are logged
    else:
        _run_callback(callback, args, kwargs)


def _run_callback(callback, args, kwargs):
    try:
        if kwargs:
            callback(*args, **kwargs)
        else:
            callback(*args)
    except _reraised_exceptions:
        raise
    except BaseException:
        _log.exception("fastcore: exception in callback %r", callback)


# -- the public calls ----------------------------------------------------------


def call_later(delay, callback, /, *args, **kwargs):
    """Run ``callback(*args, **kwargs)`` once, ``delay`` seconds from now, on
    the loop's thread. Returns a Timer."""
    delay = _check_delay(delay, "delay")
    if not callable(callback):
        raise TypeError("callback must be callable, not %r" % (callback,))
    return Timer(delay, callback, args, kwargs, False)


def call_every(interval, callback, /, *args, **kwargs):
    """Run ``callback(*args, **kwargs)`` every ``interval`` seconds (the first
    time one interval from now) until cancelled. Returns a Timer."""
    interval = _check_delay(interval, "interval")
    if interval == 0:
        raise ValueError("interval must be more than 0 seconds")
    if not callable(callback):
        raise TypeError("callback must be callable, not %r" % (callback,))
    return Timer(interval, callback, args, kwargs, True)


def call_soon_threadsafe(callback, /, *args):
    """From any thread: run ``callback(*args)`` on the loop's thread, waking
    the loop if it sleeps."""
    if not callable(callback):
        raise TypeError("callback must be callable, not %r" % (callback,))
    _soon.append((callback, args))
    waker = _waker
    if waker is not None and waker[2] == os.getpid():
        try:
            os.write(waker[1], b"\0")
        except (BlockingIOError, OSError):
            pass  # full: the loop wakes anyway; closed: the process is exiting


def pending():
    """True if call_later/call_every timers or handed-over callbacks wait."""
    return _scheduled_user_timers > 0 or bool(_soon)


# -- what the loop calls -----------------------------------------------------------


def waker_fd():
    """The fd a poller must watch for call_soon_threadsafe's wake-ups (made on
    first use, and anew in a forked child: the parent's would wake both)."""
    global _waker
    waker = _waker
    if waker is None or waker[2] != os.getpid():
        with _waker_lock:
            waker = _waker
            if waker is None or waker[2] != os.getpid():
                if waker is not None:
                    os.close(waker[0])
                    os.close(waker[1])
                read_fd, write_fd = os.pipe()
                os.set_blocking(read_fd, False)
                os.set_blocking(write_fd, False)
                waker = _waker = (read_fd, write_fd, os.getpid())
    return waker[0]


def waker_write_fd():
    """The write end of the waker, for signal.set_wakeup_fd."""
    waker_fd()
    return _waker[1]


def drain_waker():
    """Empty the waker: True if it held only signal numbers (the bytes
    signal.set_wakeup_fd writes), False if call_soon_threadsafe's zero came too."""
    signals_only = True
    try:
        while True:
            chunk = os.read(_waker[0], 4096)
            if not chunk:
                break
            if 0 in chunk:
                signals_only = False
    except BlockingIOError:
        pass
    return signals_only


def next_timer_delay():
    """Seconds until the next timer (idle timeouts included) is due, 0 when
    handed-over callbacks wait, None when nothing does."""
    global _cancelled_in_heap
    if _soon:
        return 0.0
    while _heap and _heap[0][2]._cancelled:
        heapq.heappop(_heap)[2]._in_heap = False
        _cancelled_in_heap -= 1
    if not _heap:
        return None
    return max(_heap[0][0] - monotonic(), 0.0)


def wait_timeout(timeout):
    """The loop's timeout (seconds, None blocks) shortened to the next timer."""
    delay = next_timer_delay()
    if delay is None:
        return timeout
    if timeout is None or delay < timeout:
        return delay
    return timeout


def now_if_timers():
    """time.monotonic() when timers are pending (the time idle dispatchers
    are stamped with), else 0.0."""
    return monotonic() if _heap else 0.0


def run_due():
    """Run the timers due by now, then the callbacks handed over so far.
    Callbacks they schedule wait for the next iteration. True if it took a
    timer or a callback (and so may have run or dropped the program's code)."""
    global _cancelled_in_heap
    took = False
    if _heap:
        now = monotonic()
        due = []
        while _heap and _heap[0][0] <= now:
            took = True
            timer = heapq.heappop(_heap)[2]
            timer._in_heap = False
            if timer._cancelled:
                _cancelled_in_heap -= 1
            elif timer._when > now:
                _push(timer)  # moved later since it was pushed
            else:
                due.append(timer)
        for timer in due:
            if not timer._cancelled:
                timer._fire(now)
    if _soon:
        took = True
        for _ in range(len(_soon)):
            callback, args = _soon.popleft()
            _run_callback(callback, args, None)
    return took
