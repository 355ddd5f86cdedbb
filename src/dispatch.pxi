# One iteration of the loop: prepare the registry, wait, dispatch.
#
# Events are snapshot as (entry, flags) before any handler runs. Before each
# handler call the entry's object must still own its fd in the map (an fd
# closed and reused during the iteration belongs to somebody else: bpo-30931)
# and must not have had its close handled in this iteration (bpo-13372).

cdef object _default_map_source = None


def set_default_map_source(namespace):
    """map=None means ``namespace.socket_map``, read at every call."""
    global _default_map_source
    _default_map_source = namespace


cdef inline object resolve_map(object map):
    if map is None:
        return _default_map_source.socket_map
    return map


cdef int timeout_ms(object timeout) except? -2:
    cdef double t
    if timeout is None:
        return -1
    t = timeout
    if t <= 0.0:
        return 0
    if t >= 2147483.0:
        return 2147483647
    # Round up: waking early only to sleep again wastes an iteration.
    return <int>(t * 1000.0 + 0.999)


cdef int call_handle_error(object obj) except -1:
    """obj.handle_error() for the exception being handled; if handle_error
    itself fails, report that and close obj by force: the loop goes on."""
    _stats.events[EV_ERROR] += 1
    if _debug:
        trace_error(obj)
    try:
        obj.handle_error()
    except _reraised_exceptions:
        raise
    except BaseException:
        force_close(obj)
    return 0


cdef int force_close(object obj) except -1:
    nil, t, v, tbinfo = compact_traceback()
    try:
        label = repr(obj)
    except BaseException:
        label = "<object at %#x>" % id(obj)
    loop_warning(obj, "error: handle_error of %s failed, closing it (%s:%s %s)"
                 % (label, t, v, tbinfo))
    try:
        obj.close()
    except _reraised_exceptions:
        raise
    except BaseException:
        # Not even close() works: at least stop polling it.
        for map in (getattr(obj, "_map", None), _default_map_source.socket_map):
            if map is not None:
                for fd, other in list(map.items()):
                    if other is obj:
                        del map[fd]
    return 0


cdef int call_close_once(object obj) except -1:
    try:
        if isinstance(obj, DispatcherBase):
            (<DispatcherBase>obj).close_once()
        else:
            obj.handle_close()
    except _reraised_exceptions:
        raise
    except BaseException:
        call_handle_error(obj)
    return 0


cdef inline bint still_owns(object map, Entry entry):
    """True if the entry's object may still receive events this iteration."""
    cdef object obj = entry.obj
    if entry.removed or entry.broken:
        return False
    if PyDict_CheckExact(map):
        # Not map.get(): a method call costs ten times the lookup.
        if PyDict_GetItem(map, entry.key) is not <PyObject *>obj:
            return False
    elif map.get(entry.key) is not obj:
        return False
    if isinstance(obj, DispatcherBase):
        if (<DispatcherBase>obj)._close_handled and \
                (<DispatcherBase>obj)._close_iteration == _iteration:
            return False
    return True


cdef int end_event() except -1:
    """The end of an event's handlers: the pushes this thread deferred are sent
    (what a flush's handlers defer in turn too)."""
    global _event_serial, _deferring
    cdef ChatBase chat
    cdef list batch
    cdef Py_ssize_t i
    cdef unsigned long me = PyThread_get_thread_ident()
    cdef bint sent = True
    _event_serial = 0
    while sent and _deferring:
        sent = False
        batch = _deferring
        _deferring = []
        for i in range(len(batch)):
            chat = batch[i]
            if chat._deferred_thread != me:
                _deferring.append(chat)   # another loop's thread sends it
                continue
            sent = True
            try:
                chat.flush_deferred()
            except _reraised_exceptions:
                _deferring.extend(batch[i + 1:])
                raise
            except BaseException:
                call_handle_error(chat)
    return 0


cdef inline void stamp_activity(object obj) noexcept:
    # Idle timeouts: every read or write event is activity.
    cdef IdleTimer timer
    if _now != 0.0 and isinstance(obj, DispatcherBase):
        timer = (<DispatcherBase>obj)._idle_timer
        if timer is not None:
            timer._activity = _now


