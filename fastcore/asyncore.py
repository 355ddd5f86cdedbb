"""Drop-in ``asyncore``: CPython 3.11's API over fastcore's core.

The loop, the dispatch and the hot methods of ``dispatcher`` come from the
core (``fastcore._core_c`` or its pure-Python twin ``fastcore._core_py``);
this module adds the rest of the public API in plain Python.
"""

# The standard module's namespace, names it imported included: code reaches
# for asyncore.EWOULDBLOCK, asyncore.select and the like.
import os
import select  # noqa: F401
import socket
import sys
import time  # noqa: F401
import warnings
from errno import (  # noqa: F401
    EAGAIN,
    EALREADY,
    EBADF,
    ECONNABORTED,
    ECONNRESET,
    EINPROGRESS,
    EINVAL,
    EISCONN,
    ENOTCONN,
    EPIPE,
    ESHUTDOWN,
    EWOULDBLOCK,
    errorcode,
)

from fastcore._common import (  # noqa: F401  (re-exported)
    _DISCONNECTED,
    ExitNow,
    _reraised_exceptions,
    _strerror,
    compact_traceback,
)
from fastcore._common import FIELD_NAMES as _FIELD_NAMES
from fastcore._impl import core as _core

try:
    socket_map  # noqa: B018  (kept across importlib.reload, as in the standard module)
except NameError:
    socket_map = {}

_core.set_default_map_source(sys.modules[__name__])

read = _core.read
write = _core.write
_exception = _core._exception
readwrite = _core.readwrite
poll = _core.poll
poll2 = _core.poll2
poll3 = poll2
loop = _core.loop


class dispatcher(_core.DISPATCHER_BASE):
    debug = False
    connected = False
    accepting = False
    connecting = False
    closing = False
    addr = None
    ignore_log_types = frozenset({"warning"})

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        shadowing = {
            name: cls.__dict__[name]
            for name in _FIELD_NAMES
            if name in cls.__dict__ and not hasattr(cls.__dict__[name], "__get__")
        }
        if shadowing:
            defaults = dict(getattr(cls, "_fc_defaults", None) or {})
            for name, value in shadowing.items():
                delattr(cls, name)
                defaults[name] = value
            cls._fc_defaults = defaults

    def __init__(self, sock=None, map=None):
        if map is None:
            self._map = socket_map
        else:
            self._map = map

        self._fileno = None

        if sock:
            sock.setblocking(False)
            self.set_socket(sock, map)
            self.connected = True
            try:
                self.addr = sock.getpeername()
            except OSError as err:
                if err.errno in (ENOTCONN, EINVAL):
                    self.connected = False
                else:
                    # A broken socket must not stay in the map.
                    self.del_channel(map)
                    raise
        else:
            self.socket = None

    def __repr__(self):
        status = [self.__class__.__module__ + "." + self.__class__.__qualname__]
        if self.accepting and self.addr:
            status.append("listening")
        elif self.connected:
            status.append("connected")
        if self.addr is not None:
            try:
                status.append("%s:%d" % self.addr)
            except TypeError:
                status.append(repr(self.addr))
        return "<%s at %#x>" % (" ".join(status), id(self))

    def __getattr__(self, attr):
        # The delegation to the socket that asyncore deprecated in 3.4 and
        # dropped in 3.6; kept for code written against older releases.
        if attr == "socket" or attr.startswith("__"):
            raise AttributeError(
                "%s instance has no attribute '%s'" % (self.__class__.__name__, attr)
            )
        try:
            retattr = getattr(self.socket, attr)
        except AttributeError:
            raise AttributeError(
                "%s instance has no attribute '%s'" % (self.__class__.__name__, attr)
            ) from None
        msg = "%(me)s.%(attr)s is deprecated; use %(me)s.socket.%(attr)s instead" % {
            "me": self.__class__.__name__,
            "attr": attr,
        }
        warnings.warn(msg, DeprecationWarning, stacklevel=2)
        return retattr

    def create_socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM):
        self.family_and_type = family, type
        sock = socket.socket(family, type)
        sock.setblocking(False)
        self.set_socket(sock)

    def set_reuse_addr(self):
        try:
            self.socket.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_REUSEADDR,
                self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) | 1,
            )
        except OSError:
            pass

    def listen(self, num):
        self.accepting = True
        if os.name == "nt" and num > 5:
            num = 5
        return self.socket.listen(num)

    def bind(self, addr):
        self.addr = addr
        return self.socket.bind(addr)

    def connect(self, address):
        self.connected = False
        self.connecting = True
        err = self.socket.connect_ex(address)
        if err in (EINPROGRESS, EALREADY, EWOULDBLOCK) or err == EINVAL and os.name == "nt":
            self.addr = address
            return
        if err in (0, EISCONN):
            self.addr = address
            self.handle_connect_event()
        else:
            raise OSError(err, errorcode[err])

    def accept(self):
        try:
            conn, addr = self.socket.accept()
        except TypeError:
            return None
        except OSError as why:
            if why.errno in (EWOULDBLOCK, ECONNABORTED, EAGAIN):
                return None
            else:
                raise
        else:
            _core.count_accepted()
            _core.claim_connection(self, conn)
            return conn, addr

    def log(self, message):
        sys.stderr.write("log: %s\n" % str(message))

    def log_info(self, message, type="info"):
        if type not in self.ignore_log_types:
            print("%s: %s" % (type, message))

    def handle_error(self):
        nil, t, v, tbinfo = compact_traceback()

        try:
            self_repr = repr(self)
        except Exception:
            self_repr = "<__repr__(self) failed for object at %0x>" % id(self)

        self.log_info(
            "uncaptured python exception, closing channel %s (%s:%s %s)"
            % (self_repr, t, v, tbinfo),
            "error",
        )
        self._close_once()

    def handle_expt(self):
        self.log_info("unhandled incoming priority event", "warning")

    def handle_read(self):
        self.log_info("unhandled read event", "warning")

    def handle_write(self):
        self.log_info("unhandled write event", "warning")

    def handle_connect(self):
        self.log_info("unhandled connect event", "warning")

    def handle_accept(self):
        pair = self.accept()
        if pair is not None:
            self.handle_accepted(*pair)

    def handle_accepted(self, sock, addr):
        sock.close()
        self.log_info("unhandled accepted event", "warning")

    def handle_close(self):
        self.log_info("unhandled close event", "warning")
        self.close()


