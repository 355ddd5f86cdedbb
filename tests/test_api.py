"""Public API of asyncore/asynchat: names, signatures, defaults, small behaviours."""

import errno
import gc
import inspect
import os
import re
import select
import socket
import sys
import textwrap
import types
import warnings

import pytest
import support
from support import LOCALHOST, USE_POLL, pump, run_iterations, run_until

ASYNCORE_API = [
    "ExitNow", "_DISCONNECTED", "_exception", "_reraised_exceptions", "_strerror",
    "close_all", "compact_traceback", "dispatcher", "dispatcher_with_send",
    "file_dispatcher", "file_wrapper", "loop", "poll", "poll2", "poll3", "read",
    "readwrite", "socket_map", "write",
]
ASYNCHAT_API = ["async_chat", "simple_producer", "find_prefix_at_end"]

# names 3.11's asyncore has because of its own imports; code reaches them as
# ``asyncore.socket``, ``asyncore.EWOULDBLOCK`` or through ``from asyncore import *``
ASYNCORE_IMPORTED = [
    "EAGAIN", "EALREADY", "EBADF", "ECONNABORTED", "ECONNRESET", "EINPROGRESS", "EINVAL",
    "EISCONN", "ENOTCONN", "EPIPE", "ESHUTDOWN", "EWOULDBLOCK", "errorcode",
    "os", "select", "socket", "sys", "time", "warnings",
]
ASYNCHAT_IMPORTED = ["asyncore", "deque"]

FUNCTIONS = ["read", "write", "_exception", "readwrite", "poll", "poll2", "poll3",
             "compact_traceback", "close_all", "_strerror"]

CLASSES = [
    ("asyncore", "dispatcher"),
    ("asyncore", "dispatcher_with_send"),
    ("asyncore", "file_wrapper"),
    ("asyncore", "file_dispatcher"),
    ("asynchat", "async_chat"),
    ("asynchat", "simple_producer"),
]


def _methods(cls):
    """Names of the functions a reference class defines or inherits (not object's)."""
    names = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if inspect.isfunction(value):
                names.add(name)
    return sorted(names)


def _method_params(ref_modules):
    out = []
    for modname, clsname in CLASSES:
        mod = ref_modules[0] if modname == "asyncore" else ref_modules[1]
        for meth in _methods(getattr(mod, clsname)):
            out.append((modname, clsname, meth))
    return out


def _ref_for_params():
    try:
        return support.load_reference()
    except ImportError:
        return None


_REF = _ref_for_params()
METHOD_PARAMS = _method_params(_REF) if _REF else []


def _strip_backend(sig):
    # fastcore's own parameters of loop(): backend, debug
    params = [p for p in sig.parameters.values() if p.name not in ("backend", "debug")]
    return sig.replace(parameters=params)


# ---------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ASYNCORE_API)
def test_asyncore_public_name(asyncore, name):
    assert hasattr(asyncore, name)


@pytest.mark.parametrize("name", ASYNCHAT_API)
def test_asynchat_public_name(asynchat, name):
    assert hasattr(asynchat, name)


def test_asyncore_module_level_imports(asyncore):
    import errno as errno_mod
    missing = [n for n in ASYNCORE_IMPORTED if not hasattr(asyncore, n)]
    assert missing == []
    for n in ASYNCORE_IMPORTED:
        if n.startswith("E"):
            assert getattr(asyncore, n) == getattr(errno_mod, n)
    assert asyncore.errorcode is errno_mod.errorcode
    assert asyncore.socket is socket
    assert asyncore.select is select
    assert asyncore.os is os


def test_asynchat_module_level_imports(asyncore, asynchat):
    import collections
    assert asynchat.deque is collections.deque
    assert asynchat.asyncore is asyncore


def test_star_import_names(asyncore, asynchat, ref_asyncore, ref_asynchat):
    """``from asyncore import *`` gives at least what the reference gives."""
    def star(mod):
        ns = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            exec("from %s import *" % mod.__name__, ns)
        # "warn": 3.8-3.10's asynchat imported it to announce its own
        # deprecation; 3.11 (the specification) does not have it.
        return set(k for k in ns if k not in ("__builtins__", "warn"))

    missing = star(ref_asyncore) - star(asyncore)
    assert missing == set()
    missing = star(ref_asynchat) - star(asynchat)
    assert missing == set()


def test_constants(asyncore):
    assert issubclass(asyncore.ExitNow, Exception)
    assert type(asyncore.socket_map) is dict
    assert asyncore.poll3 is asyncore.poll2
    assert asyncore._reraised_exceptions == (asyncore.ExitNow, KeyboardInterrupt, SystemExit)
    assert asyncore._DISCONNECTED == frozenset({
        errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED,
        errno.EPIPE, errno.EBADF})


def test_strerror(asyncore, ref_asyncore):
    for e in (errno.EPIPE, errno.ECONNREFUSED, 0, 99999):
        assert asyncore._strerror(e) == ref_asyncore._strerror(e)


# ---------------------------------------------------------------------------
# signatures
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_signature(asyncore, ref_asyncore, name):
    got = inspect.signature(getattr(asyncore, name))
    want = inspect.signature(getattr(ref_asyncore, name))
    if name in ("poll", "poll2", "poll3") and "backend" in got.parameters:
        # an extra optional trailing ``backend`` does not break callers
        assert got.parameters["backend"].default is not inspect.Parameter.empty
        got = _strip_backend(got)
    assert got == want


def test_find_prefix_at_end_signature(asynchat, ref_asynchat):
    assert inspect.signature(asynchat.find_prefix_at_end) == \
        inspect.signature(ref_asynchat.find_prefix_at_end)


def test_loop_signature(asyncore, ref_asyncore, reference_mode):
    got = inspect.signature(asyncore.loop)
    want = inspect.signature(ref_asyncore.loop)
    if not reference_mode:
        assert "backend" in got.parameters
        p = got.parameters["backend"]
        assert p.default == "auto"
        names = list(got.parameters)
        assert p.kind == p.KEYWORD_ONLY or names.index("backend") == len(want.parameters)
    assert _strip_backend(got) == want


