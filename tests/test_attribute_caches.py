"""Handler code reads and writes a dispatcher's own attributes through the
interpreter's specialised LOAD_ATTR/STORE_ATTR, as it does on the reference's
plain classes; and the loop still hears of the assignments that matter to it.

CPython 3.12+ specialises attribute access on instances of classes with a
managed ``__dict__`` (and a ``__getattr__``, which the socket delegation
needs). 3.11's specialiser refuses every class with a ``__getattr__``, and
3.8-3.10 have none, so there is nothing to check there. Stores specialise
only without a ``__setattr__``: on the extension, where dict watchers (3.12+)
tell the loop of assignments instead.
"""

import dis
import gc
import socket
import sys
import weakref

import pytest
from support import run_iterations, run_until

specialising = pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="3.11 does not specialise attribute access on classes with __getattr__; "
           "3.8-3.10 do not specialise at all")

SPECIALISED_LOADS = {"LOAD_ATTR_INSTANCE_VALUE", "LOAD_ATTR_WITH_HINT"}
SPECIALISED_STORES = {"STORE_ATTR_INSTANCE_VALUE", "STORE_ATTR_WITH_HINT"}

# Compiled afresh for each test: a code object's specialisations are shared by
# every call, whatever the class of the object passed in.
HANDLER_SOURCE = """
def read_parts(handler):
    return handler.parts

def reset_parts(handler):
    handler.parts = []
"""


def _attribute_ops(obj, label, function, prefix):
    namespace = {}
    exec(compile(HANDLER_SOURCE, "<handler %s>" % label, "exec"), namespace)
    code = namespace[function]
    for _ in range(100):   # past the interpreter's warm-up
        code(obj)
    return [ins.opname for ins in dis.get_instructions(code, adaptive=True)
            if ins.opname.startswith(prefix)]


def _make_handler(asyncore, asynchat, base_name):
    base = getattr(asynchat if base_name == "async_chat" else asyncore, base_name)

    class Handler(base):
        def __init__(self, sock, map):
            super().__init__(sock, map=map)
            self.parts = []

    return Handler


def _watchers(asyncore):
    """True where the loop hears of assignments through dict watchers."""
    from fastcore._impl import core
    return (asyncore.__name__ == "fastcore.asyncore" and core.__name__ == "fastcore._core_c"
            and core.DISPATCHER_BASE is core.DispatcherBase)


@specialising
@pytest.mark.parametrize("base_name", ["dispatcher", "dispatcher_with_send", "async_chat"])
@pytest.mark.parametrize("function, prefix, specialised", [
    ("read_parts", "LOAD_ATTR", SPECIALISED_LOADS),
    ("reset_parts", "STORE_ATTR", SPECIALISED_STORES),
], ids=["load", "store"])
def test_instance_attribute_access_is_specialised(asyncore, asynchat, sockmap, base_name,
                                                  function, prefix, specialised):
    if (prefix == "STORE_ATTR" and asyncore.__name__ == "fastcore.asyncore"
            and not _watchers(asyncore)):
        pytest.skip("the pure core hears of assignments through __setattr__")
    a, b = socket.socketpair()
    try:
        handler = _make_handler(asyncore, asynchat, base_name)(a, sockmap)
        ops = _attribute_ops(handler, base_name + " " + prefix, function, prefix)
        assert ops and set(ops) <= specialised, ops
        handler.close()
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_instance_handler_deleted_restores_the_class_handler(asyncore, kit, sockmap,
                                                             use_poll):
    """After ``del d.handle_read`` the class's handle_read is called again
    (the core's own, which it calls without a Python call)."""
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    seen = []
    d.handle_read = lambda: seen.append(d.recv(10))
    b.send(b"1")
    run_until(asyncore, sockmap, lambda: seen == [b"1"], use_poll=use_poll)
    del d.handle_read
    b.send(b"2")
    run_until(asyncore, sockmap, lambda: d.data.endswith(b"2"), use_poll=use_poll)
    assert seen == [b"1"]
    assert "handle_read" not in vars(d)
    b.close()


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_predicate_put_in_the_instance_dict_is_honoured(asyncore, kit, sockmap, use_poll):
    """readable put straight into ``vars(d)`` (no attribute assignment) is
    honoured, as on the reference, which asks readable() every iteration."""
    if asyncore.__name__ == "fastcore.asyncore" and not _watchers(asyncore):
        pytest.skip("without dict watchers the loop hears only of attribute assignments")
    a, b = socket.socketpair()
    d = kit.Reader(a, map=sockmap)
    b.send(b"1")
    run_until(asyncore, sockmap, lambda: d.data == b"1", use_poll=use_poll)
    vars(d)["readable"] = lambda: False
    b.send(b"2")
    run_iterations(asyncore, sockmap, 4, use_poll=use_poll)
    assert d.data == b"1"
    vars(d).pop("readable")
    run_until(asyncore, sockmap, lambda: d.data == b"12", use_poll=use_poll)
    b.close()


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
def test_instance_dict_replaced_before_registration(asyncore, kit, sockmap, use_poll):
    """A dict given to the instance as a whole before set_socket is looked
    through, and assignments to the instance after it are heard of."""
    a, b = socket.socketpair()
    d = kit.Reader(map=sockmap)
    d.__dict__ = dict(d.__dict__, readable=lambda: False)
    d.set_socket(a, map=sockmap)
    d.connected = True
    b.send(b"1")
    run_iterations(asyncore, sockmap, 4, use_poll=use_poll)
    assert d.data == b""
    d.readable = lambda: True
    run_until(asyncore, sockmap, lambda: d.data == b"1", use_poll=use_poll)
    b.close()


