"""The loop's counters and the debug-mode switch: the twin of src/stats.pxi.

``counts`` is one process-wide object whose attributes the loop increments
(inline, at the places listed in docs/design.md);
``state.debug`` is the one test on the hot path when debug mode is off.
fastcore/stats.py and fastcore/debug.py are the public side.
"""

import sys
from time import monotonic

EVENT_KINDS = ("read", "write", "expt", "close", "error")

# Upper bounds (seconds) of the handler-time histogram's buckets; one more
# bucket takes the rest. Each iteration's handler time is one observation:
# the clock reads it needs are the ones handler_seconds already makes.
HANDLER_BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)


class Counts:
    __slots__ = (
        "iterations",
        "poll_seconds",
        "handler_seconds",
        "read",
        "write",
        "expt",
        "close",
        "error",
        "bytes_read",
        "bytes_written",
        "accepted",
        "rejected",  # closed by fastcore before reaching the program
        "accept_pauses",  # a listener reached its connection limit
        "closed",
        "timers_run",
        "tls_handshakes",
        "tls_handshake_failures",
        "handler_buckets",  # len(HANDLER_BOUNDS) + 1 counts, not cumulative
    )

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)
        self.handler_buckets = [0] * (len(HANDLER_BOUNDS) + 1)


class State:
    __slots__ = ("debug", "debug_sink", "warning_sink")

    def __init__(self):
        self.debug = False
        self.debug_sink = None  # fastcore.debug's recorder, while debug mode is on
        self.warning_sink = None  # fastcore.log's route for the loop's own warnings


counts = Counts()
state = State()


# -- hooks for the loop ---------------------------------------------------------


def trace_begin():
    """Debug mode, before a handler call: what trace_end() needs."""
    return monotonic(), counts.bytes_read, counts.bytes_written


def trace_end(mark, obj, flags):
    """Debug mode: hand one handler call (POLL* flags it served) to fastcore.debug."""
    sink = state.debug_sink
    if sink is not None:
        started, read, written = mark
        sink.handled(
            obj,
            flags,
            started,
            monotonic() - started,
            counts.bytes_read - read,
            counts.bytes_written - written,
        )


def trace_timer(callback, started):
    """Debug mode: the timer code calls this after a callback that began at
    started (monotonic()) returned; slow ones are logged.
    ``if state.debug: trace_timer(callback, started)``"""
    sink = state.debug_sink
    if sink is not None:
        sink.timer_done(callback, monotonic() - started)


def trace_error(obj):
    """Debug mode: obj is about to get handle_error(); log its trace."""
    sink = state.debug_sink
    if sink is not None:
        sink.erred(obj)


def loop_warning(obj, message):
    """A warning of the loop's own about obj: to stderr, or fastcore.log's route."""
    sink = state.warning_sink
    if sink is None:
        sys.stderr.write(message + "\n")
    else:
        sink(obj, message)


def ensure_debug():
    """loop(debug=True): turn debug mode on (it stays on)."""
    if not state.debug:
        from fastcore import debug

        debug.enable()


# -- the interface fastcore/stats.py, debug.py and log.py use -------------------


def stats_snapshot():
    """The counters, as a dict."""
    histogram = []
    below = 0
    for bound, count in zip(HANDLER_BOUNDS + (float("inf"),), counts.handler_buckets):
        below += count
        histogram.append((bound, below))
    return {
        "iterations": counts.iterations,
        "poll_seconds": float(counts.poll_seconds),
        "handler_seconds": float(counts.handler_seconds),
        "events": {kind: getattr(counts, kind) for kind in EVENT_KINDS},
        "bytes_read": counts.bytes_read,
        "bytes_written": counts.bytes_written,
        "handler_seconds_histogram": histogram,
        "accepted": counts.accepted,
        "rejected": counts.rejected,
        "accept_pauses": counts.accept_pauses,
        "closed": counts.closed,
        "timers_run": counts.timers_run,
        "tls_handshakes": counts.tls_handshakes,
        "tls_handshake_failures": counts.tls_handshake_failures,
    }


def stats_reset():
    """Every counter back to zero."""
    counts.__init__()


def timer_ran():
    """One timer callback ran: the timer code calls this (and trace_timer()
    in debug mode)."""
    counts.timers_run += 1


def count_accepted():
    """dispatcher.accept() returned a connection."""
    counts.accepted += 1


def count_rejected():
    """fastcore closed an accepted connection without handing it to the
    program (fastcore.proxy: a bad or late PROXY protocol header)."""
    counts.rejected += 1


def set_debug(sink):
    """Debug mode on with sink (an object with handled() and erred()), or off (None)."""
    state.debug_sink = sink
    state.debug = sink is not None


def debug_enabled():
    return state.debug


def set_warning_sink(sink):
    """Route the loop's own warnings to sink(obj, message); None: to stderr."""
    state.warning_sink = sink