@pytest.mark.skipif(not METHOD_PARAMS, reason="reference modules not importable")
@pytest.mark.parametrize("modname,clsname,meth", METHOD_PARAMS,
                         ids=["%s.%s" % (c, m) for _, c, m in METHOD_PARAMS])
def test_method_signature(modules, ref_modules, modname, clsname, meth):
    idx = 0 if modname == "asyncore" else 1
    cls = getattr(modules[idx], clsname)
    ref_cls = getattr(ref_modules[idx], clsname)
    assert hasattr(cls, meth), "%s.%s missing" % (clsname, meth)
    got = inspect.signature(getattr(cls, meth))
    want = inspect.signature(getattr(ref_cls, meth))
    method = getattr(cls, meth)
    # (On PyPy a method descriptor's type is the plain function type.)
    descriptor = isinstance(method, types.MethodDescriptorType)
    if descriptor and not isinstance(method, types.FunctionType):
        # A method of the extension's core classes: the interpreter's method
        # descriptor, whose self is positional-only (it checks self's type).
        self_param = next(iter(got.parameters.values()))
        assert self_param.kind == inspect.Parameter.POSITIONAL_ONLY
        got = got.replace(parameters=[self_param.replace(
            kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)] + list(got.parameters.values())[1:])
    assert got == want


@pytest.mark.parametrize("modname,clsname", CLASSES)
def test_class_hierarchy(modules, modname, clsname):
    asyncore, asynchat = modules
    cls = getattr(asyncore if modname == "asyncore" else asynchat, clsname)
    assert isinstance(cls, type)
    if clsname in ("dispatcher_with_send", "file_dispatcher"):
        assert issubclass(cls, asyncore.dispatcher)
    if clsname == "async_chat":
        assert issubclass(cls, asyncore.dispatcher)


# ---------------------------------------------------------------------------
# defaults
# ---------------------------------------------------------------------------

def test_dispatcher_class_attributes(asyncore):
    d = asyncore.dispatcher
    assert d.debug is False
    assert d.connecting is False
    assert d.closing is False
    assert d.addr is None
    assert d.ignore_log_types == frozenset({"warning"})


def test_async_chat_class_attributes(asynchat):
    c = asynchat.async_chat
    assert c.ac_in_buffer_size == 65536
    assert c.ac_out_buffer_size == 65536
    assert c.use_encoding == 0
    assert c.encoding == "latin-1"


def test_instance_defaults(asyncore, asynchat, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    assert d.connected is False
    assert d.accepting is False
    assert d.connecting is False
    assert d.closing is False
    assert d.addr is None
    assert d.socket is None
    assert d._fileno is None
    assert d._map is sockmap
    assert d.debug is False
    assert sockmap == {}

    w = asyncore.dispatcher_with_send(map=sockmap)
    assert w.out_buffer == b""

    c = asynchat.async_chat(map=sockmap)
    assert c.ac_in_buffer == b""
    assert c.incoming == []
    assert len(c.producer_fifo) == 0
    assert not c.producer_fifo
    assert not hasattr(c, "terminator") or c.terminator is None


def test_get_terminator_unset(asynchat, sockmap):
    # the reference never sets ``terminator`` in __init__: reading it fails
    c = asynchat.async_chat(map=sockmap)
    with pytest.raises(AttributeError):
        c.get_terminator()


def test_simple_producer(asynchat):
    p = asynchat.simple_producer(b"abcdefghij", buffer_size=4)
    assert p.buffer_size == 4
    assert [p.more(), p.more(), p.more(), p.more()] == [b"abcd", b"efgh", b"ij", b""]
    p = asynchat.simple_producer(b"x" * 1000)
    assert p.buffer_size == 512
    assert len(p.more()) == 512


# ---------------------------------------------------------------------------
# compact_traceback, close_all
# ---------------------------------------------------------------------------

def _raise_value_error():
    raise ValueError("boom")


def test_compact_traceback(asyncore):
    try:
        _raise_value_error()
    except ValueError:
        (file, function, line), t, v, info = asyncore.compact_traceback()
    assert file == __file__
    assert function == "_raise_value_error"
    assert line == str(_raise_value_error.__code__.co_firstlineno + 1)
    assert t is ValueError
    assert isinstance(v, ValueError) and str(v) == "boom"
    parts = re.findall(r"\[([^|\]]*)\|([^|\]]*)\|(\d+)\]", info)
    assert [p[1] for p in parts] == ["test_compact_traceback", "_raise_value_error"]
    assert info == " ".join("[%s|%s|%s]" % p for p in parts)


def test_compact_traceback_without_exception(asyncore):
    with pytest.raises(AssertionError):
        asyncore.compact_traceback()


def _closer_class(asyncore, exc):
    class Closer(asyncore.dispatcher):
        def close(self):
            asyncore.dispatcher.close(self)
            if exc is not None:
                raise exc
    return Closer


def test_close_all(asyncore, kit, sockmap):
    pairs = [socket.socketpair() for _ in range(3)]
    ds = [kit.Dispatcher(a, map=sockmap) for a, b in pairs]
    assert len(sockmap) == 3
    asyncore.close_all(map=sockmap)
    assert sockmap == {}
    for d in ds:
        assert d.names() == ["close"]
        assert d.socket.fileno() == -1
    for _a, b in pairs:
        b.close()


def test_close_all_default_map(asyncore, kit, global_map):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a)
    assert asyncore.socket_map == {a.fileno(): d}
    asyncore.close_all()
    assert global_map == {}
    assert d.names() == ["close"]
    b.close()