cdef inline int do_read(object obj) except -1:
    cdef TLSLayer layer
    if isinstance(obj, DispatcherBase) and (<DispatcherBase>obj)._tls is not None:
        layer = (<DispatcherBase>obj)._tls
        if not layer.on_read():
            return 0
    if isinstance(obj, DispatcherBase) and \
            (<DispatcherBase>obj).uses(FAST_READ_EVENT):
        (<DispatcherBase>obj).read_event()
    else:
        obj.handle_read_event()
    return 0


cdef inline int do_write(object obj) except -1:
    cdef TLSLayer layer
    if isinstance(obj, DispatcherBase) and (<DispatcherBase>obj)._tls is not None:
        layer = (<DispatcherBase>obj)._tls
        if not layer.on_write():
            return 0
    if isinstance(obj, DispatcherBase) and \
            (<DispatcherBase>obj).uses(FAST_WRITE_EVENT):
        (<DispatcherBase>obj).write_event()
    else:
        obj.handle_write_event()
    return 0


cdef int run_read(object obj) except -1:
    cdef TraceMark mark
    cdef bint traced = _debug
    _stats.events[EV_READ] += 1
    stamp_activity(obj)
    forget_proof(obj)
    begin_event()
    if traced:
        trace_begin(&mark)
    try:
        try:
            do_read(obj)
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(obj)
    finally:
        end_event()
    if traced:
        trace_end(&mark, obj, FC_IN)
    return 0


cdef int run_write(object obj) except -1:
    cdef TraceMark mark
    cdef bint traced = _debug
    _stats.events[EV_WRITE] += 1
    stamp_activity(obj)
    forget_proof(obj)
    begin_event()
    if traced:
        trace_begin(&mark)
    try:
        try:
            do_write(obj)
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(obj)
    finally:
        end_event()
    if traced:
        trace_end(&mark, obj, FC_OUT)
    return 0


cdef int run_expt(object obj) except -1:
    cdef TraceMark mark
    cdef bint traced = _debug
    _stats.events[EV_EXPT] += 1
    forget_proof(obj)
    begin_event()
    if traced:
        trace_begin(&mark)
    try:
        try:
            obj.handle_expt_event()
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(obj)
    finally:
        end_event()
    if traced:
        trace_end(&mark, obj, FC_PRI)
    return 0


cdef int run_readwrite(object map, Entry entry, int flags) except -1:
    """poll2-style delivery of one event."""
    cdef TraceMark mark
    cdef bint traced = _debug
    obj = entry.obj
    if flags & (FC_IN | FC_OUT):
        stamp_activity(obj)
    forget_proof(obj)
    begin_event()
    if traced:
        trace_begin(&mark)
    try:
        try:
            if flags & FC_IN:
                _stats.events[EV_READ] += 1
                do_read(obj)
            if flags & FC_OUT and still_owns(map, entry):
                _stats.events[EV_WRITE] += 1
                do_write(obj)
            if flags & FC_PRI and entry.mask & FC_IN and still_owns(map, entry):
                _stats.events[EV_EXPT] += 1
                obj.handle_expt_event()
            # With data still to read, the read drains it and its b"" closes.
            if flags & (FC_HUP | FC_ERR | FC_NVAL) and not flags & FC_IN \
                    and still_owns(map, entry):
                call_close_once(obj)
        except OSError as err:
            if err.errno in _DISCONNECTED:
                call_close_once(obj)
            else:
                call_handle_error(obj)
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(obj)
    finally:
        end_event()
    if traced:
        trace_end(&mark, obj, flags)
    return 0


cdef str choose_backend(object name):
    """The poller for a ``backend=`` argument; 'auto' and None mean the default."""
    name = check_backend(name)
    if name is None:
        return _available_backends[0]
    if name not in _available_backends:
        raise ValueError("backend %r is not available here (available: %s)"
                         % (name, ", ".join(_available_backends)))
    return name


# The outermost loop()/poll() call on the main thread has not asked
# fastcore/_signal_wakeup.py to lend the waker yet: one flag test an
# iteration rather than a Python call.
cdef bint _wakeup_unprobed = False


