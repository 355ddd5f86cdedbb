# DispatcherBase and WithSendBase: the hot half of asyncore.dispatcher and
# dispatcher_with_send. The facade (fastcore/asyncore.py) adds the rest.
#
# connected/accepting/out_buffer are plain attributes, as in 3.11: the loop
# hears of their assignment (assignments.pxi) or of a change to the class
# (Registry.check_classes) and recomputes the interest then, so it never has
# to call readable()/writable() of these classes. It reads them through the
# attribute cache.


# socket.socket's own recv and send, called with the socket: no method lookup
# per call. Used while the class keeps the version tag they were read under
# and they are still the C methods (not patched on the class).
cdef object _plain_socket = _socket_class   # a C global: no module dict lookup
cdef object _socket_c_recv = _socket_class.recv
cdef object _socket_c_send = _socket_class.send
cdef unsigned int _socket_methods_version = 0


cdef bint plain_socket_methods(object sock) except -1:
    """sock is a socket.socket whose class still has the C recv and send."""
    global _socket_methods_version
    if type(sock) is not _plain_socket:
        return False
    cdef unsigned int version = fc_type_version(_plain_socket)
    if version != 0 and version == _socket_methods_version:
        return True
    # Read through the class (which gives it a version tag if it has none).
    if _plain_socket.recv is not _socket_c_recv or _plain_socket.send is not _socket_c_send:
        return False
    _socket_methods_version = fc_type_version(_plain_socket)
    return _socket_methods_version != 0


cdef bint socket_layout_matches():
    """Whether a socket.socket object starts as cpython_internals.h's
    fc_socket_head says (never on a CPython it was not checked on)."""
    if not fc_socket_layout_checkable():
        return False
    try:
        sock = _socket_class(AF_INET, SOCK_STREAM)
    except OSError:
        return False
    try:
        if fc_socket_fd(sock) != sock.fileno() or fc_socket_family(sock) != AF_INET:
            return False
        sock.setblocking(False)
        if fc_socket_timeout(sock) != 0:
            return False
        sock.settimeout(2.5)
        if fc_socket_timeout(sock) != 2500000000:
            return False
        sock.settimeout(None)
        if fc_socket_timeout(sock) >= 0:
            return False
    finally:
        sock.close()
    return fc_socket_fd(sock) == -1


# recv(2)/send(2) straight on the descriptor (socket_io.h), for a socket.socket
# that plain_socket_methods() accepts and whose timeout is 0: such a call cannot
# wait, so it needs neither the method's argument parsing nor a GIL release.
cdef bint _socket_layout_known = socket_layout_matches()


def _socket_io_direct():
    """For the tests: whether recv/send of a non-blocking socket.socket go
    straight to the descriptor (the layout check at import passed)."""
    return _socket_layout_known


cdef inline bint direct_socket_io(object sock) noexcept:
    return _socket_layout_known and fc_socket_timeout(sock) == 0


cdef inline Py_ssize_t plain_recv_size(object buffer_size) except -1:
    """buffer_size as a C size when it is an int from 1 to PY_SSIZE_T_MAX, else 0."""
    if type(buffer_size) is int and 0 < buffer_size <= PY_SSIZE_T_MAX:
        return buffer_size
    return 0