class dispatcher_with_send(_core.WithSendBase, dispatcher):
    def __init__(self, sock=None, map=None):
        dispatcher.__init__(self, sock, map)
        self.out_buffer = b""


def close_all(map=None, ignore_all=False):
    if map is None:
        map = socket_map
    for x in list(map.values()):
        try:
            x.close()
        except OSError as x:
            if x.errno == EBADF:
                pass
            elif not ignore_all:
                raise
        except _reraised_exceptions:
            raise
        except BaseException:
            if not ignore_all:
                raise
    map.clear()
    _core.release_map(map)


# file_wrapper/file_dispatcher let pipes and other non-socket fds take part
# in the loop (POSIX only, as in the standard module).
if os.name == "posix":

    class file_wrapper:
        # Just enough of a socket for the loop; owns a dup() of the fd.

        def __init__(self, fd):
            self.fd = os.dup(fd)

        def __del__(self):
            if self.fd >= 0:
                warnings.warn("unclosed file %r" % self, ResourceWarning, source=self)  # noqa: B028
            self.close()

        def recv(self, *args):
            return os.read(self.fd, *args)

        def send(self, *args):
            return os.write(self.fd, *args)

        def getsockopt(self, level, optname, buflen=None):
            if level == socket.SOL_SOCKET and optname == socket.SO_ERROR and not buflen:
                return 0
            raise NotImplementedError("Only asyncore specific behaviour implemented.")

        read = recv
        write = send

        def close(self):
            if self.fd < 0:
                return
            fd = self.fd
            self.fd = -1
            os.close(fd)

        def fileno(self):
            return self.fd

    class file_dispatcher(dispatcher):
        def __init__(self, fd, map=None):
            dispatcher.__init__(self, None, map)
            self.connected = True
            try:
                fd = fd.fileno()
            except AttributeError:
                pass
            self.set_file(fd)
            os.set_blocking(fd, False)

        def set_file(self, fd):
            self.socket = file_wrapper(fd)
            self._fileno = self.socket.fileno()
            self.add_channel()
