"""Registries: per map, the poller and what the kernel was last told per fd.

A registry keeps its poller's registrations between iterations and one entry
per fd: the object, its kind, and the mask given to the kernel (0: not
registered at all). The map stays a plain dict that anyone may change:
add_channel/del_channel tell the registry at once, other changes are found
by a reconcile pass that compares the map with the entries, by identity,
at every iteration that Python code other than the core's may have followed
(the extension compares only when the dict's version tag moved; plain Python
has no such tag). On CPython, an iteration of loop() that called none of the
program's code is followed by none when no other thread, trace, profile or
monitoring function, Python signal handler or garbage collection can run
either: the next iteration does not compare (docs/design.md, "Map changes
in the pure core").

Interest of the core's own dispatchers is recomputed only when they are
marked dirty (a property setter, a ProducerFifo turning empty or non-empty,
an event); any other object is asked readable()/writable() every iteration,
as 3.11 asks.
"""

import _signal
import _thread
import gc
import os
import sys
from errno import EBADF
from time import monotonic

from fastcore._common import (
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    POLLPRI,
    _reraised_exceptions,
    compact_traceback,
)
from fastcore._core_py import scheduler
from fastcore._core_py.pollers import default_backend, make_poller
from fastcore._core_py.stats import counts, loop_warning, state, trace_error

MAX_REGISTRIES = 64

# Entry kinds.
TRACKED = 0  # the core's interest formula, recomputed when marked dirty
RECOMPUTED = 1  # the core's formula, every iteration (foreign producer_fifo)
POLLED = 2  # readable()/writable()/accepting asked every iteration

_READ = POLLIN | POLLPRI
GONE = POLLHUP | POLLERR | POLLNVAL  # the fd's peer or the fd itself is gone

# Below this many entries comparing the map costs less than making sure no
# Python code but the core's can run.
SKIP_MIN_ENTRIES = 128

_registries = {}  # id(map) -> Registry, least recently used first
_dirty = []  # Registered objects whose interest must be recomputed
_iteration = 0
_change_hook = None  # fastcore.aio: told when registrations fall behind


def set_change_hook(hook):
    """hook() is called when interest, the map or the timers change outside
    the loop's own iterations (fastcore.aio then brings them up to date);
    None for none."""
    global _change_hook
    _change_hook = hook


def notify_change():
    if _change_hook is not None:
        _change_hook()


# -- iterations after which the map cannot have changed ------------------------

# Registry.watch: how the next quiet iteration finds map changes.
WATCH_UNKNOWN = 0  # compare, and ask only_core_code_runs() for the ones after
WATCH_SKIPPING = 1  # no comparison: nothing but the core's code can have run
WATCH_COMPARING = 2  # compare: other code may run (asked again after a busy one)

# The info dict of the newest collection's phases, where gc.callbacks has them:
# a new dict each time, so one held elsewhere is never the newest after another
# collection. Stored by a built-in method, not a Python function: a signal
# handler could run inside a Python callback, and an exception raised there
# (KeyboardInterrupt, a handler's SystemExit) is only printed by the collector.
_collection_info = {}


# _signal's own functions: signal's wrappers make enums of every answer.
_getsignal = getattr(_signal, "getsignal", None)
_SIGNALS = tuple(sorted(_signal.valid_signals())) if hasattr(_signal, "valid_signals") else ()

# Reference counting is what makes "the core dropped none of the program's
# objects" mean "ran none of their finalisers" between collections.
SKIPS_COMPARISONS = (
    sys.implementation.name == "cpython"
    and hasattr(gc, "callbacks")
    and hasattr(_thread, "_count")
    and _getsignal is not None
    and bool(_SIGNALS)
)
if SKIPS_COMPARISONS:
    gc.callbacks.append(_collection_info.__setitem__)


def only_core_code_runs():
    """True when no Python code can run in this process while the core's own
    runs: no thread but this one started by Python, no trace or profile
    function, no sys.monitoring tool, no signal handler written in Python.
    (A collection is the one thing left: seen through _collection_info.)"""
    if _thread._count() or sys.gettrace() is not None or sys.getprofile() is not None:
        return False
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is not None:
        for tool in range(6):
            if monitoring.get_tool(tool) is not None:
                return False
    for signum in _SIGNALS:
        # SIG_DFL and SIG_IGN are the ints 0 and 1 here.
        handler = _getsignal(signum)
        if not (handler is None or type(handler) is int or handler is _signal.default_int_handler):
            return False
    return True
