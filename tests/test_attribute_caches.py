"""Handler code reads a dispatcher's own attributes through the interpreter's
specialised LOAD_ATTR, as it does on the reference's plain classes.

CPython 3.12+ specialises attribute access on instances of classes with a
managed ``__dict__`` (and a ``__getattr__``, which the socket delegation
needs). 3.11's specialiser refuses every class with a ``__getattr__``, and
3.8-3.10 have none, so there is nothing to check there.
"""

import dis
import socket
import sys

import pytest

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="3.11 does not specialise attribute access on classes with __getattr__; "
           "3.8-3.10 do not specialise at all")

SPECIALISED_LOADS = {"LOAD_ATTR_INSTANCE_VALUE", "LOAD_ATTR_WITH_HINT"}

# Compiled afresh for each test: a code object's specialisations are shared by
# every call, whatever the class of the object passed in.
HANDLER_SOURCE = """
def read_parts(handler):
    return handler.parts
"""


def _load_ops(obj, label):
    namespace = {}
    exec(compile(HANDLER_SOURCE, "<handler %s>" % label, "exec"), namespace)
    read_parts = namespace["read_parts"]
    for _ in range(100):   # past the interpreter's warm-up
        read_parts(obj)
    return [ins.opname for ins in dis.get_instructions(read_parts, adaptive=True)
            if ins.opname.startswith("LOAD_ATTR")]


@pytest.mark.parametrize("base_name", ["dispatcher", "dispatcher_with_send", "async_chat"])
def test_instance_attribute_loads_are_specialised(asyncore, asynchat, sockmap, base_name):
    base = getattr(asynchat if base_name == "async_chat" else asyncore, base_name)

    class Handler(base):
        def __init__(self, sock, map):
            super().__init__(sock, map=map)
            self.parts = []

    a, b = socket.socketpair()
    try:
        handler = Handler(a, sockmap)
        ops = _load_ops(handler, base_name)
        assert ops and set(ops) <= SPECIALISED_LOADS, ops
        handler.close()
    finally:
        a.close()
        b.close()
