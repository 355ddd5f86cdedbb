"""DispatcherBase and WithSendBase: the hot half of asyncore's dispatcher and
dispatcher_with_send; the facade (fastcore/asyncore.py) adds the rest.

connected, accepting and out_buffer are properties: setting one marks the
dispatcher dirty, so the registry recomputes its interest without calling
readable()/writable().
"""

from errno import EBADF, ENOTCONN, EWOULDBLOCK
from socket import SO_ERROR, SOL_SOCKET

from fastcore._common import _DISCONNECTED, _strerror
from fastcore._core_py import registry
from fastcore._core_py.registry import Registered


class DispatcherBase(Registered):
    _fc_connected = False
    _fc_accepting = False
    _fc_tls = None  # the TLSLayer (fastcore/_core_py/tls.py) while TLS is on

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        # Class attributes a subclass gave to property names (moved aside by
        # the facade's __init_subclass__) become the instance's values.
        defaults = getattr(cls, "_fc_defaults", None)
        if defaults:
            for name, value in defaults.items():
                setattr(self, name, value)
        return self

    @property
    def connected(self):
        return self._fc_connected

    @connected.setter
    def connected(self, value):
        self._fc_connected = value
        self._mark_dirty()

    @property
    def accepting(self):
        return self._fc_accepting

    @accepting.setter
    def accepting(self, value):
        self._fc_accepting = value
        self._mark_dirty()

    def readable(self):
        return True

    def writable(self):
        return True

    _fc_readable = readable
    _fc_writable = writable

    def _fc_write_interest(self):
        return not self._fc_accepting

    def add_channel(self, map=None):
        if map is None:
            map = self._map
        fd = self._fileno
        map[fd] = self
        self._fc_close_handled = False
        registry.note_added(map, fd, self)

    def del_channel(self, map=None):
        fd = self._fileno
        if map is None:
            map = self._map
        if map.get(fd) is self:
            del map[fd]
        # Unregister now, while the fd is still open (close() closes it next).
        registry.note_removed(map, fd, self)
        self._fileno = None

    def set_socket(self, sock, map=None):
        self.socket = sock
        self._fileno = sock.fileno()
        self.add_channel(map)

    def _close_once(self):
        """handle_close(), unless done since the last add_channel()."""
        if self._fc_close_handled:
            return
        self._fc_close_handled = True
        self._fc_close_iteration = registry.current_iteration()
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
        if self._fc_tls is not None:
            return self._fc_tls.send(data)
        try:
            return self.socket.send(data)
        except OSError as why:
            if why.errno == EWOULDBLOCK:
                return 0
            if why.errno in _DISCONNECTED:
                self._close_once()
                return 0
            raise

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
        return data

    def close(self):
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
    _fc_out_buffer = b""

    @property
    def out_buffer(self):
        return self._fc_out_buffer

    @out_buffer.setter
    def out_buffer(self, value):
        self._fc_out_buffer = value
        self._mark_dirty()

    def initiate_send(self):
        num_sent = DispatcherBase.send(self, self.out_buffer[:65536])
        self.out_buffer = self.out_buffer[num_sent:]

    def handle_write(self):
        self.initiate_send()

    def writable(self):
        return (not self.connected) or len(self.out_buffer)

    _fc_writable = writable

    def _fc_write_interest(self):
        return not self._fc_accepting and (not self._fc_connected or len(self._fc_out_buffer) > 0)

    def send(self, data):
        if self.debug:
            self.log_info("sending %s" % repr(data))
        self.out_buffer = self.out_buffer + data
        self.initiate_send()