_reconciles = 0


def _reconcile_count():
    """For the tests: how many times a registry compared its map with its
    entries (an unchanged map needs none)."""
    return _reconciles


def begin_iteration():
    global _iteration
    _iteration += 1
    return _iteration


def current_iteration():
    return _iteration


class Registered:
    """Base of DispatcherBase: the state the registries keep on a dispatcher.

    Subclasses name their own ``readable``/``writable`` in ``_fc_readable``/
    ``_fc_writable`` (an object whose class replaced either is polled), give
    their write interest from their own state in ``_fc_write_interest()``,
    and define ``_close_once()``.
    """

    _fc_entries = ()  # the registry entries this object is in
    _fc_dirty = False
    _fc_interest_stable = True  # False: recompute the interest every iteration
    _fc_close_handled = False
    _fc_close_iteration = 0
    _fc_readable = None
    _fc_writable = None
    _fc_new_socket = False  # socket assigned since the last registration
    _fc_accept_paused = False  # a listener at its connection limit: not read

    def __getstate__(self):
        # What copy and pickle take of a 3.11 dispatcher: its instance dict,
        # without the loop's bookkeeping of this object (_fc_ names).
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_fc_")}
        return state or None

    def _mark_dirty(self):
        if not self._fc_dirty and self._fc_entries:
            self._fc_dirty = True
            _dirty.append(self)
            if _change_hook is not None:
                _change_hook()

    # The loop must hear of readable/writable given to (or taken from) an
    # instance, and of a new socket, which may have the old one's fd number
    # and so must be registered with the kernel again.
    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in _WATCHED_ATTRIBUTES:
            if name == "socket":
                object.__setattr__(self, "_fc_new_socket", True)
            self._mark_dirty()

    def __delattr__(self, name):
        object.__delattr__(self, name)
        if name in _WATCHED_ATTRIBUTES:
            self._mark_dirty()


# connected, accepting, out_buffer and producer_fifo: the interest follows them.
_WATCHED_ATTRIBUTES = frozenset(
    {"readable", "writable", "socket", "connected", "accepting", "out_buffer", "producer_fifo"}
)
_MISSING = object()


def _class_state(cls):
    """What a class gives its tracked dispatchers: readable, writable, and the
    values of the state the interest follows (if the class has them)."""
    return (
        cls.readable,
        cls.writable,
        getattr(cls, "connected", _MISSING),
        getattr(cls, "accepting", _MISSING),
        getattr(cls, "out_buffer", _MISSING),
    )


def process_dirty():
    """Recompute the interest of every dirty object, in whatever registry."""
    while _dirty:
        obj = _dirty.pop()
        obj._fc_dirty = False
        if obj._fc_new_socket:
            obj._fc_new_socket = False
            for entry in tuple(obj._fc_entries):
                if entry.registry is not None:
                    entry.registry._register_again(entry)
        for entry in tuple(obj._fc_entries):
            if entry.registry is not None:
                entry.registry._refresh(entry)


# -- calling into dispatchers -----------------------------------------------


def close_once(obj):
    if isinstance(obj, Registered):
        obj._close_once()
    else:
        obj.handle_close()


def call_handle_error(obj, fd, map):
    """obj.handle_error() for the exception being handled; if that fails too,
    report it and close obj by force: the loop goes on."""
    counts.error += 1
    if state.debug:
        trace_error(obj)
    try:
        obj.handle_error()
    except _reraised_exceptions:
        raise
    except BaseException:
        _force_close(obj, fd, map)


def close_safely(obj, fd, map):
    try:
        close_once(obj)
    except _reraised_exceptions:
        raise
    except BaseException:
        call_handle_error(obj, fd, map)


def _force_close(obj, fd, map):
    _report_failure(obj, "handle_error")
    try:
        obj.close()
    except _reraised_exceptions:
        raise
    except BaseException:
        _report_failure(obj, "close")
        # Not even close() works: at least stop polling it.
        if map.get(fd) is obj:
            del map[fd]
            note_removed(map, fd, obj)


def _report_failure(obj, method):
    nil, t, v, tbinfo = compact_traceback()
    try:
        label = repr(obj)
    except Exception:
        label = "<%s object at %#x>" % (type(obj).__name__, id(obj))
    loop_warning(
        obj,
        "error: %s() of %s failed, closing it by force (%s:%s %s)" % (method, label, t, v, tbinfo),
    )


# -- the registries ----------------------------------------------------------


def registry_of(map):
    """The map's registry, or None (never creates one)."""
    return _registries.get(id(map))


