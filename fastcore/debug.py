"""Debug mode: ``FASTCORE_DEBUG=1`` in the environment (read when fastcore is
imported), ``loop(debug=True)`` or ``fastcore.debug.enable()``.

While it is on, every handler call the loop makes is timed and recorded:

- each dispatcher keeps its last ``size`` events (default 64) in a ring
  buffer; ``fastcore.trace(dispatcher)`` returns them, oldest first, as
  ``TraceEvent(kind, time, duration, read, written)``: the kind of event
  served ('read', 'write', 'expt', or for poll()-style dispatch every
  condition reported together, e.g. 'read+hangup'), when the handler
  started (``time.monotonic()`` seconds), how long it took, and the bytes
  the core's recv/send moved during it;
- when the loop calls a dispatcher's ``handle_error``, its trace is logged;
- a handler (or a timer) slower than ``slow`` seconds (default 0.1) is
  logged with its dispatcher;
- at interpreter exit, dispatchers still open are logged: those in the
  default map and in every map one of whose dispatchers had an event while
  debug mode was on.

Messages go to ``fastcore.log.current_logger()`` (the 'fastcore' logger, or
the one given to ``use_logging``) at WARNING level, so they reach stderr
even when logging is not configured. Off, debug mode costs one test of a C
global per handler call.
"""

import atexit
from collections import deque, namedtuple

from fastcore._common import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI
from fastcore._impl import core
from fastcore._weak import WeakKeyTable

__all__ = ["TraceEvent", "disable", "enable", "enabled", "open_dispatchers", "trace"]

TraceEvent = namedtuple("TraceEvent", "kind time duration read written")

DEFAULT_SLOW = 0.1
DEFAULT_SIZE = 64

_KINDS = (
    (POLLIN, "read"),
    (POLLOUT, "write"),
    (POLLPRI, "expt"),
    (POLLHUP, "hangup"),
    (POLLERR, "error"),
    (POLLNVAL, "invalid"),
)

_kind_names = {}  # flags -> kind, as met


def _kind(flags):
    name = _kind_names.get(flags)
    if name is None:
        name = _kind_names[flags] = "+".join(n for bit, n in _KINDS if flags & bit) or "none"
    return name


def _fd_of(obj):
    try:
        return vars(obj).get("_fileno")
    except TypeError:
        return None


class Recorder:
    """What the core hands each handler call to while debug mode is on."""

    def __init__(self, slow, size):
        self.slow = slow
        self.size = size
        self.traces = WeakKeyTable()

    def handled(self, obj, flags, started, duration, read, written):
        try:
            ring = self.traces.get(obj)
            if ring is None:
                ring = self.traces[obj] = deque(maxlen=self.size)
        except TypeError:  # neither hashable nor weakly referable: not traced
            ring = None
        event = TraceEvent(_kind(flags), started, duration, read, written)
        if ring is not None:
            ring.append(event)
        if duration > self.slow:
            _warn(
                "slow handler: %s event of %s (fd %s) took %.1f ms",
                event.kind,
                _label(obj),
                _fd_of(obj),
                duration * 1e3,
            )

    def timer_done(self, callback, duration):
        if duration > self.slow:
            _warn("slow timer: %s took %.1f ms", _label(callback), duration * 1e3)

    def erred(self, obj):
        events = trace(obj)
        _warn(
            "%s (fd %s) is handling an error; its %d events before this one"
            " (kind, ms ago, ms, read, written):%s",
            _label(obj),
            _fd_of(obj),
            len(events),
            _format(events),
        )


def _format(events):
    from time import monotonic

    now = monotonic()
    return "".join(
        "\n  %s %.3f %.3f %d %d"
        % (e.kind, (now - e.time) * 1e3, e.duration * 1e3, e.read, e.written)
        for e in events
    )


def _label(obj):
    try:
        return repr(obj)
    except Exception:
        return "<%s object at %#x>" % (type(obj).__name__, id(obj))


def _warn(message, *args):
    from fastcore.log import current_logger

    current_logger().warning(message, *args)


_recorder = None
_atexit_registered = False


def enable(slow=DEFAULT_SLOW, size=DEFAULT_SIZE):
    """Turn debug mode on: handlers slower than ``slow`` seconds are logged,
    each dispatcher keeps its last ``size`` events. Traces kept so far are
    kept (their length changes only for new dispatchers)."""
    global _recorder, _atexit_registered
    if not slow > 0:
        raise ValueError("slow must be a positive number of seconds, not %r" % (slow,))
    if not isinstance(size, int) or size < 1:
        raise ValueError("size must be a positive int, not %r" % (size,))
    recorder = Recorder(slow, size)
    if _recorder is not None:
        recorder.traces = _recorder.traces
    _recorder = recorder
    core.set_debug(recorder)
    if not _atexit_registered:
        atexit.register(_report_open)
        _atexit_registered = True


def disable():
    """Turn debug mode off (the traces recorded stay readable)."""
    core.set_debug(None)


def enabled():
    """True while debug mode is on."""
    return core.debug_enabled()


def trace(dispatcher):
    """The dispatcher's last events, oldest first (a list of TraceEvent);
    empty when debug mode never saw it."""
    if _recorder is None:
        return []
    try:
        ring = _recorder.traces.get(dispatcher)
    except TypeError:
        return []
    return list(ring) if ring is not None else []


def open_dispatchers():
    """(map, fd, object) for every object still in a map debug mode knows of."""
    from fastcore import asyncore

    maps = {id(asyncore.socket_map): asyncore.socket_map}
    if _recorder is not None:
        for obj in list(_recorder.traces.keys()):
            map = getattr(obj, "_map", None)
            if isinstance(map, dict):
                maps[id(map)] = map
    return [(map, fd, obj) for map in maps.values() for fd, obj in list(map.items())]


def _report_open():
    if not enabled():
        return
    for _, fd, obj in open_dispatchers():
        _warn("dispatcher left open at exit: %s (fd %s)", _label(obj), fd)
