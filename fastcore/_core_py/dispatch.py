"""One iteration of the loop: prepare the map's registry, wait, dispatch.

Events are snapshot as (fd, obj, flags, mask) before any handler runs.
Before each handler call the object must still own its fd in the map (an fd
closed and reused during the iteration belongs to somebody else) and must
not have had its close handled in this iteration.
"""

import threading
from bisect import bisect_left
from time import monotonic
from types import SimpleNamespace

from fastcore import _signal_wakeup as signal_wakeup
from fastcore._common import (
    _DISCONNECTED,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    POLLPRI,
    _reraised_exceptions,
    check_backend,
)
from fastcore._core_py import scheduler, stats
from fastcore._core_py.chat import begin_event, events
from fastcore._core_py.dispatcher import clear_claims
from fastcore._core_py.pollers import default_backend
from fastcore._core_py.registry import (
    GONE,
    Registered,
    begin_iteration,
    call_handle_error,
    close_once,
    close_safely,
    registry_for,
    registry_of,
    release_map,
)
from fastcore._core_py.stats import HANDLER_BOUNDS, counts
from fastcore._core_py.tls import add_ready, read_handler, take_ready, write_handler

_MAX_TIMEOUT = 2147483.0  # seconds: the longest wait poll() and epoll take

# Where map=None finds its map (the facade registers its module): read at every call.
_map_source = SimpleNamespace(socket_map={})


def set_default_map_source(namespace):
    """map=None means ``namespace.socket_map``, read at call time."""
    global _map_source
    _map_source = namespace


def _resolve(map):
    return _map_source.socket_map if map is None else map


# -- the helpers 3.11 exports (unchanged for direct calls) ------------------


def read(obj):
    try:
        obj.handle_read_event()
    except _reraised_exceptions:
        raise
    except BaseException:
        obj.handle_error()


def write(obj):
    try:
        obj.handle_write_event()
    except _reraised_exceptions:
        raise
    except BaseException:
        obj.handle_error()


def _exception(obj):
    try:
        obj.handle_expt_event()
    except _reraised_exceptions:
        raise
    except BaseException:
        obj.handle_error()


def readwrite(obj, flags):
    try:
        if flags & POLLIN:
            obj.handle_read_event()
        if flags & POLLOUT:
            obj.handle_write_event()
        if flags & POLLPRI:
            obj.handle_expt_event()
        if flags & GONE:
            obj.handle_close()
    except OSError as e:
        if e.errno not in _DISCONNECTED:
            obj.handle_error()
        else:
            obj.handle_close()
    except _reraised_exceptions:
        raise
    except BaseException:
        obj.handle_error()


# -- the loop ----------------------------------------------------------------


def bridge_fd(map=None, backend="auto"):
    """The fd of the map's poller, readable whenever one of the map's fds is
    ready: an asyncio loop watches it for fastcore.aio (epoll, kqueue)."""
    registry = registry_for(_resolve(map), check_backend(backend) or default_backend())
    fileno = getattr(registry._live_poller(), "fileno", None)
    if fileno is None:
        raise ValueError(
            "running dispatchers on asyncio needs the epoll or kqueue backend, not %r"
            % registry.backend
        )
    return fileno()


def flush(map=None, use_poll=False):
    """Bring the kernel's registrations up to date with the map, as an
    iteration does before it waits. True if some fd is always ready (a
    regular file), which the poller's fd will not show."""
    registry = registry_of(_resolve(map))
    if registry is None:
        return False
    registry.prepare(not use_poll)
    return bool(getattr(registry.poller, "_always_ready", None))


def poll(timeout=0.0, map=None, backend=None):
    """One iteration, select()-style dispatch: every read, every write, every
    exceptional event."""
    _iterate_once(timeout, _resolve(map), check_backend(backend), True)


def poll2(timeout=0.0, map=None, backend=None):
    """One iteration, poll()-style dispatch: each fd's events together."""
    _iterate_once(timeout, _resolve(map), check_backend(backend), False)


def _iterate_once(timeout, map, backend, select_style):
    may_block = not (timeout == 0)  # None blocks; a bad value fails later, as before
    outermost = may_block and signal_wakeup.enter()
    try:
        _iterate(timeout, map, backend, select_style, may_block, False)
    finally:
        if outermost:
            signal_wakeup.leave()


def loop(timeout=30.0, use_poll=False, map=None, count=None, backend="auto", debug=False):
    if debug:
        stats.ensure_debug()
    map = _resolve(map)
    backend = check_backend(backend) or default_backend()
    select_style = not use_poll
    may_block = not (timeout == 0)
    outermost = may_block and signal_wakeup.enter()
    # Timers and handed-over callbacks keep the loop going too.
    pending = scheduler.pending
    quiet = False  # the last iteration ran none of the program's code
    try:
        if count is None:
            while map or pending():
                quiet = _iterate(timeout, map, backend, select_style, may_block, quiet)
        else:
            while (map or pending()) and count > 0:
                quiet = _iterate(timeout, map, backend, select_style, may_block, quiet)
                count = count - 1
    finally:
        if outermost:
            signal_wakeup.leave()
    if not map:
        release_map(map)


