"""The loop's statistics: ``fastcore.stats(map=None, reset=False)``.

The counters are kept by the core (plain C integer increments in the
extension) for the whole process: every map, every thread. The gauges
(``dispatchers``, ``listening``, ``connections_open``) are counted in the
given map when the snapshot is taken. ``fastcore.stats`` is this module,
callable::

    snapshot = fastcore.stats()            # the default map's gauges
    snapshot = fastcore.stats(reset=True)  # then every counter back to zero
    fastcore.stats.reset()

A snapshot is a plain dict:

============================== ===================================================
``iterations``                 loop iterations run (one wait each)
``poll_seconds``               time spent waiting in epoll/kqueue/poll/select
``handler_seconds``            time from the end of each wait to the end of its iteration:
                               the handlers, and the loop's own dispatch work around them
``events``                     handler calls by kind: ``read``, ``write``, ``expt``, and the
                               ``close`` (``handle_close``) and ``error`` (``handle_error``)
                               calls the core made
``bytes_read``                 bytes returned by ``dispatcher.recv`` (async_chat's reads too)
``bytes_written``              bytes sent by ``dispatcher.send`` (async_chat's and
                               dispatcher_with_send's sends too)
``handler_seconds_histogram``  the iterations by ``handler_seconds`` time, as Prometheus
                               buckets: ``(upper bound in seconds, iterations at or
                               below it)`` pairs, cumulative, from 100 µs to 2.5 s, then
                               ``(inf, iterations)``
``accepted``                   connections ``dispatcher.accept()`` returned
``rejected``                   of those, the ones fastcore closed without handing them to
                               the program: a bad, truncated or late PROXY protocol header
                               (``fastcore.proxy``; a peer that left before sending a byte
                               is not counted)
``accept_pauses``              times a listener reached its ``fastcore.limit_connections``
                               limit and stopped accepting (connections wait in the
                               kernel's backlog meanwhile; none is refused)
``closed``                     connected dispatchers closed (``close()`` while ``connected``)
``timers_run``                 timer callbacks run
``tls_handshakes``             TLS handshakes completed (``fastcore.tls``)
``tls_handshake_failures``     TLS handshakes that failed, or that the peer left before
                               they completed
``dispatchers``                objects in the map (gauge)
``listening``                  of those, the accepting ones (gauge)
``connections_open``           of those, the connected ones (gauge)
============================== ===================================================
"""

import sys
import types

from fastcore._impl import core

__all__ = ["reset", "snapshot", "timer_ran"]

# A timer implementation in Python counts each callback it runs with this
# (the extension's timer code uses stats_timer_ran() from src/stats.pxi).
timer_ran = core.timer_ran


def snapshot(map=None, reset=False):
    """The counters and the map's gauges as a dict; ``reset=True`` zeroes the
    counters after reading them."""
    if map is None:
        from fastcore import asyncore

        map = asyncore.socket_map
    counters = core.stats_snapshot()
    if reset:
        core.stats_reset()
    listening = connected = 0
    for obj in list(map.values()):
        if getattr(obj, "accepting", False):
            listening += 1
        elif getattr(obj, "connected", False):
            connected += 1
    counters["dispatchers"] = len(map)
    counters["listening"] = listening
    counters["connections_open"] = connected
    return counters


def reset():
    """Every counter back to zero (the gauges are not counters)."""
    core.stats_reset()


class _CallableModule(types.ModuleType):
    def __call__(self, map=None, reset=False):
        """``fastcore.stats(map=None, reset=False)``: see ``snapshot``."""
        return snapshot(map, reset)


sys.modules[__name__].__class__ = _CallableModule