def _chat_pair(sockmap, cls):
    a, b = socket.socketpair()
    return cls(a, sockmap), b


def test_getattr_of_a_subclass_supplies_what_the_loop_reads(asyncore, asynchat, sockmap):
    """The loop reads the terminator (and the other settings) as an attribute
    lookup would: a subclass's __getattr__ supplies a missing one."""
    class Chat(asynchat.async_chat):
        def __init__(self, sock, map):
            super().__init__(sock, map=map)
            self.lines = []
            self.parts = []
            self.asked = 0

        def __getattr__(self, name):
            if name == "terminator":
                self.asked += 1
                return b";"
            raise AttributeError(name)

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            self.lines.append(b"".join(self.parts))
            self.parts = []

    chat, peer = _chat_pair(sockmap, Chat)
    try:
        assert "terminator" not in vars(chat)
        peer.sendall(b"one;two;")
        run_until(asyncore, sockmap, lambda: chat.lines == [b"one", b"two"])
        assert chat.asked >= 2
    finally:
        peer.close()


def test_getattribute_of_a_subclass_sees_what_the_loop_reads(asyncore, asynchat, sockmap):
    """A subclass's __getattribute__ sees the loop's reads of its settings
    and handlers, and what it returns is what the loop uses."""
    class Chat(asynchat.async_chat):
        def __init__(self, sock, map):
            super().__init__(sock, map=map)
            self.set_terminator(b"\n")
            self.lines = []
            self.seen = set()

        def __getattribute__(self, name):
            object.__getattribute__(self, "__dict__").setdefault("seen", set()).add(name)
            if name == "ac_in_buffer_size":
                return 4    # reads of at most 4 bytes
            return object.__getattribute__(self, name)

        def collect_incoming_data(self, data):
            self.lines.append(bytes(data))

        def found_terminator(self):
            self.lines.append(b"|")

    chat, peer = _chat_pair(sockmap, Chat)
    try:
        peer.sendall(b"abcdefghij\n")
        run_until(asyncore, sockmap, lambda: chat.lines[-1:] == [b"|"])
        assert {"ac_in_buffer_size", "collect_incoming_data", "found_terminator"} <= chat.seen
        assert max(len(part) for part in chat.lines) <= 4
    finally:
        peer.close()


# -- what the core reads for every message, changed after it was first read --
#
# The extension keeps these values between reads on 3.12+ (attribute_cache.pxi);
# every way of changing one must be seen at the next read, as on the
# reference, which looks them up every time.

class RecordingSocket(socket.socket):
    """Records the sizes the dispatcher asks recv() and send() for."""

    def __init__(self, sock):
        super().__init__(sock.family, sock.type, sock.proto, sock.detach())
        self.recv_sizes = []
        self.send_sizes = []

    def recv(self, size, *flags):
        self.recv_sizes.append(size)
        return super().recv(size, *flags)

    def send(self, data, *flags):
        self.send_sizes.append(len(data))
        return super().send(data, *flags)


def _found_line(self):
    self.lines.append(b"".join(self.parts))
    self.parts = []


def _found_marker(self):
    self.lines.append(b"NEW")
    self.parts = []


def _collect(self, data):
    self.parts.append(data)


def _collect_elsewhere(self, data):
    self.other.append(data)


def _after_terminator(chat, sock, peer, run):
    feed_lines(peer, run, chat, b"a;b;", 3)
    assert chat.lines[1:] == [b"a", b"b"]


