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
import socket
import sys

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