def registry_for(map, backend):
    """The map's registry, created or moved to ``backend`` (None: keep)."""
    key = id(map)
    registry = _registries.pop(key, None)
    if registry is None:
        registry = Registry(map, backend or default_backend())
        if len(_registries) >= MAX_REGISTRIES:
            _registries.pop(next(iter(_registries))).close()
    elif backend is not None and backend != registry.backend:
        registry.rebuild(backend)
    _registries[key] = registry
    return registry


def release_map(map):
    """Forget the map's registry and close its poller."""
    registry = _registries.pop(id(map), None)
    if registry is not None:
        registry.close()
        # Dirty objects no registry holds any more: no iteration may come to
        # process them, and the list must not keep them alive.
        keep = []
        for obj in _dirty:
            if obj._fc_entries:
                keep.append(obj)
            else:
                obj._fc_dirty = False
        _dirty[:] = keep


def note_added(map, fd, obj):
    registry = _registries.get(id(map))
    if registry is not None:
        notify_change()
        registry.channel_added(fd, obj)


def note_removed(map, fd, obj):
    registry = _registries.get(id(map))
    if registry is not None:
        notify_change()
        registry.channel_removed(fd, obj)


def _classify(obj):
    if not isinstance(obj, Registered):
        return POLLED
    cls = type(obj)
    if cls.readable is not cls._fc_readable or cls.writable is not cls._fc_writable:
        return POLLED
    own = obj.__dict__
    if "readable" in own or "writable" in own:
        return POLLED
    return TRACKED if obj._fc_interest_stable else RECOMPUTED


class _Entry:
    __slots__ = ("registry", "fd", "obj", "kind", "mask", "broken")

    def __init__(self, registry, fd, obj, kind):
        self.registry = registry  # None once removed
        self.fd = fd
        self.obj = obj
        self.kind = kind
        self.mask = 0  # as the kernel knows it
        self.broken = False  # closed behind the loop's back: not polled