def _after_found_terminator(chat, sock, peer, run):
    feed_lines(peer, run, chat, b"x\n", 2)
    assert chat.lines[1:] == [b"NEW"]


def _after_collect(chat, sock, peer, run):
    feed_lines(peer, run, chat, b"x\n", 2)
    assert chat.other == [b"x"] and chat.lines[1:] == [b""]


def _after_in_size(chat, sock, peer, run):
    feed_lines(peer, run, chat, b"abcdefg\n", 2)
    assert chat.lines[1:] == [b"abcdefg"]
    assert set(sock.recv_sizes[1:]) == {3}


def _after_out_size(chat, sock, peer, run):
    pushed = len(sock.send_sizes)
    push_and_receive(chat, peer, run, b"hello")
    assert max(sock.send_sizes[pushed:]) == 2


def push_and_receive(chat, peer, run, data):
    chat.push(data)
    receive(peer, run, data)


def receive(peer, run, data):
    """Runs the loop until the non-blocking peer has read len(data) bytes: data."""
    received = bytearray()

    def arrived():
        try:
            received.extend(peer.recv(100))
        except BlockingIOError:
            pass
        return len(received) >= len(data)

    run(arrived)
    assert received == data


# name -> (the value first read, the new value, how the change shows). A
# method's values are functions of the instance, as a class holds them.
KEPT_ATTRIBUTES = {
    "terminator": (b"\n", b";", _after_terminator),
    "found_terminator": (_found_line, _found_marker, _after_found_terminator),
    "collect_incoming_data": (_collect, _collect_elsewhere, _after_collect),
    "ac_in_buffer_size": (65536, 3, _after_in_size),
    "ac_out_buffer_size": (65536, 2, _after_out_size),
}

# Where the first value is, and how the new one replaces it.
CHANGES = {
    "setattr": "class",          # chat.name = new, over the class's value
    "instance dict": "class",    # vars(chat)[name] = new, no attribute assignment
    "dict replaced": "class",    # chat.__dict__ = a copy holding new
    "del": "instance",           # the class gets new, then del chat.name
    "class": "class",            # Class.name = new
    "base class": "base",        # Base.name = new, inherited by Class
    # chat.spare = None, whose old value's finaliser puts new in the instance dict
    "finaliser": "class",
    # chat.via_setter = new, a property whose setter puts it in the instance dict
    "setter": "class",
}


class Finaliser:
    """Does put() when it goes, from inside whatever drops it."""

    def __init__(self, put):
        self.put = put

    def __del__(self):
        self.put()


def line_chat_class(base, **attributes):
    """An async_chat class over ``base`` whose instances collect lines into
    ``self.lines`` (terminator b"\\n", _collect, _found_line, each replaced
    by ``attributes``)."""
    class Chat(base):
        terminator = b"\n"
        collect_incoming_data = _collect
        found_terminator = _found_line

        def __init__(self, sock, map):
            super().__init__(sock, map=map)
            self.parts = []
            self.lines = []
            self.other = []

    for name, value in attributes.items():
        setattr(Chat, name, value)
    return Chat


def runner(asyncore, sockmap):
    """run(predicate): the loop on sockmap until predicate() holds."""
    return lambda predicate: run_until(asyncore, sockmap, predicate)


def feed_lines(peer, run, chat, data, lines):
    peer.sendall(data)
    run(lambda: len(chat.lines) >= lines)


def _on_instance(chat, name, value):
    """What assigning value (as a class would hold it) to the instance means."""
    if callable(value):
        return value.__get__(chat)
    return value


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("name", sorted(KEPT_ATTRIBUTES))
def test_a_value_the_loop_reads_is_seen_after_it_changes(asyncore, asynchat, sockmap, name,
                                                         change):
    first, new, check = KEPT_ATTRIBUTES[name]
    where = CHANGES[change]

    class Base(asynchat.async_chat):
        pass

    Chat = line_chat_class(Base, via_setter=property(
        fset=lambda self, value: vars(self).__setitem__(name, value)))
    if where == "base":
        delattr(Chat, name) if name in vars(Chat) else None
        setattr(Base, name, first)
    elif name in vars(Chat) or where == "class":
        setattr(Chat, name, first)
    a, peer = socket.socketpair()
    sock = RecordingSocket(a)
    chat = Chat(sock, sockmap)
    if where == "instance":
        setattr(chat, name, _on_instance(chat, name, first))
    if change == "finaliser":
        chat.spare = Finaliser(
            lambda: vars(chat).__setitem__(name, _on_instance(chat, name, new)))

    run = runner(asyncore, sockmap)

    peer.setblocking(False)
    try:
        feed_lines(peer, run, chat, b"one\n", 1)   # each read (and kept) once
        push_and_receive(chat, peer, run, b"1")
        assert chat.lines == [b"one"]
        if change == "setattr":
            setattr(chat, name, _on_instance(chat, name, new))
        elif change == "instance dict":
            vars(chat)[name] = _on_instance(chat, name, new)
        elif change == "dict replaced":
            chat.__dict__ = dict(vars(chat), **{name: _on_instance(chat, name, new)})
        elif change == "del":
            setattr(Chat, name, new)
            delattr(chat, name)
        elif change == "class":
            setattr(Chat, name, new)
        elif change == "finaliser":
            chat.spare = None
            gc.collect()  # where objects are not reference-counted (PyPy)
        elif change == "setter":
            chat.via_setter = _on_instance(chat, name, new)
        else:
            setattr(Base, name, new)
        check(chat, sock, peer, run)
    finally:
        peer.close()


