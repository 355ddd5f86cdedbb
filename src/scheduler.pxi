# Timers, idle timeouts, callbacks handed over by other threads, and the
# waker that cuts a sleeping wait short (the twin of
# fastcore/_core_py/scheduler.py, which says more).
#
# One scheduler per process, run by the loop after each iteration's events.
# Timers sit in a heap of (due time, sequence, timer); cancelled ones stay
# until they reach the top or dominate the heap (then it is rebuilt without
# them). A timer whose due time moved later stays where it is and is put back
# under its new time when its old slot comes up: activity on an idle-timed
# dispatcher costs one double store.

cdef enum:
    COMPACT_MIN = 64   # cancelled entries tolerated before a compaction is considered

cdef list _heap = []                     # (due time, sequence, Timer)
cdef Py_ssize_t _cancelled_in_heap = 0
cdef Py_ssize_t _scheduled_user_timers = 0   # call_later/call_every still to run
cdef unsigned long long _sequence = 0
cdef object _soon = collections.deque()  # (callback, args) from call_soon_threadsafe
cdef tuple _waker = None                 # (read fd, write fd, pid that made them)
cdef object _waker_lock = threading.Lock()
cdef double _now = 0.0                   # this iteration's time, while timers exist
cdef dict _claims = {}                   # fd -> (listener, socket) accepted this iteration
_log = logging.getLogger("fastcore")


cdef double check_delay(object delay, str what) except? -1.0:
    cdef double seconds
    try:
        seconds = float(delay)
    except (TypeError, ValueError):
        raise TypeError("%s must be a number of seconds, not %r" % (what, delay)) from None
    if seconds != seconds or seconds < 0:
        raise ValueError("%s must be 0 or more seconds, not %r" % (what, delay))
    return seconds


@cython.binding(False)
cdef class Timer:
    """A handle on a callback due later: ``cancel()``, ``reset()``."""
    cdef double _when
    cdef double _delay
    cdef bint _repeat
    cdef bint _cancelled
    cdef bint _in_heap
    cdef bint _scheduled
    cdef bint _keeps_loop_running
    cdef object _callback
    cdef tuple _args
    cdef dict _kwargs

    def __init__(self, *args, **kwargs):
        raise TypeError("timers are made by fastcore.call_later() and call_every()")

    @property
    def when(self):
        """The monotonic time it is due at."""
        return self._when

    @property
    def cancelled(self):
        return self._cancelled

    cdef int schedule(self) except -1:
        global _scheduled_user_timers
        if not self._scheduled:
            self._scheduled = True
            if self._keeps_loop_running:
                _scheduled_user_timers += 1
        if not self._in_heap:
            push_timer(self)
        notify_change()
        return 0

    cdef void unschedule(self) noexcept:
        global _scheduled_user_timers
        if self._scheduled:
            self._scheduled = False
            if self._keeps_loop_running:
                _scheduled_user_timers -= 1

    def cancel(self):
        """Never run it (again). Safe to call twice, or from its own callback."""
        self.cancel_timer()

    cdef int cancel_timer(self) except -1:
        global _cancelled_in_heap
        if self._cancelled:
            return 0
        self._cancelled = True
        self.unschedule()
        self._callback = self._args = self._kwargs = None
        if self._in_heap:
            _cancelled_in_heap += 1
            if _cancelled_in_heap > COMPACT_MIN and _cancelled_in_heap * 2 > len(_heap):
                compact_heap()
        return 0

    def reset(self):
        """Due again its delay (call_every: its interval) from now, whether it
        ran already or not."""
        if self._cancelled:
            raise RuntimeError("reset() of a cancelled timer")
        self._when = fc_monotonic() + self._delay
        self.schedule()

    cdef int fire(self, double now) except -1:
        cdef double due
        if self._repeat:
            due = self._when + self._delay
            # Late (a slow handler, a suspended process): skip the missed runs.
            self._when = due if due > now else now + self._delay
            push_timer(self)
        else:
            self.unschedule()
        run_timer_callback(self._callback, self._args, self._kwargs)
        return 0

    def __repr__(self):
        state = "cancelled" if self._cancelled else "due %.3f" % self._when
        what = "call_every" if self._repeat else "call_later"
        return "<fastcore.Timer %s %r %s>" % (what, self._callback, state)


@cython.binding(False)
cdef class IdleTimer(Timer):
    """A dispatcher's idle timeout (set_idle_timeout): its action after its
    delay with no read or write event; the loop stores each event's time in
    _activity."""
    cdef DispatcherBase _owner
    cdef double _activity

    cdef int cancel_timer(self) except -1:
        Timer.cancel_timer(self)
        self._owner = None
        return 0

    cdef int fire(self, double now) except -1:
        cdef double due = self._activity + self._delay
        cdef DispatcherBase owner = self._owner
        if due > now:
            self._when = due
            push_timer(self)
            return 0
        # Armed again before the call: an action that closes cancels it.
        self._activity = now
        self._when = now + self._delay
        push_timer(self)
        stats_timer_ran()
        try:
            idle_timeout_expired(owner)
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(owner)
        return 0

    def __repr__(self):
        return "<fastcore idle timeout %.3fs of %r>" % (self._delay, self._owner)


cdef Timer new_timer(double delay, object callback, tuple args, dict kwargs, bint repeat):
    cdef Timer timer = Timer.__new__(Timer)
    timer._delay = delay
    timer._repeat = repeat
    timer._callback = callback
    timer._args = args
    timer._kwargs = kwargs
    timer._keeps_loop_running = True
    timer._when = fc_monotonic() + delay
    timer.schedule()
    return timer