cdef bint enter_wakeup_scope(bint may_block) except -1:
    global _wakeup_unprobed
    if may_block and signal_wakeup.enter():
        _wakeup_unprobed = True
        return True
    return False


cdef int leave_wakeup_scope() except -1:
    global _wakeup_unprobed
    _wakeup_unprobed = False
    signal_wakeup.leave()
    return 0


cdef int wait_past_signals(Poller poller, int waker, int ms) except -1:
    """poller.wait(ms), the waker drained. When only a signal's byte woke it,
    the wait goes on for the rest of ms once the handler ran, as select's does
    after EINTR (PEP 475). Handlers run before any dispatcher's."""
    cdef int n, i
    cdef bint signals_only
    cdef double deadline = fc_monotonic() + ms / 1000.0 if ms > 0 else 0.0
    while True:
        n = poller.wait(ms)
        for i in range(n):
            if poller.events[i].fd == waker:
                break
        else:
            return n
        signals_only = drain_waker()
        PyErr_CheckSignals()
        if n > 1 or not signals_only or ms == 0:
            return n
        if ms > 0:
            ms = <int>((deadline - fc_monotonic()) * 1000.0 + 0.999)
            if ms <= 0:
                return 0
        if _heap or len(_soon):
            # The handler may have scheduled something.
            ms = shorten_by_timers(ms)
            if ms == 0:
                return 0


cdef int poll_once(object timeout, object map, int style, str backend, bint may_block) except -1:
    global _iteration, _now, _wakeup_unprobed
    cdef Registry reg
    cdef Entry entry
    cdef Poller poller
    cdef int n, i, flags, ms
    cdef unsigned long unregistrations
    cdef list ready
    cdef double wait_started, wait_ended
    cdef list tls_ready = None
    if may_block and _wakeup_unprobed:
        _wakeup_unprobed = signal_wakeup.before_blocking_wait(waker_write_fd)
    # Every iteration, as the interpreter runs handlers between 3.11's
    # select() calls (loop(timeout=0) over built-in dispatchers runs no
    # Python code otherwise): a signal whose byte ended the last wait, or
    # that came since, has its handler run before the map is looked at (it
    # may empty it). One flag test when none is pending.
    PyErr_CheckSignals()
    if not map and not scheduler_pending():
        return 0
    reg = registry_for(map, backend)
    _iteration += 1
    reg.prepare(style)
    if _tls_ready:
        # Plaintext a TLS layer holds is read without waiting for the socket.
        tls_ready = tls_take_ready(reg)
    ms = 0 if reg.always or tls_ready else timeout_ms(timeout)
    if _heap or len(_soon):
        ms = shorten_by_timers(ms)
    poller = reg.poller
    unregistrations = reg.unregistrations
    wait_started = fc_monotonic()
    n = wait_past_signals(poller, reg.waker, ms)
    wait_ended = fc_monotonic()
    _now = wait_ended if _heap else 0.0

    # Snapshot before any handler runs.
    ready = []
    entries = reg.entries
    for i in range(n):
        if poller.events[i].fd == reg.waker:
            continue
        entry = entries.get(poller.events[i].fd)
        flags = poller.events[i].flags
        if entry is None or entry.mask == 0 or entry.removed:
            # Registered in the kernel but not here: a dup of a closed socket
            # keeps a stale registration alive (unless the fd was dropped
            # during the wait, by a signal handler or another thread).
            if unregistrations == reg.unregistrations:
                reg.needs_rebuild = True
            continue
        ready.append((entry, flags))
    for e in reg.always.values():
        entry = <Entry>e
        ready.append((entry, entry.mask & (FC_IN | FC_OUT)))
    if tls_ready:
        tls_add_ready(ready, tls_ready)

    # A dispatcher whose close was handled earlier and is still in the map
    # gets no more HUP/ERR: stop polling it rather than spin.
    for item in ready:
        entry = <Entry>item[0]
        flags = item[1]
        if flags & (FC_HUP | FC_ERR | FC_NVAL) and isinstance(entry.obj, DispatcherBase) \
                and (<DispatcherBase>entry.obj)._close_handled \
                and (<DispatcherBase>entry.obj)._close_iteration != _iteration:
            reg.set_interest(entry, 0)
            entry.broken = True

    if style == STYLE_POLL:
        for item in ready:
            entry = <Entry>item[0]
            if still_owns(map, entry):
                run_readwrite(map, entry, item[1])
    else:
        # select() order: every read, then every write, then every expt.
        for item in ready:
            entry = <Entry>item[0]
            flags = item[1]
            if entry.mask & FC_IN and flags & (FC_IN | FC_HUP | FC_ERR | FC_NVAL) \
                    and still_owns(map, entry):
                run_read(entry.obj)
        for item in ready:
            entry = <Entry>item[0]
            flags = item[1]
            if entry.mask & FC_OUT and (flags & (FC_OUT | FC_ERR) or (
                    flags & (FC_HUP | FC_NVAL) and not entry.mask & FC_IN)) \
                    and still_owns(map, entry):
                run_write(entry.obj)
        for item in ready:
            entry = <Entry>item[0]
            if item[1] & FC_PRI and still_owns(map, entry):
                run_expt(entry.obj)
    if _heap or len(_soon):
        # Timers that fell due while the handlers ran wait for the next
        # iteration, whose wait is then 0.
        run_due(_now)
    if _claims:
        _claims.clear()
    stats_iteration(wait_started, wait_ended)
    return 0