def test_a_property_the_loop_reads_is_read_every_time(asyncore, asynchat, sockmap):
    Chat = line_chat_class(asynchat.async_chat,
                           terminator=property(lambda self: self.current))
    a, peer = socket.socketpair()
    chat = Chat(a, sockmap)
    chat.current = b"\n"

    run = runner(asyncore, sockmap)

    feed_lines(peer, run, chat, b"one\n", 1)
    chat.current = b";"    # not an assignment to terminator
    feed_lines(peer, run, chat, b"a;b;", 3)
    assert chat.lines == [b"one", b"a", b"b"]
    peer.close()


def test_a_replaced_socket_is_not_kept_alive(asyncore, asynchat, sockmap):
    """The socket set_socket() replaces is freed (closed, if still open) as on
    the reference, though the loop read it for every message."""
    Chat = line_chat_class(asynchat.async_chat)
    a, peer = socket.socketpair()
    chat = Chat(a, sockmap)
    feed_lines(peer, runner(asyncore, sockmap), chat, b"one\n", 1)
    replaced = weakref.ref(a)
    del a
    c, peer2 = socket.socketpair()
    chat.del_channel()
    chat.set_socket(c)
    run_iterations(asyncore, sockmap, 2)
    gc.collect()
    assert replaced() is None
    peer.close()
    peer2.close()


def test_recv_and_send_patched_on_the_socket_class_are_called(asyncore, asynchat, sockmap,
                                                              monkeypatch):
    """The core calls socket.socket's C recv/send straight only while the
    class still has them: a patch on the class (as a test double or a
    tracing library makes) is called, as on the reference."""
    Chat = line_chat_class(asynchat.async_chat)
    a, peer = socket.socketpair()
    peer.setblocking(False)
    chat = Chat(a, sockmap)

    run = runner(asyncore, sockmap)

    feed_lines(peer, run, chat, b"one\n", 1)
    push_and_receive(chat, peer, run, b"1")
    calls = []
    original_recv, original_send = socket.socket.recv, socket.socket.send

    def recv(self, *args):
        calls.append("recv")
        return original_recv(self, *args)

    def send(self, *args):
        calls.append("send")
        return original_send(self, *args)

    monkeypatch.setattr(socket.socket, "recv", recv)
    monkeypatch.setattr(socket.socket, "send", send)
    feed_lines(peer, run, chat, b"two\n", 2)
    push_and_receive(chat, peer, run, b"2")
    assert "recv" in calls and "send" in calls
    monkeypatch.undo()
    del calls[:]
    feed_lines(peer, run, chat, b"three\n", 3)
    push_and_receive(chat, peer, run, b"3")
    assert calls == [] and chat.lines == [b"one", b"two", b"three"]
    peer.close()


def test_out_buffer_size_lowered_after_a_push_bounds_its_sends(asyncore, asynchat, sockmap):
    """What is already queued is sent ac_out_buffer_size bytes at a time, as
    it is when send() takes it: the size is read at the send, not the push."""
    Chat = line_chat_class(asynchat.async_chat)
    a, peer = socket.socketpair()
    peer.setblocking(False)
    sock = RecordingSocket(a)
    chat = Chat(sock, sockmap)
    chat.producer_fifo.append(b"hello")   # queued whole: push() would split it
    chat.ac_out_buffer_size = 2
    receive(peer, runner(asyncore, sockmap), b"hello")
    assert sock.send_sizes == [2, 2, 1]
    peer.close()
