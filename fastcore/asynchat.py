"""Drop-in ``asynchat``: CPython 3.11's API over fastcore's core.

The input scanner and the output queue of ``async_chat`` live in the core
(``ChatBase``); this module adds the rest of the public API.
"""

from collections import deque  # noqa: F401  (the standard module's namespace)
from weakref import ref as _weakref_ref

from fastcore import asyncore
from fastcore._common import ProducerFifo as _ProducerFifo
from fastcore._impl import core as _core

find_prefix_at_end = _core.find_prefix_at_end


class async_chat(_core.ChatBase, asyncore.dispatcher):
    """This is an abstract class.  You must derive from this class, and add
    the two methods collect_incoming_data() and found_terminator()"""

    ac_in_buffer_size = 65536
    ac_out_buffer_size = 65536

    use_encoding = 0
    encoding = "latin-1"

    def __init__(self, sock=None, map=None):
        self.ac_in_buffer = b""
        self.incoming = []
        self.producer_fifo = _ProducerFifo(owner_ref=_weakref_ref(self))
        asyncore.dispatcher.__init__(self, sock, map)

    def collect_incoming_data(self, data):
        raise NotImplementedError("must be implemented in subclass")

    def found_terminator(self):
        raise NotImplementedError("must be implemented in subclass")

    def handle_close(self):
        self.close()


class simple_producer:
    def __init__(self, data, buffer_size=512):
        self.data = data
        self.buffer_size = buffer_size

    def more(self):
        data = self.data
        if len(data) > self.buffer_size:
            self.data = data[self.buffer_size :]
            return data[: self.buffer_size]
        self.data = b""
        return data