def _iterate(timeout, map, backend, select_style, may_block, quiet_before):
    """One iteration; True if it ran none of the program's code (no handler,
    timer, callback, readable()/writable() or signal handler), so that the
    map is as this iteration found it, unless other code ran meanwhile
    (Registry.prepare)."""
    if may_block:
        # Pending signal handlers run now (the interpreter runs them at the
        # next instruction); a signal from here on writes the waker.
        signal_wakeup.before_blocking_wait(scheduler.waker_write_fd)
    if not map and not scheduler.pending():
        return False
    if timeout is not None:
        timeout = min(max(timeout, 0.0), _MAX_TIMEOUT)
    registry = registry_for(map, backend)
    iteration = begin_iteration()
    quiet = registry.prepare(select_style, quiet_before)
    # Plaintext a TLS layer holds is read without waiting for the socket.
    tls_ready = take_ready(registry)
    wait_started = monotonic()
    ready = registry.wait(0.0 if tls_ready else scheduler.wait_timeout(timeout), iteration)
    wait_ended = monotonic()
    if tls_ready:
        ready = add_ready(ready, tls_ready)
    if ready:
        # Idle timeouts: every event is activity.
        now = scheduler.now_if_timers()
        if select_style:
            _dispatch_select(ready, map, iteration, now)
        else:
            _dispatch_poll(ready, map, iteration, now)
    ran = scheduler.run_due()
    clear_claims()
    # Inline rather than a call: this runs every iteration.
    handled = monotonic() - wait_ended
    counts.iterations += 1
    counts.poll_seconds += wait_ended - wait_started
    counts.handler_seconds += handled
    # The first bucket whose bound it does not exceed (the last: above all).
    counts.handler_buckets[bisect_left(HANDLER_BOUNDS, handled)] += 1
    return quiet and not ready and not registry.woken and not ran


def end_event():
    """The end of an event's handlers: the pushes this thread deferred are sent
    (what a flush's handlers defer in turn too)."""
    me = threading.get_ident()
    events.serial = 0
    sent = True
    while sent and events.deferring:
        sent = False
        batch = events.deferring
        events.deferring = []
        for i, obj in enumerate(batch):
            if obj._fc_deferred_thread != me:
                events.deferring.append(obj)  # another loop's thread sends it
                continue
            sent = True
            try:
                obj._fc_flush_deferred()
            except _reraised_exceptions:
                events.deferring.extend(batch[i + 1 :])
                raise
            except BaseException:
                call_handle_error(obj, obj._fileno, obj._map)


def _stamp(obj, now):
    timer = obj._fc_idle_timer
    if timer is not None:
        timer._activity = now


def _alive(map, fd, obj, iteration):
    if map.get(fd) is not obj:
        return False
    return not (
        isinstance(obj, Registered)
        and obj._fc_close_handled
        and obj._fc_close_iteration == iteration
    )


def _run(handler, obj, fd, map, flags, now):
    if now and isinstance(obj, Registered):
        _stamp(obj, now)
    traced = stats.state.debug
    begin_event()
    if traced:
        mark = stats.trace_begin()
    try:
        try:
            handler()
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(obj, fd, map)
    finally:
        end_event()
    if traced:
        stats.trace_end(mark, obj, flags)


def _dispatch_select(ready, map, iteration, now):
    # As 3.11's poll(): every read, then every write, then every exceptional
    # event, with select()'s view of HUP and ERR.
    for fd, obj, flags, mask in ready:
        if mask & POLLIN and flags & (POLLIN | GONE) and _alive(map, fd, obj, iteration):
            counts.read += 1
            _run(read_handler(obj), obj, fd, map, POLLIN, now)
    for fd, obj, flags, mask in ready:
        if (
            mask & POLLOUT
            and (
                flags & (POLLOUT | POLLERR) or (flags & (POLLHUP | POLLNVAL) and not mask & POLLIN)
            )
            and _alive(map, fd, obj, iteration)
        ):
            counts.write += 1
            _run(write_handler(obj), obj, fd, map, POLLOUT, now)
    for fd, obj, flags, _ in ready:
        if flags & POLLPRI and _alive(map, fd, obj, iteration):
            counts.expt += 1
            _run(obj.handle_expt_event, obj, fd, map, POLLPRI, now)


def _dispatch_poll(ready, map, iteration, now):
    # As 3.11's readwrite(), except that HUP/ERR with data to read does not
    # close: the read drains the data and its b"" closes.
    for fd, obj, flags, mask in ready:
        if not _alive(map, fd, obj, iteration):
            continue
        if now and isinstance(obj, Registered) and flags & (POLLIN | POLLOUT):
            _stamp(obj, now)
        traced = stats.state.debug
        begin_event()
        if traced:
            mark = stats.trace_begin()
        try:
            try:
                if flags & POLLIN:
                    counts.read += 1
                    read_handler(obj)()
                if flags & POLLOUT and _alive(map, fd, obj, iteration):
                    counts.write += 1
                    write_handler(obj)()
                if flags & POLLPRI and mask & POLLIN and _alive(map, fd, obj, iteration):
                    counts.expt += 1
                    obj.handle_expt_event()
                if flags & GONE and not flags & POLLIN and _alive(map, fd, obj, iteration):
                    close_once(obj)
            except OSError as err:
                if err.errno in _DISCONNECTED:
                    close_safely(obj, fd, map)
                else:
                    call_handle_error(obj, fd, map)
            except _reraised_exceptions:
                raise
            except BaseException:
                call_handle_error(obj, fd, map)
        finally:
            end_event()
        if traced:
            stats.trace_end(mark, obj, flags)
