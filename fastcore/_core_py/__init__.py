"""fastcore's core in plain Python: the twin of the extension ``fastcore._core_c``
(same interface and behaviour, see docs/design.md), used when the extension is
not built or ``FASTCORE_NO_EXTENSIONS=1``.
"""

from fastcore._core_py.chat import ChatBase, find_prefix_at_end
from fastcore._core_py.dispatch import (
    _exception,
    loop,
    poll,
    poll2,
    read,
    readwrite,
    set_default_map_source,
    write,
)
from fastcore._core_py.dispatcher import DispatcherBase, WithSendBase
from fastcore._core_py.pollers import available_backends, default_backend
from fastcore._core_py.registry import release_map
from fastcore._core_py.tls import start_tls, stop_tls, tls_object, tls_state

__all__ = [
    "ChatBase",
    "DispatcherBase",
    "WithSendBase",
    "_exception",
    "available_backends",
    "default_backend",
    "find_prefix_at_end",
    "loop",
    "poll",
    "poll2",
    "read",
    "readwrite",
    "release_map",
    "set_default_map_source",
    "start_tls",
    "stop_tls",
    "tls_object",
    "tls_state",
    "write",
]
