"""One iteration of the loop: prepare the map's registry, wait, dispatch.

Events are snapshot as (fd, obj, flags, mask) before any handler runs.
Before each handler call the object must still own its fd in the map (an fd
closed and reused during the iteration belongs to somebody else) and must
not have had its close handled in this iteration.
"""

from types import SimpleNamespace

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
from fastcore._core_py.pollers import default_backend
from fastcore._core_py.registry import (
    GONE,
    Registered,
    begin_iteration,
    call_handle_error,
    close_once,
    close_safely,
    registry_for,
    release_map,
)
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


def poll(timeout=0.0, map=None, backend=None):
    """One iteration, select()-style dispatch: every read, every write, every
    exceptional event."""
    _iterate(timeout, _resolve(map), check_backend(backend), True)


def poll2(timeout=0.0, map=None, backend=None):
    """One iteration, poll()-style dispatch: each fd's events together."""
    _iterate(timeout, _resolve(map), check_backend(backend), False)


def loop(timeout=30.0, use_poll=False, map=None, count=None, backend="auto"):
    map = _resolve(map)
    backend = check_backend(backend) or default_backend()
    select_style = not use_poll
    if count is None:
        while map:
            _iterate(timeout, map, backend, select_style)
    else:
        while map and count > 0:
            _iterate(timeout, map, backend, select_style)
            count = count - 1
    if not map:
        release_map(map)


def _iterate(timeout, map, backend, select_style):
    if not map:
        return
    if timeout is not None:
        timeout = min(max(timeout, 0.0), _MAX_TIMEOUT)
    registry = registry_for(map, backend)
    iteration = begin_iteration()
    registry.prepare(select_style)
    # Plaintext a TLS layer holds is read without waiting for the socket.
    tls_ready = take_ready(registry)
    ready = registry.wait(0.0 if tls_ready else timeout, iteration)
    if tls_ready:
        ready = add_ready(ready, tls_ready)
    if not ready:
        return
    if select_style:
        _dispatch_select(ready, map, iteration)
    else:
        _dispatch_poll(ready, map, iteration)


def _alive(map, fd, obj, iteration):
    if map.get(fd) is not obj:
        return False
    return not (
        isinstance(obj, Registered)
        and obj._fc_close_handled
        and obj._fc_close_iteration == iteration
    )


def _run(handler, obj, fd, map):
    try:
        handler()
    except _reraised_exceptions:
        raise
    except BaseException:
        call_handle_error(obj, fd, map)


def _dispatch_select(ready, map, iteration):
    # As 3.11's poll(): every read, then every write, then every exceptional
    # event, with select()'s view of HUP and ERR.
    for fd, obj, flags, mask in ready:
        if mask & POLLIN and flags & (POLLIN | GONE) and _alive(map, fd, obj, iteration):
            _run(read_handler(obj), obj, fd, map)
    for fd, obj, flags, mask in ready:
        if (
            mask & POLLOUT
            and (
                flags & (POLLOUT | POLLERR) or (flags & (POLLHUP | POLLNVAL) and not mask & POLLIN)
            )
            and _alive(map, fd, obj, iteration)
        ):
            _run(write_handler(obj), obj, fd, map)
    for fd, obj, flags, _ in ready:
        if flags & POLLPRI and _alive(map, fd, obj, iteration):
            _run(obj.handle_expt_event, obj, fd, map)


def _dispatch_poll(ready, map, iteration):
    # As 3.11's readwrite(), except that HUP/ERR with data to read does not
    # close: the read drains the data and its b"" closes.
    for fd, obj, flags, mask in ready:
        if not _alive(map, fd, obj, iteration):
            continue
        try:
            if flags & POLLIN:
                read_handler(obj)()
            if flags & POLLOUT and _alive(map, fd, obj, iteration):
                write_handler(obj)()
            if flags & POLLPRI and mask & POLLIN and _alive(map, fd, obj, iteration):
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