def bridge_fd(map=None, backend="auto"):
    """The fd of the map's poller, readable whenever one of the map's fds is
    ready: an asyncio loop watches it for fastcore.aio (epoll, kqueue)."""
    cdef Registry reg = registry_for(resolve_map(map), choose_backend(backend))
    cdef int fd = reg.poller.fileno()
    if fd < 0:
        raise ValueError("running dispatchers on asyncio needs the epoll or kqueue "
                         "backend, not %r" % reg.backend)
    return fd


def flush(map=None, use_poll=False):
    """Bring the kernel's registrations up to date with the map, as an
    iteration does before it waits. True if some fd is always ready (a
    regular file), which the poller's fd will not show."""
    cdef Registry reg = registry_of(resolve_map(map))
    if reg is None:
        return False
    reg.prepare(STYLE_POLL if use_poll else STYLE_SELECT)
    return bool(reg.always)


def poll(timeout=0.0, map=None, backend=None):
    """One iteration with select()-style dispatch (all reads, writes, expts)."""
    iterate_once(timeout, resolve_map(map), STYLE_SELECT, choose_backend(backend))


def poll2(timeout=0.0, map=None, backend=None):
    """One iteration with poll()-style dispatch (each fd's events together)."""
    iterate_once(timeout, resolve_map(map), STYLE_POLL, choose_backend(backend))


cdef int iterate_once(object timeout, object map, int style, str backend) except -1:
    cdef bint may_block = not (timeout == 0)   # None blocks; a bad value fails later, as before
    cdef bint outermost = enter_wakeup_scope(may_block)
    try:
        poll_once(timeout, map, style, backend, may_block)
    finally:
        if outermost:
            leave_wakeup_scope()
    return 0


def loop(timeout=30.0, use_poll=False, map=None, count=None, backend="auto", debug=False):
    if debug:
        ensure_debug()
    map = resolve_map(map)
    cdef int style = STYLE_POLL if use_poll else STYLE_SELECT
    cdef str poller = choose_backend(backend)
    cdef bint may_block = not (timeout == 0)
    cdef bint outermost = enter_wakeup_scope(may_block)
    try:
        # Timers and handed-over callbacks keep the loop going too.
        if count is None:
            while map or scheduler_pending():
                poll_once(timeout, map, style, poller, may_block)
        else:
            while (map or scheduler_pending()) and count > 0:
                poll_once(timeout, map, style, poller, may_block)
                count = count - 1
    finally:
        if outermost:
            leave_wakeup_scope()
    if not map:
        release_map(map)


# The module-level helpers keep 3.11's behaviour for direct calls.

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
        if flags & (POLLHUP | POLLERR | POLLNVAL):
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