cdef IdleTimer new_idle_timer(DispatcherBase owner, double delay):
    cdef IdleTimer timer = IdleTimer.__new__(IdleTimer)
    timer._owner = owner
    timer._delay = delay
    timer._activity = fc_monotonic()
    timer._when = timer._activity + delay
    timer.schedule()   # _keeps_loop_running stays False: the map's entry does
    return timer


cdef int push_timer(Timer timer) except -1:
    global _sequence
    timer._in_heap = True
    _sequence += 1
    heappush(_heap, (timer._when, _sequence, timer))
    return 0


cdef int compact_heap() except -1:
    global _cancelled_in_heap
    cdef list live = []
    cdef Timer timer
    for item in _heap:
        timer = <Timer>(<tuple>item)[2]
        if timer._cancelled:
            timer._in_heap = False
        else:
            live.append(item)
    heapify(live)
    _heap[:] = live
    _cancelled_in_heap = 0
    return 0


cdef int run_timer_callback(object callback, tuple args, dict kwargs) except -1:
    cdef double started
    stats_timer_ran()
    if _debug:
        started = fc_monotonic()
        run_callback(callback, args, kwargs)
        trace_timer(callback, started)   # slow ones are logged
    else:
        run_callback(callback, args, kwargs)
    return 0


cdef int run_callback(object callback, tuple args, dict kwargs) except -1:
    try:
        if kwargs:
            callback(*args, **kwargs)
        else:
            callback(*args)
    except _reraised_exceptions:
        raise
    except BaseException:
        _log.exception("fastcore: exception in callback %r", callback)
    return 0


# -- the public calls ----------------------------------------------------------

def call_later(delay, callback, /, *args, **kwargs):
    """Run ``callback(*args, **kwargs)`` once, ``delay`` seconds from now, on
    the loop's thread. Returns a Timer."""
    cdef double seconds = check_delay(delay, "delay")
    if not callable(callback):
        raise TypeError("callback must be callable, not %r" % (callback,))
    return new_timer(seconds, callback, args, kwargs, False)


def call_every(interval, callback, /, *args, **kwargs):
    """Run ``callback(*args, **kwargs)`` every ``interval`` seconds (the first
    time one interval from now) until cancelled. Returns a Timer."""
    cdef double seconds = check_delay(interval, "interval")
    if seconds == 0:
        raise ValueError("interval must be more than 0 seconds")
    if not callable(callback):
        raise TypeError("callback must be callable, not %r" % (callback,))
    return new_timer(seconds, callback, args, kwargs, True)


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
        except OSError:
            pass   # full: the loop wakes anyway; closed: the process is exiting


cdef inline bint scheduler_pending():
    """call_later/call_every timers or handed-over callbacks wait."""
    return _scheduled_user_timers > 0 or len(_soon) > 0


def claim_connection(DispatcherBase listener not None, sock):
    """accept() gave ``sock`` to ``listener``: if the listener has a
    connection limit, the dispatcher made on it this iteration counts
    against it."""
    if listener._max_connections >= 0:
        _claims[sock.fileno()] = (listener, sock)


# -- what the loop calls -----------------------------------------------------------

cdef int waker_fd() except -1:
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


cdef int drain_waker() except -1:
    """Empty the waker: 1 if it held only signal numbers (the bytes
    signal.set_wakeup_fd writes), 0 if call_soon_threadsafe's zero came too."""
    cdef bint signals_only = True
    cdef bytes chunk
    try:
        while True:
            chunk = os.read(_waker[0], 4096)
            if not chunk:
                break
            if memchr(<char *>chunk, 0, len(chunk)) != NULL:
                signals_only = False
    except BlockingIOError:
        pass
    return signals_only


cdef double next_due_in() except? -2.0:
    """Seconds until the next timer is due (0: callbacks wait), -1 for none."""
    global _cancelled_in_heap
    cdef double delay
    if len(_soon):
        return 0.0
    while _heap and (<Timer>(<tuple>_heap[0])[2])._cancelled:
        (<Timer>(<tuple>heappop(_heap))[2])._in_heap = False
        _cancelled_in_heap -= 1
    if not _heap:
        return -1.0
    delay = <double>(<tuple>_heap[0])[0] - fc_monotonic()
    return delay if delay > 0.0 else 0.0


def next_timer_delay():
    """Seconds until the next timer (idle timeouts included) is due, 0 when
    handed-over callbacks wait, None when nothing does."""
    cdef double delay = next_due_in()
    return None if delay < 0.0 else delay


cdef int shorten_by_timers(int ms) except? -2:
    """The wait in ms (-1 blocks) cut to the next timer, rounded up."""
    cdef double delay = next_due_in()
    cdef int due_ms
    if delay < 0.0:
        return ms
    if delay == 0.0:
        return 0
    due_ms = 2147483647 if delay >= 2147483.0 else <int>(delay * 1000.0 + 0.999)
    if ms < 0 or due_ms < ms:
        return due_ms
    return ms


cdef int run_due(double now) except -1:
    """Run the timers due by ``now``, then the callbacks handed over so far.
    Callbacks they schedule wait for the next iteration."""
    global _cancelled_in_heap
    cdef Timer timer
    cdef list due
    if _heap and <double>(<tuple>_heap[0])[0] <= now:
        due = []
        while _heap and <double>(<tuple>_heap[0])[0] <= now:
            timer = <Timer>(<tuple>heappop(_heap))[2]
            timer._in_heap = False
            if timer._cancelled:
                _cancelled_in_heap -= 1
            elif timer._when > now:
                push_timer(timer)   # moved later since it was pushed
            else:
                due.append(timer)
        for t in due:
            timer = <Timer>t
            if not timer._cancelled:
                timer.fire(now)
    if len(_soon):
        for _ in range(len(_soon)):
            callback, args = _soon.popleft()
            run_callback(callback, args, None)
    return 0
