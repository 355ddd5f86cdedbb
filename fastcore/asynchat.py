"""Drop-in ``asynchat``: CPython 3.11's API over fastcore's core.

The input scanner and the output queue of ``async_chat`` live in the core
(``ChatBase``); this module adds the rest of the public API.
"""

import weakref

from fastcore import asyncore
from fastcore._common import ProducerFifo
from fastcore._impl import core

__all__ = ["async_chat", "find_prefix_at_end", "simple_producer"]

find_prefix_at_end = core.find_prefix_at_end


class async_chat(core.ChatBase, asyncore.dispatcher):
    """This is an abstract class.  You must derive from this class, and add
    the two methods collect_incoming_data() and found_terminator()"""

    ac_in_buffer_size = 65536
    ac_out_buffer_size = 65536

    use_encoding = 0
    encoding = "latin-1"

    def __init__(self, sock=None, map=None):
        self.ac_in_buffer = b""
        self.incoming = []
        self.producer_fifo = ProducerFifo(owner_ref=weakref.ref(self))
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
