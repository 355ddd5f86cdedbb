"""DispatcherBase and WithSendBase: the hot half of asyncore's dispatcher and
dispatcher_with_send; the facade (fastcore/asyncore.py) adds the rest.

connected, accepting and out_buffer are plain attributes, as in 3.11:
assigning one marks the dispatcher dirty (Registered.__setattr__), and a
change to the class is found by the registry's class check, so the registry
recomputes the interest without calling readable()/writable().
"""

from errno import EBADF, ENOTCONN, EWOULDBLOCK
from socket import SO_ERROR, SOL_SOCKET

from fastcore._common import _DISCONNECTED, _strerror, check_idle_timeout, check_limit_value
from fastcore._core_py import registry
from fastcore._core_py.registry import Registered
from fastcore._core_py.scheduler import IdleTimer
from fastcore._core_py.stats import counts

# Sockets accept() returned to listeners with a connection limit, this
# iteration: fd -> (listener, socket). The dispatcher made on such a socket
# counts against its listener until it leaves the map.
_claims = {}


def claim_connection(listener, sock):
    """accept() gave ``sock`` to ``listener``: if the listener has a
    connection limit, the dispatcher made on it this iteration counts
    against it."""
    if isinstance(listener, DispatcherBase) and listener._fc_max_connections is not None:
        _claims[sock.fileno()] = (listener, sock)


def clear_claims():
    _claims.clear()


def _link_to_listener(obj, sock):
    claim = _claims.pop(obj._fileno, None)
    if claim is None or claim[1] is not sock:
        return
    listener = claim[0]
    obj._fc_listener = listener
    listener._fc_connections += 1
    _check_limit(listener)


def _unlink_from_listener(obj):
    listener = obj._fc_listener
    obj._fc_listener = None
    listener._fc_connections -= 1
    _check_limit(listener)


def _check_limit(listener):
    # At the limit a listener is not read: the kernel's backlog holds the rest.
    limit = listener._fc_max_connections
    paused = limit is not None and listener._fc_connections >= limit
    if paused != listener._fc_accept_paused:
        listener._fc_accept_paused = paused
        listener._mark_dirty()
        if paused:
            counts.accept_pauses += 1


def set_idle_timeout(dispatcher, seconds, on_timeout=None):
    """After ``seconds`` with no read or write event, call
    ``on_timeout(dispatcher)``; without one, handle_close() (once) and then
    close(). None clears it."""
    if not isinstance(dispatcher, DispatcherBase):
        raise TypeError("set_idle_timeout() needs a dispatcher, not %r" % (dispatcher,))
    if on_timeout is not None and not callable(on_timeout):
        raise TypeError("on_timeout must be None or callable, not %r" % (on_timeout,))
    seconds = check_idle_timeout(seconds)
    dispatcher._fc_disarm_idle()
    dispatcher._fc_idle_timeout = seconds
    dispatcher._fc_on_timeout = on_timeout if seconds is not None else None
    if seconds is not None and dispatcher._fc_in_map():
        dispatcher._fc_idle_timer = IdleTimer(dispatcher, seconds)


def get_idle_timeout(dispatcher):
    """The dispatcher's idle timeout in seconds (set_idle_timeout), or None."""
    if not isinstance(dispatcher, DispatcherBase):
        raise TypeError("get_idle_timeout() needs a dispatcher, not %r" % (dispatcher,))
    return dispatcher._fc_idle_timeout


def limit_connections(listener, n):
    """At ``n`` connections accepted by ``listener`` and still open, it stops
    accepting (the kernel's backlog holds the rest) until one closes. None
    lifts the limit."""
    if not isinstance(listener, DispatcherBase):
        raise TypeError("limit_connections() needs a dispatcher, not %r" % (listener,))
    n = check_limit_value(n, "the connection limit", 1)
    listener._fc_max_connections = n
    _check_limit(listener)


def get_connection_limit(listener):
    """The listener's connection limit (limit_connections), or None."""
    if not isinstance(listener, DispatcherBase):
        raise TypeError("get_connection_limit() needs a dispatcher, not %r" % (listener,))
    return listener._fc_max_connections


def _counts_as_connected(disp):
    """For the closed counter: 3.11's close() does not read connected, so
    what reading it raises changes nothing."""
    try:
        return bool(disp.connected)
    except Exception:
        return False


