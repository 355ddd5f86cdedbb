"""Names shared by both cores and the facades.

Both implementations of the core (the extension ``fastcore._core_c`` and the
pure-Python ``fastcore._core_py``) import from here, so an exception raised by
one is the same class as the one the facades export.
"""

import os
import select
import sys
from collections import deque
from errno import (
    EBADF,
    ECONNABORTED,
    ECONNRESET,
    ENOTCONN,
    EPIPE,
    ESHUTDOWN,
    errorcode,
)

_DISCONNECTED = frozenset({ECONNRESET, ENOTCONN, ESHUTDOWN, ECONNABORTED, EPIPE, EBADF})


class ExitNow(Exception):
    pass


_reraised_exceptions = (ExitNow, KeyboardInterrupt, SystemExit)

# poll(2) event bits; readwrite() takes these, whatever the backend.
POLLIN = getattr(select, "POLLIN", 0x001)
POLLPRI = getattr(select, "POLLPRI", 0x002)
POLLOUT = getattr(select, "POLLOUT", 0x004)
POLLERR = getattr(select, "POLLERR", 0x008)
POLLHUP = getattr(select, "POLLHUP", 0x010)
POLLNVAL = getattr(select, "POLLNVAL", 0x020)

BACKENDS = ("epoll", "kqueue", "poll", "select")


def _strerror(err):
    try:
        return os.strerror(err)
    except (ValueError, OverflowError, NameError):
        if err in errorcode:
            return errorcode[err]
        return "Unknown error %s" % err


def compact_traceback():
    t, v, tb = sys.exc_info()
    if not tb:
        raise AssertionError("traceback does not exist")
    tbinfo = []
    while tb:
        tbinfo.append(
            (tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name, str(tb.tb_lineno))
        )
        tb = tb.tb_next
    del tb
    file, function, line = tbinfo[-1]
    info = " ".join(["[%s|%s|%s]" % x for x in tbinfo])
    return (file, function, line), t, v, info


def check_backend(name):
    """Validate a ``backend=`` argument; return None for 'auto'/None."""
    if name is None or name == "auto":
        return None
    if name not in BACKENDS:
        raise ValueError(
            "unknown backend %r: expected 'auto', %s" % (name, ", ".join(repr(b) for b in BACKENDS))
        )
    return name


class ProducerFifo(deque):
    """async_chat's ``producer_fifo``: a deque that tells its owner when it
    turns empty or non-empty, so the loop never has to ask ``writable()``.

    The core's own pushes and sends bypass these methods (calling ``deque``'s
    directly) and mark the owner themselves; these overrides exist for user
    code that edits ``producer_fifo`` by hand.
    """

    __slots__ = ("_owner_ref",)

    def __init__(self, iterable=(), maxlen=None, owner_ref=None):
        deque.__init__(self, iterable, maxlen)
        self._owner_ref = owner_ref

    def __reduce__(self):
        return (deque, (list(self),))

    def _changed(self, was_empty):
        if was_empty != (not self):
            ref = self._owner_ref
            owner = ref() if ref is not None else None
            if owner is not None:
                owner._mark_dirty()

    def append(self, x):
        was_empty = not self
        deque.append(self, x)
        self._changed(was_empty)

    def appendleft(self, x):
        was_empty = not self
        deque.appendleft(self, x)
        self._changed(was_empty)

    def extend(self, iterable):
        was_empty = not self
        deque.extend(self, iterable)
        self._changed(was_empty)

    def extendleft(self, iterable):
        was_empty = not self
        deque.extendleft(self, iterable)
        self._changed(was_empty)

    def insert(self, i, x):
        was_empty = not self
        deque.insert(self, i, x)
        self._changed(was_empty)

    def __iadd__(self, other):
        was_empty = not self
        deque.__iadd__(self, other)
        self._changed(was_empty)
        return self

    def pop(self):
        x = deque.pop(self)
        self._changed(False)
        return x

    def popleft(self):
        x = deque.popleft(self)
        self._changed(False)
        return x

    def remove(self, value):
        deque.remove(self, value)
        self._changed(False)

    def clear(self):
        was_empty = not self
        deque.clear(self)
        self._changed(was_empty)

    def __imul__(self, n):
        was_empty = not self
        deque.__imul__(self, n)
        self._changed(was_empty)
        return self

    def __delitem__(self, i):
        deque.__delitem__(self, i)
        self._changed(False)


# Attributes that are properties (the core's C fields: see docs/design.md).
# A subclass that sets one of them as a plain class attribute has it moved
# into ``cls._fc_defaults`` so that it does not hide the property.
FIELD_NAMES = frozenset({"ac_in_buffer"})


def check_limit_value(value, what, least):
    """A limit (limit_connections, limit_line_length): None, or an int of at
    least ``least``."""
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("%s must be None or an int, not %r" % (what, value))
        if value < least:
            raise ValueError("%s must be %d or more, not %r" % (what, least, value))
    return value


def check_idle_timeout(value):
    """An idle timeout (set_idle_timeout): None, or a number of seconds above 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("an idle timeout must be None or a number of seconds, not %r" % (value,))
    value = float(value)
    if not value > 0:  # NaN too
        raise ValueError("an idle timeout must be more than 0 seconds, not %r" % (value,))
    return value
