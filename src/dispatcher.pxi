# DispatcherBase and WithSendBase: the hot half of asyncore.dispatcher and
# dispatcher_with_send. The facade (fastcore/asyncore.py) adds the rest.
#
# connected/accepting/out_buffer live in C fields behind properties: setting
# one queues the dispatcher for an interest recompute, so the loop never has
# to call readable()/writable() of these classes.


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


cdef class DispatcherBase:
    # No __dict__ here: the facade's Python subclasses get the interpreter's
    # own (managed) instance dict, which its attribute caches work with.
    cdef object __weakref__
    cdef object _connected
    cdef object _accepting
    cdef bint _is_connected
    cdef bint _is_accepting
    cdef bint _dirty
    cdef bint _close_handled
    cdef unsigned long _close_iteration
    cdef list _entries     # the registries' entries for this dispatcher
    cdef bint _own_methods  # the instance has its own method among _WATCHED_METHODS
    cdef bint _methods_unknown  # _own_methods is True until that is checked again
    cdef Py_ssize_t _watched_dict  # address of the instance dict a watcher reports on
    cdef bint _new_socket  # socket assigned since the last registration
    cdef bint _reclassify  # readable/writable may have been replaced: kind to check
    cdef int _fast_paths   # FAST_* bits of the methods its class left to the core
    cdef unsigned int _fast_version  # the class's version tag when they were worked out
    cdef object _timeout           # idle timeout in seconds, or None
    cdef IdleTimer _idle_timer     # while _timeout is set and it is in a map
    cdef object _listener          # the listener whose max_connections it counts against
    cdef Py_ssize_t _connections   # as a listener: connections counting against it
    cdef bint _accept_paused       # as a listener: at max_connections, not read
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
        self._connected = False
        self._accepting = False
        defaults = getattr(type(self), "_fc_defaults", None)
        if defaults:
            for name, value in defaults.items():
                setattr(self, name, value)

    def __dealloc__(self):
        if self._watched_dict:
            forget_instance_dict(self)

    @property
    def connected(self):
        return self._connected

    @connected.setter
    def connected(self, value):
        self._connected = value
        self._is_connected = bool(value)
        self._mark_dirty()

    @property
    def accepting(self):
        return self._accepting

    @accepting.setter
    def accepting(self, value):
        self._accepting = value
        self._is_accepting = bool(value)
        self._mark_dirty()

    @property
    def timeout(self):
        """Idle timeout in seconds: handle_timeout() after that long with no
        read or write event. None (the default) for none."""
        return self._timeout

    @timeout.setter
    def timeout(self, value):
        self._timeout = check_idle_timeout(value)
        self.disarm_idle()
        if self._timeout is not None and self.in_map():
            self._idle_timer = new_idle_timer(self, self._timeout)

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

    def _fc_limit_changed(self):
        check_limit(self)

    cdef inline void mark_dirty(self) noexcept:
        if not self._dirty and self._entries:
            self._dirty = True
            _dirty.append(self)
            if _change_hook is not None:
                notify_change()

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
        if kind & (ASSIGNED_METHOD | ASSIGNED_SOCKET):
            self.mark_dirty()
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
        if kind & (ASSIGNED_METHOD | ASSIGNED_SOCKET):
            self.mark_dirty()
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
        if self._timeout is not None and self._idle_timer is None:
            self._idle_timer = new_idle_timer(self, self._timeout)

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
        if self._is_accepting:
            self.handle_accept()
            return 0
        if not self._is_connected and self.connecting:
            self.handle_connect_event()
        if self.uses(FAST_HANDLE_READ):
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
        if self._is_accepting:
            return 0
        if not self._is_connected:
            if self.connecting:
                self.handle_connect_event()
        if self.uses(FAST_HANDLE_WRITE):
            (<ChatBase>self).initiate()
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
        return self.sock_send(data)

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
        if self._is_connected:
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


# max_connections: a dispatcher made on a socket its listener accepted this
# iteration counts against the listener until it leaves the map.

cdef int link_to_listener(DispatcherBase obj, object sock) except -1:
    claim = _claims.pop(obj._fileno, None)
    if claim is None or (<tuple>claim)[1] is not sock:
        return 0
    listener = (<tuple>claim)[0]
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
    limit = listener.max_connections
    cdef bint paused = limit is not None and listener._connections >= limit
    if paused != listener._accept_paused:
        listener._accept_paused = paused
        listener.mark_dirty()
    return 0


cdef class WithSendBase(DispatcherBase):
    cdef object _out_buffer
    cdef bint _has_output

    def __cinit__(self, *args, **kwargs):
        if self._out_buffer is None:
            self._out_buffer = b""

    @property
    def out_buffer(self):
        return self._out_buffer

    @out_buffer.setter
    def out_buffer(self, value):
        self._out_buffer = value
        self._has_output = len(value) > 0
        self.mark_dirty()

    def initiate_send(self):
        num_sent = DispatcherBase.send(self, self._out_buffer[:65536])
        self.out_buffer = self._out_buffer[num_sent:]

    def handle_write(self):
        self.initiate_send()

    def writable(self):
        return (not self._connected) or len(self._out_buffer)

    def send(self, data):
        if self.debug:
            self.log_info("sending %s" % repr(data))
        self.out_buffer = self._out_buffer + data
        self.initiate_send()