class DispatcherBase(Registered):
    # fastcore's additions (set_idle_timeout, limit_connections): _fc_ names,
    # so no name a subclass uses gets a meaning.
    _fc_idle_timeout = None
    _fc_on_timeout = None  # called with the dispatcher at its idle timeout, or None
    _fc_idle_timer = None  # an IdleTimer while _fc_idle_timeout is set and it is in a map
    _fc_listener = None  # the listener whose connection limit it counts against
    _fc_connections = 0  # as a listener: connections counting against it
    _fc_max_connections = None  # as a listener: its limit
    _fc_tls = None  # the TLSLayer (fastcore/_core_py/tls.py) while TLS is on
    _fc_deferred = None  # chat.py: pushes left for the end of the event

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        # Class attributes a subclass gave to property names (moved aside by
        # the facade's __init_subclass__) become the instance's values.
        defaults = getattr(cls, "_fc_defaults", None)
        if defaults:
            for name, value in defaults.items():
                setattr(self, name, value)
        return self

    def _fc_in_map(self):
        own = self.__dict__
        fd = own.get("_fileno")
        return fd is not None and own.get("_map", {}).get(fd) is self

    def _fc_idle_timeout_expired(self):
        on_timeout = self._fc_on_timeout
        if on_timeout is not None:
            on_timeout(self)
        else:
            self._close_once()
            self.close()

    def _fc_disarm_idle(self):
        timer = self._fc_idle_timer
        if timer is not None:
            self._fc_idle_timer = None
            timer.cancel()

    def readable(self):
        return True

    def writable(self):
        return True

    _fc_readable = readable
    _fc_writable = writable

    def _fc_write_interest(self):
        return not self.accepting

    def add_channel(self, map=None):
        if map is None:
            map = self._map
        fd = self._fileno
        map[fd] = self
        self._fc_close_handled = False
        registry.note_added(map, fd, self)
        if self._fc_idle_timeout is not None and self._fc_idle_timer is None:
            self._fc_idle_timer = IdleTimer(self, self._fc_idle_timeout)

    def del_channel(self, map=None):
        fd = self._fileno
        if map is None:
            map = self._map
        if map.get(fd) is self:
            del map[fd]
        # Unregister now, while the fd is still open (close() closes it next).
        registry.note_removed(map, fd, self)
        self._fileno = None
        if self._fc_idle_timer is not None:
            self._fc_disarm_idle()
        if self._fc_listener is not None:
            _unlink_from_listener(self)

    def set_socket(self, sock, map=None):
        if self._fc_deferred is not None:
            self._fc_flush_deferred()
        self.socket = sock
        self._fileno = sock.fileno()
        if _claims:
            _link_to_listener(self, sock)
        self.add_channel(map)

    def _close_once(self):
        """handle_close(), unless done since the last add_channel()."""
        if self._fc_close_handled:
            return
        self._fc_close_handled = True
        self._fc_close_iteration = registry.current_iteration()
        counts.close += 1
        self._mark_dirty()
        try:
            self.handle_close()
        except BaseException:
            # Not handled after all: handle_error() may close it again.
            self._fc_close_handled = False
            raise

    def handle_read_event(self):
        if self.accepting:
            # A listening socket never reads: readable means a connection waits.
            self.handle_accept()
        elif not self.connected:
            if self.connecting:
                self.handle_connect_event()
            self.handle_read()
        else:
            self.handle_read()

    def handle_connect_event(self):
        err = self.socket.getsockopt(SOL_SOCKET, SO_ERROR)
        if err != 0:
            raise OSError(err, _strerror(err))
        self.handle_connect()
        self.connected = True
        self.connecting = False

    def handle_write_event(self):
        if self.accepting:
            return
        if not self.connected:
            if self.connecting:
                self.handle_connect_event()
        self.handle_write()

    def handle_expt_event(self):
        # Exceptional means out-of-band data, or an error pending on the socket.
        err = self.socket.getsockopt(SOL_SOCKET, SO_ERROR)
        if err != 0:
            self._close_once()
        else:
            self.handle_expt()

    def send(self, data):
        if self._fc_deferred is not None:
            self._fc_flush_deferred()
        if self._fc_tls is not None:
            return self._fc_tls.send(data)
        try:
            sent = self.socket.send(data)
        except OSError as why:
            if why.errno == EWOULDBLOCK:
                return 0
            if why.errno in _DISCONNECTED:
                self._close_once()
                return 0
            raise
        if type(sent) is int:
            counts.bytes_written += sent
        return sent

    def recv(self, buffer_size):
        if self._fc_tls is not None:
            return self._fc_tls.recv(buffer_size)
        try:
            data = self.socket.recv(buffer_size)
        except OSError as why:
            if why.errno in _DISCONNECTED:
                self._close_once()
                return b""
            raise
        if not data:
            # Readable, yet nothing to read: the peer closed.
            self._close_once()
            return b""
        if type(data) is bytes:
            counts.bytes_read += len(data)
        return data

    def close(self):
        if self._fc_deferred is not None:
            self._fc_flush_deferred()
        if _counts_as_connected(self):
            counts.closed += 1
        if self._fc_tls is not None:
            self._fc_tls.close_notify()
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


class WithSendBase(DispatcherBase):
    @property
    def _fc_interest_stable(self):
        # An out_buffer that is not bytes (a bytearray grows in place) can
        # change unseen: such a dispatcher's interest is recomputed every
        # iteration.
        return type(getattr(self, "out_buffer", b"")) is bytes

    def initiate_send(self):
        num_sent = DispatcherBase.send(self, self.out_buffer[:65536])
        self.out_buffer = self.out_buffer[num_sent:]

    def handle_write(self):
        self.initiate_send()

    def writable(self):
        return (not self.connected) or len(self.out_buffer)

    _fc_writable = writable

    def _fc_write_interest(self):
        return not self.accepting and (not self.connected or len(self.out_buffer) > 0)

    def send(self, data):
        if self.debug:
            self.log_info("sending %s" % repr(data))
        self.out_buffer = self.out_buffer + data
        self.initiate_send()
