"""fastcore's core in plain Python: the twin of the extension ``fastcore._core_c``
(same interface and behaviour, see docs/design.md), used when the extension is
not built or ``FASTCORE_NO_EXTENSIONS=1``.
"""

from fastcore._core_py.chat import (
    ChatBase,
    find_prefix_at_end,
    get_line_length_limit,
    limit_line_length,
)
from fastcore._core_py.dispatch import (
    _exception,
    bridge_fd,
    flush,
    loop,
    poll,
    poll2,
    read,
    readwrite,
    set_default_map_source,
    write,
)
from fastcore._core_py.dispatcher import (
    DispatcherBase,
    WithSendBase,
    claim_connection,
    get_connection_limit,
    get_idle_timeout,
    limit_connections,
    set_idle_timeout,
)
from fastcore._core_py.pollers import available_backends, default_backend
from fastcore._core_py.registry import _reconcile_count, release_map, set_change_hook
from fastcore._core_py.scheduler import (
    Timer,
    call_every,
    call_later,
    call_soon_threadsafe,
    next_timer_delay,
)
from fastcore._core_py.stats import (
    count_accepted,
    count_rejected,
    debug_enabled,
    set_debug,
    set_warning_sink,
    stats_reset,
    stats_snapshot,
    timer_ran,
)
from fastcore._core_py.tls import start_tls, stop_tls, tls_object, tls_state

# The facade's dispatcher class derives from this (the extension's may be a
# subclass of its DispatcherBase; here DispatcherBase hears of assignments itself).
DISPATCHER_BASE = DispatcherBase

__all__ = [
    "ChatBase",
    "DISPATCHER_BASE",
    "DispatcherBase",
    "Timer",
    "WithSendBase",
    "_exception",
    "_reconcile_count",
    "available_backends",
    "bridge_fd",
    "call_every",
    "call_later",
    "call_soon_threadsafe",
    "claim_connection",
    "count_accepted",
    "count_rejected",
    "debug_enabled",
    "default_backend",
    "find_prefix_at_end",
    "flush",
    "get_connection_limit",
    "get_idle_timeout",
    "get_line_length_limit",
    "limit_connections",
    "limit_line_length",
    "loop",
    "next_timer_delay",
    "poll",
    "poll2",
    "read",
    "readwrite",
    "release_map",
    "set_change_hook",
    "set_debug",
    "set_default_map_source",
    "set_idle_timeout",
    "set_warning_sink",
    "start_tls",
    "stats_reset",
    "stats_snapshot",
    "stop_tls",
    "timer_ran",
    "tls_object",
    "tls_state",
    "write",
]
