# The loop's counters and the debug-mode switch, kept in C.
#
# Counters are plain increments of one process-wide struct (the GIL orders
# them): cheap enough to stay on. Debug mode is one C global tested where a
# handler runs; when it is on, each handler call is timed and handed to
# fastcore.debug (per-dispatcher trace, slow-handler warnings).
# fastcore/stats.py and fastcore/debug.py are the public side;
# fastcore/_core_py/stats.py is the pure-Python twin.

from libc.string cimport memset


cdef enum:
    EV_READ = 0
    EV_WRITE = 1
    EV_EXPT = 2
    EV_CLOSE = 3     # handle_close calls the core made
    EV_ERROR = 4     # handle_error calls the core made
    EV_KINDS = 5

cdef tuple _EVENT_KIND_NAMES = ("read", "write", "expt", "close", "error")

# Upper bounds (seconds) of the handler-time histogram's buckets; one more
# bucket takes the rest. Each iteration's handler time is one observation:
# the clock reads it needs are the ones handler_seconds already makes.
cdef enum:
    HANDLER_BOUNDS = 14
cdef double _handler_bounds[14]
_handler_bounds[:] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                      0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


cdef struct LoopStats:
    unsigned long long iterations
    double poll_seconds       # waiting in epoll/kqueue/poll/select
    double handler_seconds    # from the end of the wait to the end of the iteration
    unsigned long long events[5]  # EV_KINDS
    unsigned long long bytes_read
    unsigned long long bytes_written
    unsigned long long accepted
    unsigned long long rejected        # closed by fastcore before reaching the program
    unsigned long long accept_pauses   # a listener reached its connection limit
    unsigned long long closed
    unsigned long long timers_run
    unsigned long long tls_handshakes
    unsigned long long tls_handshake_failures
    unsigned long long handler_buckets[15]  # HANDLER_BOUNDS + 1, not cumulative


cdef LoopStats _stats
cdef bint _debug = False        # debug mode: the only test on the hot path when off
cdef object _debug_sink = None  # fastcore.debug's recorder, while debug mode is on
cdef object _warning_sink = None  # fastcore.log's route for the loop's own warnings


# -- hooks for the loop --------------------------------------------------------

cdef inline void stats_iteration(double wait_started, double wait_ended) noexcept nogil:
    """End of one iteration: the wait took wait_ended - wait_started."""
    cdef double handled = fc_monotonic() - wait_ended
    cdef int bucket = 0
    _stats.iterations += 1
    _stats.poll_seconds += wait_ended - wait_started
    _stats.handler_seconds += handled
    while bucket < HANDLER_BOUNDS and handled > _handler_bounds[bucket]:
        bucket += 1
    _stats.handler_buckets[bucket] += 1


cdef inline void stats_bytes_read(object data) noexcept:
    if isinstance(data, bytes):
        _stats.bytes_read += len(<bytes>data)


cdef inline void stats_bytes_written(object sent) noexcept:
    # An exact int: an int subclass's __gt__ is Python code, and the mask
    # cannot overflow.
    if type(sent) is int and sent > 0:
        _stats.bytes_written += PyLong_AsUnsignedLongLongMask(sent)


cdef inline void stats_timer_ran() noexcept nogil:
    """The timer code calls this once per timer callback run. In debug mode
    it also calls trace_timer(): ``if _debug: trace_timer(callback, started)``
    with started = fc_monotonic() read before the callback."""
    _stats.timers_run += 1


cdef struct TraceMark:
    double started
    unsigned long long read
    unsigned long long written


cdef inline void trace_begin(TraceMark *mark) noexcept nogil:
    mark.started = fc_monotonic()
    mark.read = _stats.bytes_read
    mark.written = _stats.bytes_written


cdef int trace_end(TraceMark *mark, object obj, int flags) except -1:
    """Debug mode: hand one handler call (FC_* flags it served) to fastcore.debug."""
    sink = _debug_sink
    if sink is not None:
        sink.handled(obj, flags, mark.started, fc_monotonic() - mark.started,
                     _stats.bytes_read - mark.read, _stats.bytes_written - mark.written)
    return 0


cdef int trace_timer(object callback, double started) except -1:
    """Debug mode: the timer code calls this after a callback that began at
    started (fc_monotonic()) returned; slow ones are logged."""
    sink = _debug_sink
    if sink is not None:
        sink.timer_done(callback, fc_monotonic() - started)
    return 0


cdef int trace_error(object obj) except -1:
    """Debug mode: obj is about to get handle_error(); log its trace."""
    sink = _debug_sink
    if sink is not None:
        sink.erred(obj)
    return 0


cdef int loop_warning(object obj, str message) except -1:
    """A warning of the loop's own about obj: to stderr, or fastcore.log's route."""
    sink = _warning_sink
    if sink is None:
        sys.stderr.write(message + "\n")
    else:
        sink(obj, message)
    return 0


cdef int ensure_debug() except -1:
    """loop(debug=True): turn debug mode on (it stays on)."""
    if not _debug:
        from fastcore import debug
        debug.enable()
    return 0


# -- the interface fastcore/stats.py, debug.py and log.py use -------------------

def stats_snapshot():
    """The counters, as a dict."""
    cdef int i
    cdef unsigned long long below = 0
    histogram = []
    for i in range(HANDLER_BOUNDS + 1):
        below += _stats.handler_buckets[i]
        histogram.append((_handler_bounds[i] if i < HANDLER_BOUNDS else float("inf"), below))
    return {
        "iterations": _stats.iterations,
        "poll_seconds": _stats.poll_seconds,
        "handler_seconds": _stats.handler_seconds,
        "events": {_EVENT_KIND_NAMES[i]: _stats.events[i] for i in range(EV_KINDS)},
        "bytes_read": _stats.bytes_read,
        "bytes_written": _stats.bytes_written,
        "handler_seconds_histogram": histogram,
        "accepted": _stats.accepted,
        "rejected": _stats.rejected,
        "accept_pauses": _stats.accept_pauses,
        "closed": _stats.closed,
        "timers_run": _stats.timers_run,
        "tls_handshakes": _stats.tls_handshakes,
        "tls_handshake_failures": _stats.tls_handshake_failures,
    }


def stats_reset():
    """Every counter back to zero."""
    memset(&_stats, 0, sizeof(_stats))


def timer_ran():
    """One timer callback ran (for timer code written in Python)."""
    stats_timer_ran()


def count_accepted():
    """dispatcher.accept() returned a connection."""
    _stats.accepted += 1


def count_rejected():
    """fastcore closed an accepted connection without handing it to the
    program (fastcore.proxy: a bad or late PROXY protocol header)."""
    _stats.rejected += 1


def set_debug(sink):
    """Debug mode on with sink (an object with handled() and erred()), or off (None)."""
    global _debug, _debug_sink
    _debug_sink = sink
    _debug = sink is not None


def debug_enabled():
    return _debug


def set_warning_sink(sink):
    """Route the loop's own warnings to sink(obj, message); None: to stderr."""
    global _warning_sink
    _warning_sink = sink