class Registry:
    def __init__(self, map, backend):
        self.map = map  # held: keeps id(map) from being reused
        self.backend = backend
        self.poller = make_poller(backend)
        self.pid = os.getpid()
        self.waker = self._watch_waker()
        self.select_style = True
        self.entries = {}  # fd -> _Entry
        self.classes = {}  # class of TRACKED entries -> its _class_state()
        self.volatile = {}  # fd -> _Entry not TRACKED, in map order
        self.unregistrations = 0  # a wait that saw one may report fds just dropped
        self.watch = WATCH_UNKNOWN
        # The newest collection at the last prepare after a quiet iteration
        self.collection = _collection_info.get("start")
        self.woken = False  # the last wait returned some event (the waker's too)

    def close(self):
        for entry in list(self.entries.values()):
            self._detach(entry)
        self.entries.clear()
        self.volatile.clear()
        self.poller.close()

    def rebuild(self, backend):
        """A new poller (another backend, a fork, a stale registration); every
        entry is registered again at the next prepare."""
        poller = make_poller(backend)
        self.poller.close()
        self.poller = poller
        self.backend = backend
        self.pid = os.getpid()
        self.waker = self._watch_waker()
        for entry in self.entries.values():
            entry.mask = 0
            if entry.kind == TRACKED:
                entry.obj._mark_dirty()

    def _watch_waker(self):
        # call_soon_threadsafe() from another thread writes to it.
        fd = scheduler.waker_fd()
        self.poller.register(fd, POLLIN)
        return fd

    def _live_poller(self):
        # A forked child shares the parent's epoll/kqueue: never touch it.
        if self.pid != os.getpid():
            self.rebuild(self.backend)
        return self.poller

    # -- keeping up with the map --------------------------------------------

    def channel_added(self, fd, obj):
        entry = self.entries.get(fd)
        if entry is not None:
            if entry.obj is obj:
                # add_channel again: poll it anew (its close is no longer handled).
                entry.broken = False
                obj._mark_dirty()
                return
            self._drop_entry(entry)
        self._add_entry(fd, obj)

    def channel_removed(self, fd, obj):
        entry = self.entries.get(fd)
        if entry is not None and entry.obj is obj:
            self._drop_entry(entry)

    def _in_step(self):
        entries = self.entries
        map = self.map
        if len(entries) != len(map):
            return False
        try:
            for fd, obj in map.items():
                if entries[fd].obj is not obj:
                    return False
        except (KeyError, RuntimeError):  # RuntimeError: changed by a thread
            return False
        return True

    def _reconcile(self):
        global _reconciles
        _reconciles += 1
        entries = self.entries
        items = list(self.map.items())
        for fd, obj in items:
            entry = entries.get(fd)
            if entry is None or entry.obj is not obj:
                if entry is not None:
                    self._drop_entry(entry)
                self._add_entry(fd, obj)
        if len(entries) != len(items):
            present = dict(items)
            for fd, entry in list(entries.items()):
                if fd not in present:
                    self._drop_entry(entry)
        # Polled objects are asked in map order, as 3.11 asks them.
        volatile = {}
        for fd, _ in items:
            entry = entries.get(fd)  # None: dropped meanwhile by another thread
            if entry is not None and entry.kind != TRACKED:
                volatile[fd] = entry
        self.volatile = volatile

    def _add_entry(self, fd, obj):
        entry = _Entry(self, fd, obj, _classify(obj))
        self.entries[fd] = entry
        if entry.kind != TRACKED:
            self.volatile[fd] = entry
        if isinstance(obj, Registered):
            if obj._fc_entries:
                obj._fc_entries.append(entry)
            else:
                obj._fc_entries = [entry]
            obj._mark_dirty()

    def _drop_entry(self, entry):
        fd = entry.fd
        if entry.mask:
            self._unregister(fd)
        if self.entries.get(fd) is entry:
            del self.entries[fd]
        if self.volatile.get(fd) is entry:
            del self.volatile[fd]
        self._detach(entry)

    def _detach(self, entry):
        entry.registry = None
        entry.mask = 0
        if isinstance(entry.obj, Registered):
            try:
                entry.obj._fc_entries.remove(entry)
            except ValueError:  # detached already (by another thread)
                pass

    def _unregister(self, fd):
        self._live_poller().unregister(fd)
        self.unregistrations += 1

    # -- interest ------------------------------------------------------------

    def _register_again(self, entry):
        """The object has a new socket, perhaps under the old fd number: what
        the kernel knows of the fd is stale."""
        if entry.mask:
            self._unregister(entry.fd)
            entry.mask = 0
        entry.broken = False

    def _check_classes(self):
        """Dispatchers whose class (or a base) had readable/writable or the
        class value of connected/accepting/out_buffer replaced since they
        were tracked are looked at again."""
        changed = []
        for cls, seen in self.classes.items():
            now = _class_state(cls)
            if any(a is not b for a, b in zip(now, seen)):
                changed.append(cls)
        if changed:
            for cls in changed:
                del self.classes[cls]
            for entry in self.entries.values():
                if type(entry.obj) in changed:
                    entry.obj._mark_dirty()

    def _refresh(self, entry):
        """A dirty object's entry: its kind may have changed, and a tracked
        entry's interest is recomputed."""
        kind = _classify(entry.obj)
        if kind != entry.kind:
            entry.kind = kind
            if kind == TRACKED:
                self.volatile.pop(entry.fd, None)
            else:
                self.volatile[entry.fd] = entry
        if kind == TRACKED:
            cls = type(entry.obj)
            if cls not in self.classes:
                self.classes[cls] = _class_state(cls)
            if not entry.broken:
                self._update(entry)

    def _update(self, entry):
        obj = entry.obj
        try:
            if entry.kind == POLLED:
                readable = obj.readable()
                writable = obj.writable()
                if writable and obj.accepting:
                    writable = False
            else:
                readable = True
                writable = obj._fc_write_interest()
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(obj, entry.fd, self.map)
            return
        tls = getattr(obj, "_fc_tls", None)
        if tls is not None:
            # The handshake, an unwrap or a write waiting for the peer read;
            # ciphertext waiting for the socket writes.
            readable = tls.read_interest(readable)
            writable = tls.write_interest(writable)
        if isinstance(obj, Registered) and (obj._fc_close_handled or obj._fc_accept_paused):
            # Its close was handled but it stays in the map: reading it any
            # more would only report the same EOF forever. Or a listener at
            # its connection limit: the kernel's backlog holds the rest.
            readable = False
        mask = _READ if readable else 0
        if writable:
            mask |= POLLOUT
            if self.select_style:
                # select() puts every fd with interest in the exceptional set.
                mask |= POLLPRI
        self._set_mask(entry, mask)

    def _set_mask(self, entry, mask):
        if entry.registry is not self or entry.broken:
            return
        poller = self._live_poller()
        old = entry.mask
        if mask == old:
            return
        fd = entry.fd
        try:
            if not mask:
                self._unregister(fd)
            elif not old:
                try:
                    poller.register(fd, mask)
                except FileExistsError:
                    poller.modify(fd, mask)
            else:
                try:
                    poller.modify(fd, mask)
                except FileNotFoundError:
                    # The kernel forgot it: the fd was closed and opened again.
                    poller.register(fd, mask)
        except OSError as err:
            if err.errno != EBADF:
                raise
            # Closed behind the loop's back but still in the map: its close
            # is handled once, and it is left out of polling.
            entry.mask = 0
            entry.broken = True
            if self.map.get(fd) is entry.obj:
                close_safely(entry.obj, fd, self.map)
            return
        entry.mask = mask

    # -- one iteration -------------------------------------------------------

    def prepare(self, select_style, quiet_before=False):
        """Bring the kernel's registrations up to date with the map.
        quiet_before: the last iteration of this loop() call ran none of the
        program's code (iterated() said so). True if this call ran none."""
        self._live_poller()
        if select_style != self.select_style:
            # The exceptional-set rule for write-only interest changes.
            self.select_style = select_style
            for entry in self.entries.values():
                if entry.kind == TRACKED:
                    entry.obj._mark_dirty()
        if not quiet_before:
            self.watch = WATCH_UNKNOWN
            if not self._in_step():
                self._reconcile()
        elif not self._unchanged() and not self._in_step():
            self._reconcile()
        if self.classes:
            self._check_classes()
        quiet = not _dirty and not self.volatile
        process_dirty()
        if self.volatile:
            for entry in list(self.volatile.values()):
                if entry.registry is self and not entry.broken:
                    self._update(entry)
            # readable()/writable() may have changed other dispatchers.
            process_dirty()
        return quiet

    def _unchanged(self):
        """After a quiet iteration: True if the map is known to be as the
        last comparison found it (only_core_code_runs() held at that
        comparison, the iterations since ran none of the program's code and
        no collection began)."""
        collection = _collection_info.get("start")
        collected = collection is not self.collection
        self.collection = collection
        if self.watch == WATCH_SKIPPING and not collected:
            return True
        if self.watch == WATCH_UNKNOWN or collected:
            # Asked once a quiet stretch begins (and after a collection,
            # whose finalisers are the program's code), for the iterations
            # after this one: this one compares, as a thread that changed the
            # map may have ended since the last comparison.
            skipping = (
                SKIPS_COMPARISONS
                and len(self.entries) >= SKIP_MIN_ENTRIES
                and only_core_code_runs()
            )
            self.watch = WATCH_SKIPPING if skipping else WATCH_COMPARING
        return False

    def _poll_past_signals(self, timeout):
        """poller.poll(timeout), the waker drained. When only a signal's byte
        woke it, the wait goes on for the rest of the timeout once the handler
        ran (at the next instruction), as select's does after EINTR (PEP 475)."""
        deadline = None if not timeout else monotonic() + timeout
        while True:
            events = self.poller.poll(timeout)
            if events:
                self.woken = True
            for fd, _ in events:
                if fd == self.waker:
                    break
            else:
                return events
            if not scheduler.drain_waker() or len(events) > 1 or timeout == 0:
                return events
            if deadline is not None:
                timeout = deadline - monotonic()
                if timeout <= 0:
                    return []
            # The handler may have scheduled something.
            timeout = scheduler.wait_timeout(timeout)
            if timeout == 0:
                return []

    def wait(self, timeout, iteration):
        """Wait for events: a list of (fd, obj, flags, mask the kernel had)."""
        ready = []
        stale = False
        entries = self.entries
        unregistrations = self.unregistrations
        self.woken = False
        for fd, flags in self._poll_past_signals(timeout):
            if fd == self.waker:
                continue
            entry = entries.get(fd)
            if entry is None or not entry.mask:
                # Registered in the kernel but not here: a dup of a closed
                # socket keeps a stale registration alive; unless the fd was
                # dropped during the wait (a signal handler, another thread).
                stale = unregistrations == self.unregistrations
                continue
            obj = entry.obj
            if (
                flags & GONE
                and isinstance(obj, Registered)
                and obj._fc_close_handled
                and obj._fc_close_iteration != iteration
            ):
                # Closed in an earlier iteration yet left in the map: stop
                # polling it rather than spin on its HUP.
                self._set_mask(entry, 0)
                entry.broken = True
                continue
            ready.append((fd, obj, flags, entry.mask))
        if stale:
            self.rebuild(self.backend)
        return ready