cdef object direct_send(object sock, object data):
    """send() of bytes or a contiguous memoryview on the descriptor; anything
    else is left to the method (which refuses what it refuses)."""
    if type(data) is bytes:
        return fc_socket_send(sock, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    if type(data) is not memoryview:
        return _socket_c_send(sock, data)
    cdef Py_buffer view
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except (BufferError, ValueError):
        return _socket_c_send(sock, data)
    try:
        return fc_socket_send(sock, <const char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


@cython.binding(False)
@cython.auto_pickle(False)   # copied and pickled as 3.11's: __getstate__
cdef class DispatcherBase:
    # No __dict__ here: the facade's Python subclasses get the interpreter's
    # own (managed) instance dict, which its attribute caches work with.
    cdef object __weakref__
    cdef bint _dirty
    cdef bint _close_handled
    cdef unsigned long _close_iteration
    cdef list _entries     # the registries' entries for this dispatcher
    cdef bint _own_methods  # the instance has its own method among _WATCHED_METHODS
    cdef bint _methods_unknown  # _own_methods is True until that is checked again
    cdef Py_ssize_t _watched_dict  # address of the instance dict a watcher reports on
    cdef bint _new_socket  # socket assigned since the last registration
    cdef bint _reclassify  # readable/writable may have been replaced: kind to check
    cdef bint _interest_proven  # its kept readable()/writable() answer holds (interest_proof.pxi)
    cdef int _fast_paths   # FAST_* bits of the methods its class left to the core
    cdef unsigned int _fast_version  # the class's version tag when they were worked out
    # fastcore's additions (set_idle_timeout, limit_connections): fields with
    # no Python name, so no name a subclass uses gets a meaning.
    cdef object _idle_timeout      # seconds, or None
    cdef object _on_timeout        # called with the dispatcher at its idle timeout, or None
    cdef IdleTimer _idle_timer     # while _idle_timeout is set and it is in a map
    cdef object _listener          # the listener whose connection limit it counts against
    cdef Py_ssize_t _connections   # as a listener: connections counting against it
    cdef Py_ssize_t _max_connections  # as a listener: its limit, -1 for none
    cdef bint _accept_paused       # as a listener: at its limit, not read
    cdef TLSLayer _tls     # while TLS is on (tls.pxi): recv/send and events go through it
    cdef int _large_reads  # socket_io.h: the last direct recv was large
    cdef list _cache                  # attribute_cache.pxi: values kept, by slot
    cdef unsigned int _cache_bits     # the slots kept
    cdef unsigned int _cache_unbound  # kept slots holding the class's function
    cdef unsigned int _cache_version  # the class's version tag they were kept under
    cdef Py_ssize_t _cache_dict       # address of the instance dict they were kept with
    cdef unsigned int _cache_in_dict  # kept slots whose value is the instance dict's
    cdef uint64_t _cache_dict_versions[CACHED_SLOTS]  # without a watcher: the dict's version

    def __cinit__(self, *args, **kwargs):
        if Py_TYPE(self).tp_dictoffset:
            # An ordinary dict from the start: the split dict the interpreter
            # would otherwise make (Cython's tp_new sets up no inline values)
            # is one the specialised LOAD_ATTR/STORE_ATTR of 3.11+ refuse.
            own = {}
            PyObject_GenericSetDict(self, own, NULL)
            if _dict_watcher >= 0:
                watch_instance_dict(self, own)
        self._max_connections = -1

    def __dealloc__(self):
        if self._watched_dict:
            forget_instance_dict(self)

    def __getstate__(self):
        # What copy and pickle take of a 3.11 dispatcher: its instance dict.
        # The C fields are the loop's bookkeeping of this object (its map
        # entries, timers, TLS), which a copy does not share.
        own = PyObject_GenericGetDict(self, NULL)
        return own if own else None

    cdef inline bint is_connected(self) except -1:
        return cached_attr(self, CACHED_CONNECTED)

    cdef inline bint is_accepting(self) except -1:
        return cached_attr(self, CACHED_ACCEPTING)

    cdef bint in_map(self):
        own = getattr(self, "__dict__")
        fd = own.get("_fileno")
        return fd is not None and own.get("_map", {}).get(fd) is self

    cdef int disarm_idle(self) except -1:
        cdef IdleTimer timer = self._idle_timer
        if timer is not None:
            self._idle_timer = None
            timer.cancel_timer()
        return 0

    cdef inline int mark_dirty(self) except -1:
        if not self._dirty and self._entries:
            self._dirty = True
            _dirty.append(self)
            if _change_hook is not None:
                notify_change()
        return 0

    cdef inline void record_dirty(self) noexcept:
        """mark_dirty() for the dict watcher, which may run no Python code:
        the change hook hears of it later (announce_recorded())."""
        global _change_unannounced
        if not self._dirty and self._entries:
            self._dirty = True
            _dirty.append(self)
            _change_unannounced = True

    def _mark_dirty(self):
        self.mark_dirty()

    # Assignments to the instance that the loop must hear of (assignments.pxi).
    cdef int note_assigned(self, int kind) noexcept:
        self._cache_bits &= ~(<unsigned int>kind >> CACHED_SHIFT)
        if kind & ASSIGNED_METHOD:
            self._own_methods = True
            self._reclassify = True
        if kind & ASSIGNED_SOCKET:
            self._new_socket = True
        if kind & (ASSIGNED_METHOD | ASSIGNED_SOCKET | ASSIGNED_INTEREST):
            self.record_dirty()
        return 0

    cdef int note_removed(self, int kind) noexcept:
        self._cache_bits &= ~(<unsigned int>kind >> CACHED_SHIFT)
        if kind & ASSIGNED_METHOD:
            # Which of its own methods remain is worked out when next needed:
            # a dict watcher hears of a deletion before it is made.
            self._own_methods = True
            self._methods_unknown = True
            self._reclassify = True
        if kind & ASSIGNED_SOCKET:
            self._new_socket = True
        if kind & (ASSIGNED_METHOD | ASSIGNED_SOCKET | ASSIGNED_INTEREST):
            self.record_dirty()
        return 0

    cdef bint recheck_own_methods(self) except -1:
        self._methods_unknown = False
        own = PyObject_GenericGetDict(self, NULL)
        self._own_methods = any(name in own for name in _WATCHED_METHODS)
        return self._own_methods

    cdef inline int class_paths(self) except -1:
        """FAST_* bits of the instance's class, worked out once per class version."""
        cdef unsigned int version = fc_type_version(type(self))
        if version == 0 or version != self._fast_version:
            self._fast_paths = fast_paths_of(type(self))
            self._fast_version = fc_type_version(type(self))
        return self._fast_paths

    cdef inline bint uses(self, int method) except -1:
        """True if the method (a FAST_* bit) is still the core's own, so C
        may call it directly."""
        if self._own_methods:
            if not self._methods_unknown:
                return False
            if self.recheck_own_methods():
                return False
        return self.class_paths() & method

    cdef inline object attr(self, str name):
        """getattr(self, name), for the core's hot paths. A class that keeps
        object's __getattribute__ is read with the generic lookup directly:
        the facade's __getattr__ (the socket delegation) otherwise puts the
        interpreter's __getattr__ slot, which looks both names up again, in
        front of every lookup. __getattr__ is still called for a name the
        generic lookup does not find, as the interpreter does."""
        cdef int paths = self.class_paths()
        cdef PyObject *found
        if not paths & FAST_GENERIC_LOOKUP:
            return getattr(self, name)
        found = generic_getattr_or_null(self, name)
        if found is not NULL:
            return steal(found)
        if not (paths & FAST_GETATTR_HOOK and PyErr_ExceptionMatches(AttributeError)):
            raise_pending()
        PyErr_Clear()
        return getattr_hook_result(self, name)

    def readable(self):
        return True

    def writable(self):
        return True

    def add_channel(self, map=None):
        if map is None:
            map = self._map
        fd = self._fileno
        if self._watched_dict:
            check_instance_dict(self)
        cdef Registry reg = registry_of(map)
        cdef uint64_t before = reg.map_version() if reg is not None else 0
        map[fd] = self
        self._close_handled = False
        if reg is not None:
            reg.note_added(fd, self, before)
        if self._idle_timeout is not None and self._idle_timer is None:
            self._idle_timer = new_idle_timer(self, self._idle_timeout)

    def del_channel(self, map=None):
        fd = self._fileno
        if map is None:
            map = self._map
        cdef Registry reg
        cdef uint64_t before
        if map.get(fd) is self:
            reg = registry_of(map)
            before = reg.map_version() if reg is not None else 0
            del map[fd]
            if reg is not None:
                reg.note_removed(fd, self, before)
        self._fileno = None
        if self._idle_timer is not None:
            self.disarm_idle()
        if self._listener is not None:
            unlink_from_listener(self)

    def set_socket(self, sock, map=None):
        self.flush_deferred()
        self.socket = sock
        self._fileno = sock.fileno()
        if _claims:
            link_to_listener(self, sock)
        self.add_channel(map)

    def _close_once(self):
        self.close_once()

    cdef int close_once(self) except -1:
        """handle_close() at most once per socket (bpo-13372)."""
        if self._close_handled:
            return 0
        self._close_handled = True
        self._close_iteration = _iteration
        _stats.events[EV_CLOSE] += 1
        self.mark_dirty()
        try:
            self.handle_close()
        except BaseException:
            # Not handled after all: handle_error() may try again.
            self._close_handled = False
            raise
        return 0

    def handle_read_event(self):
        self.read_event()

    cdef int read_event(self) except -1:
        if self.is_accepting():
            self.handle_accept()
            return 0
        if not self.is_connected() and self.connecting:
            self.handle_connect_event()
        if self.uses(FAST_HANDLE_READ):
            # Only a ChatBase has the bit (fast_paths_of), and no __class__
            # assignment changes an instance's C layout.
            (<ChatBase>self).chat_read()
        else:
            self.handle_read()
        return 0

    def handle_connect_event(self):
        err = self.socket.getsockopt(SOL_SOCKET, SO_ERROR)
        if err != 0:
            raise OSError(err, _strerror(err))
        self.handle_connect()
        self.connected = True
        self.connecting = False

    def handle_write_event(self):
        self.write_event()

    cdef int write_event(self) except -1:
        if self.is_accepting():
            return 0
        if not self.is_connected():
            if self.connecting:
                self.handle_connect_event()
        if self.uses(FAST_HANDLE_WRITE):
            (<ChatBase>self).initiate()   # a ChatBase, as in read_event()
        else:
            self.handle_write()
        return 0

    def handle_expt_event(self):
        err = self.socket.getsockopt(SOL_SOCKET, SO_ERROR)
        if err != 0:
            self.close_once()
        else:
            self.handle_expt()

    def send(self, data):
        self.flush_deferred()
        return self.sock_send(data)

    cdef int flush_deferred(self) except -1:
        """Sends the output pushes left for the end of the event (chat.pxi);
        called before anything whose outcome 3.11's sending them at once could
        change."""
        return 0

    cdef object sock_send(self, data):
        if self._tls is not None:
            return self._tls.send(data)
        try:
            sock = cached_attr(self, CACHED_SOCKET)
            if not plain_socket_methods(sock):
                sent = sock.send(data)
            elif direct_socket_io(sock):
                sent = direct_send(sock, data)
            else:
                sent = _socket_c_send(sock, data)
        except OSError as why:
            if why.errno == EWOULDBLOCK:
                return 0
            if why.errno in _DISCONNECTED:
                self.close_once()
                return 0
            raise
        stats_bytes_written(sent)
        return sent

    def recv(self, buffer_size):
        return self.sock_recv(buffer_size)

    cdef object sock_recv(self, buffer_size):
        cdef Py_ssize_t size
        if self._tls is not None:
            return self._tls.recv(buffer_size)
        try:
            sock = cached_attr(self, CACHED_SOCKET)
            if not plain_socket_methods(sock):
                data = sock.recv(buffer_size)
            else:
                size = plain_recv_size(buffer_size)
                if size and direct_socket_io(sock):
                    data = fc_socket_recv(sock, size, &self._large_reads)
                else:
                    data = _socket_c_recv(sock, buffer_size)
        except OSError as why:
            if why.errno in _DISCONNECTED:
                self.close_once()
                return b""
            raise
        if not data:
            # b"" from a readable socket: the peer closed.
            self.close_once()
            return b""
        stats_bytes_read(data)
        return data

    def close(self):
        self.flush_deferred()
        if counts_as_connected(self):
            _stats.closed += 1
        if self._tls is not None:
            self._tls.close_notify()
        self.connected = False
        self.accepting = False
        self.connecting = False
        self.del_channel()
        sock = self.socket
        if sock is not None:
            try:
                sock.close()
            except OSError as why:
                if why.errno not in (ENOTCONN, EBADF):
                    raise


def set_idle_timeout(dispatcher, seconds, on_timeout=None):
    """After ``seconds`` with no read or write event, call
    ``on_timeout(dispatcher)``; without one, handle_close() (once) and then
    close(). None clears it."""
    if not isinstance(dispatcher, DispatcherBase):
        raise TypeError("set_idle_timeout() needs a dispatcher, not %r" % (dispatcher,))
    if on_timeout is not None and not callable(on_timeout):
        raise TypeError("on_timeout must be None or callable, not %r" % (on_timeout,))
    seconds = check_idle_timeout(seconds)
    cdef DispatcherBase disp = <DispatcherBase>dispatcher
    disp.disarm_idle()
    disp._idle_timeout = seconds
    disp._on_timeout = on_timeout if seconds is not None else None
    if seconds is not None and disp.in_map():
        disp._idle_timer = new_idle_timer(disp, seconds)


def get_idle_timeout(dispatcher):
    """The dispatcher's idle timeout in seconds (set_idle_timeout), or None."""
    if not isinstance(dispatcher, DispatcherBase):
        raise TypeError("get_idle_timeout() needs a dispatcher, not %r" % (dispatcher,))
    return (<DispatcherBase>dispatcher)._idle_timeout


cdef int idle_timeout_expired(DispatcherBase disp) except -1:
    on_timeout = disp._on_timeout
    if on_timeout is not None:
        on_timeout(disp)
    else:
        disp.close_once()
        disp.close()
    return 0


cdef int counts_as_connected(DispatcherBase disp) except -1:
    """For the closed counter: 3.11's close() does not read connected, so
    what reading it raises changes nothing."""
    try:
        return disp.is_connected()
    except Exception:
        return False


# limit_connections: a dispatcher made on a socket its listener accepted this
# iteration counts against the listener until it leaves the map.

def limit_connections(listener, n):
    """At ``n`` connections accepted by ``listener`` and still open, it stops
    accepting (the kernel's backlog holds the rest) until one closes. None
    lifts the limit."""
    if not isinstance(listener, DispatcherBase):
        raise TypeError("limit_connections() needs a dispatcher, not %r" % (listener,))
    n = check_limit_value(n, "the connection limit", 1)
    (<DispatcherBase>listener)._max_connections = -1 if n is None else min(n, PY_SSIZE_T_MAX)
    check_limit(<DispatcherBase>listener)


def get_connection_limit(listener):
    """The listener's connection limit (limit_connections), or None."""
    if not isinstance(listener, DispatcherBase):
        raise TypeError("get_connection_limit() needs a dispatcher, not %r" % (listener,))
    cdef Py_ssize_t limit = (<DispatcherBase>listener)._max_connections
    return None if limit < 0 else limit


cdef int link_to_listener(DispatcherBase obj, object sock) except -1:
    claim = _claims.pop(obj._fileno, None)
    if claim is None or (<tuple>claim)[1] is not sock:
        return 0
    listener = (<tuple>claim)[0]   # a DispatcherBase: claim_connection() checks it
    obj._listener = listener
    (<DispatcherBase>listener)._connections += 1
    return check_limit(<DispatcherBase>listener)


cdef int unlink_from_listener(DispatcherBase obj) except -1:
    cdef DispatcherBase listener = <DispatcherBase>obj._listener
    obj._listener = None
    listener._connections -= 1
    return check_limit(listener)


cdef int check_limit(DispatcherBase listener) except -1:
    # At the limit a listener is not read: the kernel's backlog holds the rest.
    cdef Py_ssize_t limit = listener._max_connections
    cdef bint paused = limit >= 0 and listener._connections >= limit
    if paused != listener._accept_paused:
        listener._accept_paused = paused
        listener.mark_dirty()
        if paused:
            _stats.accept_pauses += 1
    return 0


@cython.binding(False)
@cython.auto_pickle(False)   # copied and pickled as 3.11's: __getstate__
cdef class WithSendBase(DispatcherBase):

    cdef bint has_output(self) except -1:
        return len(cached_attr(self, CACHED_OUT_BUFFER)) > 0

    # 3.11's code; the reads go through the attribute cache, the stores
    # through the type's setattr (which reports them), and the send is
    # DispatcherBase.send's.
    def initiate_send(self):
        num_sent = self.sock_send(cached_attr(self, CACHED_OUT_BUFFER)[:65536])
        self.out_buffer = cached_attr(self, CACHED_OUT_BUFFER)[num_sent:]

    def handle_write(self):
        self.initiate_send()

    def writable(self):
        return (not cached_attr(self, CACHED_CONNECTED)) or \
            len(cached_attr(self, CACHED_OUT_BUFFER))

    def send(self, data):
        if self.debug:
            self.log_info("sending %s" % repr(data))
        self.out_buffer = cached_attr(self, CACHED_OUT_BUFFER) + data
        self.initiate_send()