def test_close_all_ebadf_ignored(asyncore, sockmap):
    cls = _closer_class(asyncore, OSError(errno.EBADF, "bad"))
    a, b = socket.socketpair()
    cls(a, map=sockmap)
    asyncore.close_all(map=sockmap)
    assert sockmap == {}
    b.close()


@pytest.mark.parametrize("exc", [OSError(errno.EPERM, "perm"), ValueError("v")],
                         ids=["OSError", "ValueError"])
def test_close_all_errors(asyncore, sockmap, exc):
    cls = _closer_class(asyncore, exc)
    a, b = socket.socketpair()
    cls(a, map=sockmap)
    with pytest.raises(type(exc)):
        asyncore.close_all(map=sockmap)
    b.close()
    a2, b2 = socket.socketpair()
    cls(a2, map=sockmap)
    asyncore.close_all(map=sockmap, ignore_all=True)
    assert sockmap == {}
    b2.close()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, "ExitNow"])
def test_close_all_reraised(asyncore, sockmap, exc):
    if exc == "ExitNow":
        exc = asyncore.ExitNow
    cls = _closer_class(asyncore, exc())
    a, b = socket.socketpair()
    cls(a, map=sockmap)
    with pytest.raises(exc):
        asyncore.close_all(map=sockmap, ignore_all=True)
    b.close()


# ---------------------------------------------------------------------------
# repr, log, log_info, default handlers
# ---------------------------------------------------------------------------

def _prefix(obj):
    return re.escape("%s.%s" % (type(obj).__module__, type(obj).__qualname__))


def _hexid(obj):
    return "%#x" % id(obj)


def test_repr_unconnected(asyncore, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    assert repr(d) == "<%s.dispatcher at %s>" % (type(d).__module__, _hexid(d))


def test_repr_listening_and_connected(asyncore, kit, sockmap):
    server = kit.EchoServer(sockmap, handler_class=kit.Dispatcher)
    assert re.match(r"^<%s listening 127\.0\.0\.1:0 at %s>$" % (_prefix(server), _hexid(server)),
                    repr(server)), repr(server)
    c = socket.create_connection(server.address)
    run_until(asyncore, sockmap, lambda: server.handlers)
    h = server.handlers[0]
    port = c.getsockname()[1]
    assert re.match(r"^<%s connected 127\.0\.0\.1:%d at %s>$" % (_prefix(h), port, _hexid(h)),
                    repr(h)), repr(h)
    c.close()


def test_repr_connecting_and_odd_addresses(asyncore, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.create_socket()
    d.addr = ("127.0.0.1", 4242)
    assert repr(d) == "<%s.dispatcher 127.0.0.1:4242 at %s>" % (type(d).__module__, _hexid(d))
    d.addr = ("::1", 4242, 0, 0)           # '%s:%d' % addr fails: repr(addr)
    assert repr(d) == "<%s.dispatcher ('::1', 4242, 0, 0) at %s>" % (type(d).__module__, _hexid(d))
    a, b = socket.socketpair()
    u = asyncore.dispatcher(a, map=sockmap)   # AF_UNIX peer name is ''
    assert repr(u) == "<%s.dispatcher connected '' at %s>" % (type(u).__module__, _hexid(u))
    b.close()


def test_log(asyncore, capsys, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.log("hello")
    d.log(42)
    out, err = capsys.readouterr()
    assert err == "log: hello\nlog: 42\n"
    assert out == ""


def test_log_info(asyncore, capsys, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.log_info("msg")
    d.log_info("bad", "error")
    d.log_info("quiet", "warning")
    out, err = capsys.readouterr()
    assert out == "info: msg\nerror: bad\n"
    assert err == ""
    d.ignore_log_types = frozenset({"info"})
    d.log_info("msg")
    d.log_info("loud", "warning")
    out, _ = capsys.readouterr()
    assert out == "warning: loud\n"


@pytest.mark.parametrize("handler,message", [
    ("handle_read", "unhandled read event"),
    ("handle_write", "unhandled write event"),
    ("handle_connect", "unhandled connect event"),
    ("handle_expt", "unhandled incoming priority event"),
])
def test_default_handlers_log_warnings(asyncore, capsys, sockmap, handler, message):
    d = asyncore.dispatcher(map=sockmap)
    getattr(d, handler)()
    assert capsys.readouterr().out == ""          # 'warning' is ignored by default
    d.ignore_log_types = frozenset()
    getattr(d, handler)()
    assert capsys.readouterr().out == "warning: %s\n" % message


def test_default_handle_accepted_closes_socket(asyncore, capsys, sockmap):
    d = asyncore.dispatcher(map=sockmap)
    d.ignore_log_types = frozenset()
    a, b = socket.socketpair()
    d.handle_accepted(a, "addr")
    assert a.fileno() == -1
    assert capsys.readouterr().out == "warning: unhandled accepted event\n"
    b.close()


def test_default_handle_close_closes(asyncore, capsys, sockmap):
    a, b = socket.socketpair()
    d = asyncore.dispatcher(a, map=sockmap)
    d.ignore_log_types = frozenset()
    d.handle_close()
    assert capsys.readouterr().out == "warning: unhandled close event\n"
    assert sockmap == {}
    assert a.fileno() == -1
    assert d.connected is False
    b.close()


def test_default_handle_error(asyncore, capsys, sockmap):
    a, b = socket.socketpair()
    d = asyncore.dispatcher(a, map=sockmap)
    before = repr(d)
    try:
        _raise_value_error()
    except ValueError:
        d.handle_error()
    out = capsys.readouterr().out
    assert out.startswith("error: uncaptured python exception, closing channel %s (" % before)
    assert "<class 'ValueError'>:boom" in out
    assert "|_raise_value_error|" in out
    assert sockmap == {}
    assert a.fileno() == -1
    b.close()


def test_handle_error_with_failing_repr(asyncore, capsys, sockmap):
    class BadRepr(asyncore.dispatcher):
        def __repr__(self):
            raise RuntimeError("no repr")

    d = BadRepr(map=sockmap)
    try:
        _raise_value_error()
    except ValueError:
        d.handle_error()
    out = capsys.readouterr().out
    assert "<__repr__(self) failed for object at %0x>" % id(d) in out


# ---------------------------------------------------------------------------
# deprecated attribute delegation to the socket (fastcore extension)
# ---------------------------------------------------------------------------

@pytest.mark.fastcore_only
def test_getattr_delegates_to_socket(asyncore, sockmap):
    a, b = socket.socketpair()
    d = asyncore.dispatcher(a, map=sockmap)
    with pytest.warns(DeprecationWarning) as rec:
        family = d.family
    assert family == a.family
    assert any("socket.family" in str(w.message) for w in rec)
    with pytest.warns(DeprecationWarning):
        assert d.getsockname() == a.getsockname()
    with pytest.raises(AttributeError):
        _ = d.no_such_attribute_anywhere
    b.close()


@pytest.mark.fastcore_only
def test_getattr_without_socket_no_recursion(asyncore, sockmap):
    d = asyncore.dispatcher(map=sockmap)          # socket is None
    with pytest.raises(AttributeError):
        _ = d.family
    raw = asyncore.dispatcher.__new__(asyncore.dispatcher)   # __init__ never ran
    with pytest.raises(AttributeError):
        _ = raw.family
    with pytest.raises(AttributeError):
        _ = raw.socket


# ---------------------------------------------------------------------------
# subclass overrides are honoured
# ---------------------------------------------------------------------------

def test_override_add_channel(asyncore, sockmap):
    calls = []

    class D(asyncore.dispatcher):
        def add_channel(self, map=None):
            calls.append(map)
            asyncore.dispatcher.add_channel(self, map)

    d = D(map=sockmap)
    d.create_socket()
    assert calls == [None]
    assert sockmap == {d._fileno: d}
    a, b = socket.socketpair()
    D(a, map=sockmap)
    assert calls == [None, sockmap]
    b.close()


def test_override_add_channel_not_adding(asyncore, sockmap, kit):
    class D(kit.Dispatcher):
        def add_channel(self, map=None):
            pass

    a, b = socket.socketpair()
    d = D(a, map=sockmap)
    assert sockmap == {}
    b.send(b"x")
    asyncore.loop(timeout=0.01, map=sockmap, count=3)
    assert d.names() == []
    a.close()
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_override_del_channel(asyncore, kit, sockmap, use_poll):
    calls = []

    class D(kit.Reader):
        def del_channel(self, map=None):
            calls.append(map)
            kit.Reader.del_channel(self, map)

    a, b = socket.socketpair()
    d = D(a, map=sockmap)
    b.close()
    run_until(asyncore, sockmap, lambda: not sockmap, use_poll=use_poll)
    # (the reference may close twice with use_poll: POLLHUP after the b'' read)
    assert calls and set(calls) == {None}
    assert d.names()[:3] == ["handle_read", "handle_close", "close"]


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_override_readable(asyncore, kit, sockmap, use_poll):
    class D(kit.Reader):
        ok = False

        def readable(self):
            return self.ok

    a, b = socket.socketpair()
    d = D(a, map=sockmap)
    b.send(b"data")
    run_iterations(asyncore, sockmap, 5, use_poll=use_poll)
    assert d.names() == []
    d.ok = True
    run_until(asyncore, sockmap, lambda: d.data == b"data", use_poll=use_poll)
    d.ok = False
    b.send(b"more")
    run_iterations(asyncore, sockmap, 5, use_poll=use_poll)
    assert d.data == b"data"
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_override_writable(asyncore, kit, sockmap, use_poll):
    class D(kit.Dispatcher):
        ok = False

        def writable(self):
            return self.ok

    a, b = socket.socketpair()
    d = D(a, map=sockmap)
    run_iterations(asyncore, sockmap, 5, use_poll=use_poll)
    assert d.names() == []
    d.ok = True
    run_until(asyncore, sockmap, lambda: d.count("handle_write") >= 3, use_poll=use_poll)
    d.ok = False
    n = d.count("handle_write")
    run_iterations(asyncore, sockmap, 5, use_poll=use_poll)
    assert d.count("handle_write") == n
    b.close()


def test_override_readable_writable_on_instance(asyncore, kit, sockmap):
    a, b = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    d.writable = lambda: False
    d.readable = lambda: False
    b.send(b"x")
    run_iterations(asyncore, sockmap, 5)
    assert d.names() == []
    del d.writable
    run_until(asyncore, sockmap, lambda: d.count("handle_write") >= 2)
    assert "handle_read" not in d.names()
    b.close()


def test_override_initiate_send_with_send(asyncore, sockmap):
    calls = []

    class D(asyncore.dispatcher_with_send):
        def initiate_send(self):
            calls.append(bytes(self.out_buffer))
            asyncore.dispatcher_with_send.initiate_send(self)

    a, b = socket.socketpair()
    d = D(a, map=sockmap)
    d.send(b"abc")
    assert calls == [b"abc"]
    assert support.recv_exactly(b, 3) == b"abc"
    d.out_buffer = b"xyz"
    run_until(asyncore, sockmap, lambda: len(calls) == 2)
    assert calls[1] == b"xyz"
    assert support.recv_exactly(b, 3) == b"xyz"
    b.close()


def test_override_initiate_send_chat(asyncore, asynchat, sockmap):
    calls = []

    class C(asynchat.async_chat):
        def initiate_send(self):
            calls.append(len(self.producer_fifo))
            if len(calls) > 1:       # the first one (from push) does nothing
                asynchat.async_chat.initiate_send(self)

    a, b = socket.socketpair()
    c = C(a, map=sockmap)
    c.push(b"hello")
    assert calls == [1]
    run_until(asyncore, sockmap, lambda: len(calls) >= 2)
    assert support.recv_exactly(b, 5) == b"hello"
    b.close()


def test_override_handle_read_chat(asyncore, asynchat, sockmap):
    got = []

    class C(asynchat.async_chat):
        def handle_read(self):
            got.append(self.recv(100))

        def found_terminator(self):
            raise AssertionError("the override replaces the chat's reading")

    a, b = socket.socketpair()
    c = C(a, map=sockmap)
    c.set_terminator(b"\n")
    b.send(b"line\n")
    run_until(asyncore, sockmap, lambda: got)
    assert got == [b"line\n"]
    assert c.ac_in_buffer == b""
    b.close()


def test_override_send_chat(asyncore, asynchat, sockmap):
    sent = []

    class C(asynchat.async_chat):
        ac_out_buffer_size = 4

        def send(self, data):
            sent.append(bytes(data))
            return asynchat.async_chat.send(self, data)

    a, b = socket.socketpair()
    c = C(a, map=sockmap)
    c.push(b"0123456789")
    run_until(asyncore, sockmap, lambda: not c.producer_fifo)
    assert sent == [b"0123", b"4567", b"89"]
    assert support.recv_exactly(b, 10) == b"0123456789"
    b.close()


def test_override_recv_chat(asyncore, asynchat, sockmap):
    class C(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map)
            self.lines = []
            self.buf = []
            self.set_terminator(b"\n")

        def recv(self, n):
            return asynchat.async_chat.recv(self, n).upper()

        def collect_incoming_data(self, data):
            self.buf.append(data)

        def found_terminator(self):
            self.lines.append(b"".join(self.buf))
            self.buf = []

    a, b = socket.socketpair()
    c = C(a, map=sockmap)
    b.send(b"abc\ndef\n")
    run_until(asyncore, sockmap, lambda: len(c.lines) == 2)
    assert c.lines == [b"ABC", b"DEF"]
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_override_close(asyncore, asynchat, sockmap, use_poll):
    closes = []

    class C(asynchat.async_chat):
        def close(self):
            closes.append(self)
            asynchat.async_chat.close(self)

    a, b = socket.socketpair()
    c = C(a, map=sockmap)
    c.push(b"bye")
    c.close_when_done()
    run_until(asyncore, sockmap, lambda: closes, use_poll=use_poll)
    assert closes == [c]
    assert sockmap == {}
    assert support.recv_exactly(b, 10) == b"bye"
    b.close()


def test_close_all_calls_close_override(asyncore, sockmap):
    closes = []

    class D(asyncore.dispatcher):
        def close(self):
            closes.append(self)
            asyncore.dispatcher.close(self)

    a, b = socket.socketpair()
    d = D(a, map=sockmap)
    asyncore.close_all(map=sockmap)
    assert closes == [d]
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_override_event_methods(asyncore, kit, sockmap, use_poll):
    """handle_read_event/handle_write_event/handle_expt_event overrides are
    what the loop calls (no shortcut to the base class's)."""
    calls = []

    class D(kit.Reader):
        def handle_read_event(self):
            calls.append("read_event")
            kit.Reader.handle_read_event(self)

        def handle_write_event(self):
            calls.append("write_event")
            kit.Reader.handle_write_event(self)

        def handle_expt_event(self):
            calls.append("expt_event")
            kit.Reader.handle_expt_event(self)

    a, b = support.tcp_pair()
    d = D(b, map=sockmap)
    a.send(b"data")
    run_until(asyncore, sockmap, lambda: d.data == b"data", use_poll=use_poll)
    assert calls == ["read_event"]
    d.out_buffer = b"out"
    run_until(asyncore, sockmap, lambda: "write_event" in calls, use_poll=use_poll)
    assert support.recv_exactly(a, 3) == b"out"
    a.send(b"!", socket.MSG_OOB)
    run_until(asyncore, sockmap, lambda: "expt_event" in calls, use_poll=use_poll)
    a.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_override_handle_connect_event_and_accept(asyncore, kit, sockmap, use_poll):
    calls = []

    class Server(kit.EchoServer):
        def handle_accept(self):
            calls.append("accept")
            kit.EchoServer.handle_accept(self)

    class Client(kit.Reader):
        def handle_connect_event(self):
            calls.append("connect_event")
            kit.Reader.handle_connect_event(self)

    server = Server(sockmap, handler_class=kit.Reader)
    c = Client(map=sockmap)
    c.create_socket()
    c.connect(server.address)
    run_until(asyncore, sockmap, lambda: c.connected and server.handlers, use_poll=use_poll)
    assert calls.count("accept") == 1 and calls.count("connect_event") == 1
    assert c.count("handle_connect") == 1


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("predicate", ["readable", "writable"])
@pytest.mark.parametrize("idle", [False, True], ids=["busy", "idle"])
def test_instance_predicate_set_after_registration(asyncore, kit, sockmap, use_poll, predicate,
                                                   idle):
    """readable/writable given to an instance after the dispatcher has been
    served are honoured from then on (and removing them restores the class's)."""
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    b.send(b"1")
    run_until(asyncore, sockmap, lambda: d.data == b"1", use_poll=use_poll)
    if idle:
        run_iterations(asyncore, sockmap, 3, use_poll=use_poll)   # no events for a while
    if predicate == "readable":
        d.readable = lambda: False
        b.send(b"2")
        run_iterations(asyncore, sockmap, 4, use_poll=use_poll)
        assert d.data == b"1"
        del d.readable
        run_until(asyncore, sockmap, lambda: d.data == b"12", use_poll=use_poll)
    else:
        d.writable = lambda: True
        run_until(asyncore, sockmap, lambda: d.count("handle_write") >= 2, use_poll=use_poll)
        del d.writable
        n = d.count("handle_write")
        run_iterations(asyncore, sockmap, 4, use_poll=use_poll)
        assert d.count("handle_write") == n
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("predicate", ["readable", "writable"])
@pytest.mark.parametrize("idle", [False, True], ids=["busy", "idle"])
def test_class_predicate_set_after_registration(asyncore, kit, sockmap, use_poll, predicate,
                                                idle):
    """readable/writable replaced on the class after instances were served."""
    class D(kit.Reader):
        pass

    a, b = socket.socketpair()
    d = D(a, map=sockmap)
    b.send(b"1")
    run_until(asyncore, sockmap, lambda: d.data == b"1", use_poll=use_poll)
    if idle:
        run_iterations(asyncore, sockmap, 3, use_poll=use_poll)   # no events for a while
    if predicate == "readable":
        D.readable = lambda self: False
        b.send(b"2")
        run_iterations(asyncore, sockmap, 4, use_poll=use_poll)
        assert d.data == b"1"
        del D.readable
        run_until(asyncore, sockmap, lambda: d.data == b"12", use_poll=use_poll)
    else:
        D.writable = lambda self: True
        run_until(asyncore, sockmap, lambda: d.count("handle_write") >= 2, use_poll=use_poll)
        del D.writable
        n = d.count("handle_write")
        run_iterations(asyncore, sockmap, 4, use_poll=use_poll)
        assert d.count("handle_write") == n
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("where", ["instance", "class"])
def test_handlers_replaced_after_registration(asyncore, kit, sockmap, use_poll, where):
    """handle_read/handle_write given to an instance or its class after the
    dispatcher has been served are the ones the loop calls from then on."""
    class D(kit.Reader):
        pass

    a, b = socket.socketpair()
    d = D(a, map=sockmap)
    b.send(b"1")
    run_until(asyncore, sockmap, lambda: d.data == b"1", use_poll=use_poll)
    seen = []

    def my_read(self=d):
        seen.append(("read", self.recv(10)))

    def my_write(self=d):
        seen.append(("write",))
        self.out_buffer = b""

    if where == "instance":
        d.handle_read = my_read
        d.handle_write = my_write
    else:
        D.handle_read = lambda self: my_read(self)
        D.handle_write = lambda self: my_write(self)
    b.send(b"2")
    run_until(asyncore, sockmap, lambda: ("read", b"2") in seen, use_poll=use_poll)
    d.out_buffer = b"pending"
    run_until(asyncore, sockmap, lambda: ("write",) in seen, use_poll=use_poll)
    assert d.data == b"1"
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("where", ["instance", "class"])
@pytest.mark.parametrize("idle", [False, True], ids=["busy", "idle"])
@pytest.mark.parametrize("method", ["recv", "send", "initiate_send"])
def test_chat_io_method_replaced_after_registration(asyncore, asynchat, kit, sockmap, use_poll,
                                                    where, idle, method):
    """recv/send/initiate_send of a chat replaced (on the instance or the
    class) after it has been served are the ones used from then on."""
    class C(kit.Chat):
        pass

    a, b = socket.socketpair()
    c = C(a, map=sockmap)
    reader = support.PeerReader(b)
    b.send(b"first\n")
    c.push(b"out1;")
    run_until(asyncore, sockmap, lambda: c.lines == [b"first"] and reader.has(5),
              use_poll=use_poll)
    if idle:
        run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    calls = []
    base = asynchat.async_chat

    def my_recv(self, n):
        calls.append("recv")
        return base.recv(self, n).upper()

    def my_send(self, data):
        calls.append("send")
        return base.send(self, bytes(data).replace(b"o", b"0"))

    def my_initiate_send(self):
        calls.append("initiate_send")
        base.initiate_send(self)

    replacement = {"recv": my_recv, "send": my_send, "initiate_send": my_initiate_send}[method]
    if where == "instance":
        setattr(c, method, replacement.__get__(c))
    else:
        setattr(C, method, replacement)
    b.send(b"second\n")
    c.connected = False                      # queue the push, send it from the loop
    c.push(b"out2;")
    c.connected = True
    run_until(asyncore, sockmap, lambda: len(c.lines) == 2 and reader.has(10),
              use_poll=use_poll)
    assert c.lines[1] == (b"SECOND" if method == "recv" else b"second")
    assert bytes(reader.buf) == (b"out1;0ut2;" if method == "send" else b"out1;out2;")
    assert method in calls
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("where", ["instance", "class"])
@pytest.mark.parametrize("when", ["before", "after"], ids=["at-init", "after-serving"])
def test_chat_handlers_replaced(asyncore, asynchat, kit, sockmap, use_poll, where, when):
    """A chat's handle_read/handle_write given to the instance or the class
    (at construction or after serving) are the ones the loop calls."""
    class C(kit.Chat):
        pass

    seen = []

    def my_read(self):
        seen.append("read")
        asynchat.async_chat.handle_read(self)

    def my_write(self):
        seen.append("write")
        asynchat.async_chat.handle_write(self)

    def install(c):
        if where == "instance":
            c.handle_read = my_read.__get__(c)
            c.handle_write = my_write.__get__(c)
        else:
            C.handle_read, C.handle_write = my_read, my_write

    a, b = socket.socketpair()
    c = C(a, map=sockmap)
    if when == "before":
        install(c)
    else:
        b.send(b"warm up\n")
        run_until(asyncore, sockmap, lambda: c.lines, use_poll=use_poll)
        install(c)
    b.send(b"line\n")
    run_until(asyncore, sockmap, lambda: c.lines[-1:] == [b"line"], use_poll=use_poll)
    c.connected = False
    c.push(b"queued")
    c.connected = True
    assert pump(asyncore, sockmap, support.PeerReader(b), 6, use_poll=use_poll) == b"queued"
    assert ("read" in seen, "write" in seen) == (True, True)
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("where", ["instance", "class"])
def test_with_send_initiate_send_replaced(asyncore, kit, sockmap, use_poll, where):
    """dispatcher_with_send: an initiate_send given to the instance or the
    class is what handle_write (called by the loop) uses."""
    class W(asyncore.dispatcher_with_send):
        pass

    calls = []

    def my_initiate_send(self):
        calls.append(len(self.out_buffer))
        asyncore.dispatcher_with_send.initiate_send(self)

    a, b = socket.socketpair()
    w = W(a, map=sockmap)
    if where == "instance":
        w.initiate_send = my_initiate_send.__get__(w)
    else:
        W.initiate_send = my_initiate_send
    w.out_buffer = b"pending"
    assert pump(asyncore, sockmap, support.PeerReader(b), 7, use_poll=use_poll) == b"pending"
    assert calls and calls[0] == 7
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("base", ["dispatcher_with_send", "async_chat"])
def test_instance_handle_close_and_error(asyncore, asynchat, sockmap, use_poll, base):
    """handle_close/handle_error/readable given to an instance are used."""
    cls = asyncore.dispatcher_with_send if base == "dispatcher_with_send" else asynchat.async_chat
    seen = []

    def make(sock):
        d = cls(sock, map=sockmap)
        if base == "async_chat":
            d.set_terminator(b"\n")
            d.collect_incoming_data = lambda data: None
            d.found_terminator = lambda: None
        else:
            d.handle_read = lambda: d.recv(100)
        return d

    # handle_close on the instance, reached through a b'' read
    a, b = socket.socketpair()
    d = make(a)
    d.handle_close = lambda: (seen.append("close"), d.close())
    b.close()
    run_until(asyncore, sockmap, lambda: "close" in seen, use_poll=use_poll)
    assert sockmap == {}
    del seen[:]

    # handle_error on the instance, reached through a failing recv
    a, b = socket.socketpair()
    d = make(a)

    def bad(*args):
        raise ValueError("bad")

    if base == "dispatcher_with_send":
        d.handle_read = bad
    else:
        d.collect_incoming_data = bad
    d.handle_error = lambda: (seen.append(("error", sys.exc_info()[0])), d.close())
    b.send(b"x\n")
    run_until(asyncore, sockmap, lambda: seen, use_poll=use_poll)
    assert seen[0] == ("error", ValueError)

    # readable on the instance, set before the first iteration
    a, b = socket.socketpair()
    d = make(a)
    d.readable = lambda: False
    b.send(b"y\n")
    run_iterations(asyncore, sockmap, 4, use_poll=use_poll)
    assert not support.consumed(d)            # nothing was read
    b.close()


# ---------------------------------------------------------------------------
# attributes on instances and classes
# ---------------------------------------------------------------------------

def test_arbitrary_attributes(asyncore, asynchat, sockmap):
    for cls in (asyncore.dispatcher, asyncore.dispatcher_with_send, asynchat.async_chat):
        class S(cls):
            custom_class_attr = "c"

        s = S(map=sockmap)
        s.anything = 42
        s.terminator_like = b"x"
        assert s.anything == 42
        assert s.custom_class_attr == "c"
        S.added_later = [1]
        assert s.added_later == [1]
        s.custom_class_attr = "i"
        assert s.custom_class_attr == "i" and S.custom_class_attr == "c"
        del s.custom_class_attr
        assert s.custom_class_attr == "c"
        assert "anything" in vars(s)


def test_debug_class_attribute_on_subclass(asyncore, capsys, sockmap):
    class Loud(asyncore.dispatcher_with_send):
        debug = True

    a, b = socket.socketpair()
    d = Loud(a, map=sockmap)
    assert d.debug is True
    d.send(b"x")
    assert capsys.readouterr().out == "info: sending %r\n" % (b"x",)
    Loud.debug = False
    d.send(b"y")
    assert capsys.readouterr().out == ""
    assert support.recv_exactly(b, 2) == b"xy"
    b.close()


def test_chat_buffer_sizes_as_class_attributes(asyncore, asynchat, sockmap):
    class Small(asynchat.async_chat):
        ac_in_buffer_size = 3
        ac_out_buffer_size = 5

        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map)
            self.chunks = []
            self.set_terminator(None)

        def collect_incoming_data(self, data):
            self.chunks.append(bytes(data))

    a, b = socket.socketpair()
    c = Small(a, map=sockmap)
    b.send(b"abcdefgh")
    run_until(asyncore, sockmap, lambda: sum(map(len, c.chunks)) == 8)
    assert c.chunks == [b"abc", b"def", b"gh"]
    c.push(b"x" * 12)
    assert [len(x) for x in c.producer_fifo] in ([5, 2], [5, 5, 2])  # the first may be sent
    run_until(asyncore, sockmap, lambda: not c.producer_fifo)
    assert support.recv_exactly(b, 12) == b"x" * 12
    b.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_connected_class_attribute(asyncore, kit, sockmap, use_poll):
    class AlwaysConnected(kit.Reader):
        connected = True

    plain = kit.Reader(map=sockmap)
    assert plain.connected is False
    s = AlwaysConnected(map=sockmap)
    assert s.connected is True
    assert "connected" in repr(s)
    a, b = socket.socketpair()
    a2, b2 = socket.socketpair()
    s.set_socket(a)
    plain.set_socket(a2)
    # dispatcher_with_send is writable when not connected: ``plain`` gets
    # write events (and a connect-less handle_write), ``s`` does not
    run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    assert s.names() == []
    assert plain.count("handle_write") == 3
    s.connected = False
    run_iterations(asyncore, sockmap, 2, use_poll=use_poll)
    assert s.count("handle_write") == 2
    b.close()
    b2.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_accepting_class_attribute(asyncore, kit, sockmap, use_poll):
    class Acceptor(kit.Dispatcher):
        accepting = True

    s = Acceptor(map=sockmap)
    assert s.accepting is True
    s.addr = (LOCALHOST, 1)
    assert " listening 127.0.0.1:1 " in repr(s)
    a, b = socket.socketpair()
    s.set_socket(a)
    run_iterations(asyncore, sockmap, 3, use_poll=use_poll)
    assert s.names() == []        # accepting sockets never get write events
    b.close()


# ---------------------------------------------------------------------------
# file_wrapper / file_dispatcher
# ---------------------------------------------------------------------------

needs_posix = pytest.mark.skipif(os.name != "posix", reason="file_dispatcher is POSIX only")


@needs_posix
def test_file_wrapper(asyncore):
    r, w = os.pipe()
    try:
        fw = asyncore.file_wrapper(w)
        assert fw.fileno() != w and fw.fd == fw.fileno()
        assert fw.send(b"abc") == 3
        assert fw.write(b"de") == 2
        fr = asyncore.file_wrapper(r)
        assert fr.recv(10) == b"abcde"
        os.write(w, b"xyz")
        assert fr.read(2) == b"xy"
        assert fr.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        with pytest.raises(NotImplementedError):
            fr.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        with pytest.raises(NotImplementedError):
            fr.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR, 4)
        dup = fr.fd
        fr.close()
        assert fr.fd == -1 and fr.fileno() == -1
        assert not support.fd_is_open(dup)
        fr.close()                       # idempotent
        fw.close()
        fw.close()
        assert support.fd_is_open(r) and support.fd_is_open(w)   # originals untouched
    finally:
        os.close(r)
        os.close(w)


@needs_posix
def test_file_wrapper_resource_warning(asyncore):
    r, w = os.pipe()
    try:
        fw = asyncore.file_wrapper(r)
        dup = fw.fd
        with pytest.warns(ResourceWarning, match="unclosed file"):
            del fw
            gc.collect()
        assert not support.fd_is_open(dup)
    finally:
        os.close(r)
        os.close(w)


@needs_posix
@pytest.mark.parametrize("use_poll", USE_POLL)
def test_file_dispatcher_reads_pipe(asyncore, sockmap, use_poll):
    class Reader(asyncore.file_dispatcher):
        def __init__(self, fd, map):
            asyncore.file_dispatcher.__init__(self, fd, map)
            self.data = b""
            self.closed_count = 0

        def handle_read(self):
            self.data += self.recv(1024)

        def writable(self):
            return False

        def handle_close(self):
            self.closed_count += 1
            self.close()

    r, w = os.pipe()
    d = Reader(r, sockmap)
    assert d.connected is True
    assert os.get_blocking(r) is False
    assert d._fileno != r and sockmap == {d._fileno: d}
    os.write(w, b"hello")
    run_until(asyncore, sockmap, lambda: d.data == b"hello", use_poll=use_poll)
    os.close(w)
    run_until(asyncore, sockmap, lambda: not sockmap, use_poll=use_poll)
    assert d.closed_count >= 1
    assert support.fd_is_open(r)
    os.close(r)


@needs_posix
def test_file_dispatcher_file_object_and_send(asyncore, sockmap):
    r, w = os.pipe()
    with os.fdopen(w, "wb", buffering=0) as wf:
        d = asyncore.file_dispatcher(wf, map=sockmap)
        assert d.send(b"through the pipe") == 16
        assert os.read(r, 100) == b"through the pipe"
        d.close()
        d.close()
        assert sockmap == {}
    os.close(r)


# ---------------------------------------------------------------------------
# fastcore.install() and unmodified programs
# ---------------------------------------------------------------------------

PROGRAM = textwrap.dedent(r'''
    import asyncore, asynchat, socket, sys

    class Echo(asynchat.async_chat):
        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock)
            self.buf = []
            self.set_terminator(b"\r\n")
        def collect_incoming_data(self, data):
            self.buf.append(data)
        def found_terminator(self):
            line = b"".join(self.buf); self.buf = []
            if line == b"QUIT":
                self.push(b"BYE\r\n"); self.close_when_done()
            else:
                self.push(line.upper() + b"\r\n")

    class Server(asyncore.dispatcher):
        def __init__(self):
            asyncore.dispatcher.__init__(self)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(5)
        def handle_accepted(self, sock, addr):
            Echo(sock)

    class Client(asynchat.async_chat):
        def __init__(self, addr):
            asynchat.async_chat.__init__(self)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.connect(addr)
            self.buf = []
            self.got = []
            self.set_terminator(b"\r\n")
        def handle_connect(self):
            for word in (b"hello", b"world", b"QUIT"):
                self.push(word + b"\r\n")
        def collect_incoming_data(self, data):
            self.buf.append(data)
        def found_terminator(self):
            self.got.append(b"".join(self.buf).decode()); self.buf = []
        def handle_close(self):
            self.close()
            server.close()

    server = Server()
    client = Client(server.socket.getsockname())
    asyncore.loop(timeout=0.05)
    print(asyncore.__name__, asynchat.__name__)
    print(" ".join(client.got))
''')


def _python(args, timeout=60):
    return support.run_python(args, timeout=timeout)


def test_small_program_on_reference(tmp_path, ref_modules):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    r = _python(["-W", "ignore::DeprecationWarning", str(script)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["asyncore asynchat", "HELLO WORLD BYE"]


@pytest.mark.fastcore_only
def test_install_replaces_modules(fastcore_pkg):
    code = ("import sys, fastcore\n"
            "fastcore.install()\n"
            "import asyncore, asynchat\n"
            "assert asyncore is fastcore.asyncore, asyncore\n"
            "assert asynchat is fastcore.asynchat, asynchat\n"
            "assert sys.modules['asyncore'] is fastcore.asyncore\n"
            "assert asynchat.async_chat.__mro__[1:].count(asyncore.dispatcher) == 1\n"
            "print('ok')\n")
    r = _python(["-c", code])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


@pytest.mark.fastcore_only
def test_install_runs_unmodified_program(tmp_path, fastcore_pkg):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    runner = ("import sys, runpy, fastcore\n"
              "fastcore.install()\n"
              "runpy.run_path(sys.argv[1], run_name='__main__')\n")
    r = _python(["-c", runner, str(script)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["fastcore.asyncore fastcore.asynchat", "HELLO WORLD BYE"]
