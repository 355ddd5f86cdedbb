"""ChatBase: async_chat's input scanner and output queue; the facade
(fastcore/asynchat.py) adds the rest.

Input lives in a bytearray with a start offset: a found terminator moves the
offset, and the buffer is compacted (before new data is appended) only once
more than half of it is consumed, so scanning is linear in the bytes read
(3.11 copies the rest of the buffer for every terminator). Output keeps a
partly sent item as a memoryview slice instead of copying its remainder
after every send.
"""

import socket
import threading
from errno import EWOULDBLOCK
from types import SimpleNamespace

from fastcore._common import _DISCONNECTED, FIELD_NAMES, ProducerFifo, check_limit_value
from fastcore._core_py.dispatcher import DispatcherBase
from fastcore._core_py.stats import counts

# Output coalescing. While the loop dispatches an event, events.serial names
# it (0 between events). A push in an event after one whose send (3.11's own,
# at once) took everything is not sent at once: it waits in the dispatcher's
# _fc_deferred list, and dispatch.py's end_event() sends every dispatcher's
# list in one sendmsg(2) when the event's handlers return. docs/design.md says
# why no program can tell.
# Loops may run in several threads (one map each): an event belongs to the
# thread that dispatches it (events.thread), and only that thread defers in it
# and sends what it deferred.
events = SimpleNamespace(serial=0, begun=0, thread=0, deferring=[])

_plain_socket_send = socket.socket.send
_plain_socket_sendmsg = getattr(socket.socket, "sendmsg", None)  # None on Windows: no coalescing
_SENDMSG_BATCH = 64  # buffers per sendmsg(2), well below IOV_MAX
# Methods whose overriding keeps 3.11's one send per push.
_OUTPUT_METHODS = ("push", "initiate_send", "send", "writable", "close", "refill_buffer")


def begin_event():
    events.begun += 1
    events.serial = events.begun
    events.thread = threading.get_ident()


def _send_deferred(sock, items):
    """sendmsg(2) of items, _SENDMSG_BATCH at a time, until a call takes less
    than it was given: the count sent (an error after a part went is left for
    the next send)."""
    total = 0
    for start in range(0, len(items), _SENDMSG_BATCH):
        batch = items[start : start + _SENDMSG_BATCH]
        try:
            sent = sock.sendmsg(batch)
        except OSError:
            if total:
                return total
            raise
        total += sent
        if sent < sum(map(len, batch)):
            break
    return total


def find_prefix_at_end(haystack, needle):
    return _prefix_at_end(haystack, needle, 0)


def _prefix_at_end(haystack, needle, start):
    """Length of the longest proper prefix of needle that ends haystack[start:]."""
    size = len(needle) - 1
    while size and not haystack.endswith(needle[:size], start):
        size -= 1
    return size


def limit_line_length(chat, n):
    """The most bytes a line (the data before a bytes terminator) may have on
    ``chat``; a longer one is logged and closes the connection. None lifts it."""
    if not isinstance(chat, ChatBase):
        raise TypeError("limit_line_length() needs an async_chat, not %r" % (chat,))
    n = check_limit_value(n, "the line length limit", 0)
    chat._fc_line_limit = n


def get_line_length_limit(chat):
    """The line length limit of ``chat`` (limit_line_length), or None."""
    if not isinstance(chat, ChatBase):
        raise TypeError("get_line_length_limit() needs an async_chat, not %r" % (chat,))
    return chat._fc_line_limit


class ChatBase(DispatcherBase):
    _fc_in_buffer = None  # a bytearray once input arrives
    _fc_in_offset = 0  # bytes before it are consumed
    _fc_fifo = None  # producer_fifo when last read
    _fc_fifo_tracked = False  # whether that is a ProducerFifo of its own
    _fc_line_len = 0  # bytes collected since the last bytes terminator
    _fc_line_limit = None  # limit_line_length()
    _fc_deferred = None  # pushes of this event still to send (bytes)
    _fc_deferred_thread = 0  # the thread whose event deferred them
    _fc_sent_serial = 0  # the event in which a push's send took everything

    # -- input ---------------------------------------------------------------

    @property
    def ac_in_buffer(self):
        buf = self._fc_in_buffer
        if buf is None:
            return b""
        return bytes(buf[self._fc_in_offset :])

    @ac_in_buffer.setter
    def ac_in_buffer(self, value):
        self._fc_in_buffer = bytearray(memoryview(value))
        self._fc_in_offset = 0

    def _collect_incoming_data(self, data):
        self.incoming.append(data)

    def _get_data(self):
        incoming = self.incoming
        data = b"".join(incoming)
        del incoming[:]
        return data

    def set_terminator(self, term):
        """Set the input delimiter: bytes of any length, a byte count, or None."""
        if isinstance(term, str):
            if not self.use_encoding:
                raise TypeError(
                    "terminator must be bytes, an int or None, not str "
                    "(set use_encoding to pass a str)"
                )
            term = bytes(term, self.encoding)
        elif isinstance(term, int):
            if term < 0:
                raise ValueError("the number of received bytes must be positive")
        elif term is not None and not isinstance(term, (bytes, bytearray, memoryview)):
            raise TypeError(
                "terminator must be bytes, an int or None, not %s" % type(term).__name__
            )
        self.terminator = term

    def get_terminator(self):
        return self.terminator

    def handle_read(self):
        try:
            data = self.recv(self.ac_in_buffer_size)
        except BlockingIOError:
            return
        except OSError:
            self.handle_error()
            return
        if isinstance(data, str) and self.use_encoding:
            data = bytes(data, self.encoding)
        buf = self._fc_in_buffer
        if buf is None:
            buf = self._fc_in_buffer = bytearray()
        elif self._fc_in_offset * 2 > len(buf):
            # Mostly consumed: compact before growing.
            del buf[: self._fc_in_offset]
            self._fc_in_offset = 0
        buf += data
        self._scan_input()

    def _consume(self, size):
        """Drop the next size unread bytes of the buffer as it is now."""
        buf = self._fc_in_buffer
        offset = self._fc_in_offset + size
        if offset >= len(buf):
            buf.clear()
            offset = 0
        self._fc_in_offset = offset

    def _close_overlong_line(self, limit):
        self.log_info(
            "line longer than its limit (%d bytes): closing the connection" % limit,
            "error",
        )
        self.ac_in_buffer = b""
        self._fc_line_len = 0
        self._close_once()
        self.close()

    def _scan_input(self):
        # 3.11's order of callbacks and buffer updates; the terminator and the
        # buffer are read afresh at every step, since collect_incoming_data()
        # and found_terminator() may change either.
        limit = self._fc_line_limit
        while True:
            buf = self._fc_in_buffer
            if buf is None:
                return
            start = self._fc_in_offset
            available = len(buf) - start
            if available <= 0:
                return
            terminator = self.get_terminator()
            if not terminator:
                self._fc_line_len = 0
                self.collect_incoming_data(bytes(buf[start:]))
                self.ac_in_buffer = b""
            elif isinstance(terminator, int):
                self._fc_line_len = 0
                if available < terminator:
                    self.collect_incoming_data(bytes(buf[start:]))
                    self.ac_in_buffer = b""
                    self.terminator = self.terminator - available
                else:
                    self.collect_incoming_data(bytes(buf[start : start + terminator]))
                    self._consume(terminator)
                    self.terminator = 0
                    self.found_terminator()
            else:
                index = buf.find(terminator, start)
                if index != -1:
                    if limit is not None and self._fc_line_len + index - start > limit:
                        self._close_overlong_line(limit)
                        return
                    self._fc_line_len = 0
                    if index > start:
                        self.collect_incoming_data(bytes(buf[start:index]))
                    self._consume(index - start + len(terminator))
                    self.found_terminator()
                    continue
                partial = _prefix_at_end(buf, terminator, start)
                # Everything but a held-back terminator prefix is line data.
                if limit is not None and self._fc_line_len + available - partial > limit:
                    self._close_overlong_line(limit)
                    return
                self._fc_line_len += available - partial
                if not partial:
                    self.collect_incoming_data(bytes(buf[start:]))
                    self.ac_in_buffer = b""
                    continue
                if partial != available:
                    self.collect_incoming_data(bytes(buf[start : start + available - partial]))
                    self._consume(available - partial)
                return

    def __getstate__(self):
        # 3.11's async_chat keeps ac_in_buffer in its instance dict.
        state = super().__getstate__() or {}
        state["ac_in_buffer"] = self.ac_in_buffer
        return state

    def __setstate__(self, state):
        # What copy and pickle do without a __setstate__ (the instance dict
        # updated), with the names kept behind properties set as attributes.
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
            for name, value in (slots or {}).items():
                setattr(self, name, value)
        if state:
            own = self.__dict__
            for name, value in state.items():
                if name in FIELD_NAMES:
                    setattr(self, name, value)
                else:
                    own[name] = value

    # -- output --------------------------------------------------------------

    # producer_fifo is a plain attribute, as in 3.11. Only a ProducerFifo of
    # its own reports turning empty or non-empty; with anything else the
    # interest is recomputed every iteration.

    def _fc_current_fifo(self):
        """self.producer_fifo; _fc_fifo and _fc_fifo_tracked follow it."""
        fifo = self.producer_fifo
        if fifo is not self._fc_fifo:
            self._fc_adopt_fifo(fifo)
        return fifo

    def _fc_adopt_fifo(self, fifo):
        self._fc_fifo = fifo
        owner_ref = fifo._owner_ref if isinstance(fifo, ProducerFifo) else None
        self._fc_fifo_tracked = owner_ref is not None and owner_ref() is self
        self._mark_dirty()

    @property
    def _fc_interest_stable(self):
        # False when producer_fifo cannot be read: writable(), asked then,
        # raises what the read raised.
        try:
            fifo = self.producer_fifo
        except Exception:
            return False
        if fifo is not self._fc_fifo:
            self._fc_adopt_fifo(fifo)
        return self._fc_fifo_tracked

    def _fc_write_interest(self):
        # _fc_current_fifo() written out here, in _fc_interest_stable and in
        # push(): its call costs ping-pong 3% of the pure core's instructions.
        if self.accepting:
            return False
        fifo = self.producer_fifo
        if fifo is not self._fc_fifo:
            self._fc_adopt_fifo(fifo)
        return bool(fifo) or not self.connected

    def handle_write(self):
        self.initiate_send()

    def push(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data argument must be byte-ish (%r)", type(data))
        # bytes only: a bytearray or memoryview may change before the event ends.
        if type(data) is bytes and self._fc_may_defer(len(data)):
            if self._fc_deferred is None:
                self._fc_deferred = [data]
                self._fc_deferred_thread = events.thread
                events.deferring.append(self)
            else:
                self._fc_deferred.append(data)
            return
        if self._fc_deferred is not None:
            self._fc_flush_deferred()
        size = self.ac_out_buffer_size
        fifo = self.producer_fifo
        if fifo is not self._fc_fifo:
            self._fc_adopt_fifo(fifo)
        if len(data) > size:
            for i in range(0, len(data), size):
                fifo.append(data[i : i + size])
        else:
            fifo.append(data)
        self.initiate_send()
        # The fifo as last read (what the sends may have changed is read
        # again by the next _fc_may_defer()).
        if events.serial and self._fc_fifo_tracked and not self._fc_fifo:
            self._fc_sent_serial = events.serial

    def _fc_may_defer(self, size):
        """Whether a push of size bytes may wait for the end of this event: an
        earlier push in it was sent in full, nothing is queued, 3.11 would
        send it in one piece (one send, not none), and the output path is the
        core's own on a plain non-blocking socket."""
        serial = events.serial
        if not serial or self._fc_sent_serial != serial or threading.get_ident() != events.thread:
            return False
        if self._fc_deferred is not None and self._fc_deferred_thread != events.thread:
            return False
        # (3.11 drops an empty push without a send.)
        if size == 0 or size > self.ac_out_buffer_size:
            return False
        if (
            not self._fc_interest_stable
            or self._fc_fifo
            or self._fc_tls is not None
            or not self.connected
        ):
            return False
        cls = type(self)
        if (
            cls.push is not ChatBase.push
            or cls.initiate_send is not ChatBase.initiate_send
            or cls.send is not DispatcherBase.send
            or cls.writable is not ChatBase.writable
            or cls.close is not DispatcherBase.close
            or hasattr(cls, "refill_buffer")
        ):
            return False
        own = self.__dict__
        if any(name in own for name in _OUTPUT_METHODS):
            return False
        sock = own.get("socket")
        return (
            type(sock) is socket.socket
            and _plain_socket_sendmsg is not None
            and socket.socket.send is _plain_socket_send
            and socket.socket.sendmsg is _plain_socket_sendmsg
            and sock.gettimeout() == 0
        )

    def _fc_flush_deferred(self):
        """Sends the deferred pushes, in one sendmsg(2) where the socket takes
        them all. What it does not take goes to the front of the fifo (3.11
        would have it there), and the error of a failed send has 3.11's
        consequence: handle_close() for a lost connection, else handle_error()."""
        items = self._fc_deferred
        if items is None:
            return
        self._fc_deferred = None
        sock = self.__dict__.get("socket")
        if type(sock) is not socket.socket:
            # The socket was replaced: the write events send it all.
            self._fc_requeue(items, 0)
            return
        try:
            sent = _send_deferred(sock, items)
        except OSError as why:
            if why.errno == EWOULDBLOCK:
                sent = 0
            else:
                self._fc_requeue(items, 0)
                if why.errno in _DISCONNECTED:
                    self._close_once()
                else:
                    self.handle_error()
                return
        counts.bytes_written += sent
        self._fc_requeue(items, sent)

    def _fc_requeue(self, items, sent):
        """Puts what a send of items left, after its first sent bytes, in
        front of the fifo."""
        i = 0
        while sent:
            if sent < len(items[i]):
                items[i] = memoryview(items[i])[sent:]
                break
            sent -= len(items[i])
            i += 1
        if i == len(items):
            return
        fifo = self._fc_current_fifo()
        for item in reversed(items[i:]):
            fifo.appendleft(item)
        self._mark_dirty()

    def push_with_producer(self, producer):
        self.producer_fifo.append(producer)
        self.initiate_send()

    def readable(self):
        return 1

    def writable(self):
        return self.producer_fifo or (not self.connected)

    _fc_readable = readable
    _fc_writable = writable

    def close_when_done(self):
        self.producer_fifo.append(None)

    def initiate_send(self):
        if self._fc_deferred is not None:
            self._fc_flush_deferred()
        # One send per call, in 3.11's order.
        while self.producer_fifo and self.connected:
            fifo = self.producer_fifo
            first = fifo[0]
            if not first:
                del fifo[0]
                if first is None:
                    # close_when_done() must close even when handle_close()
                    # already ran (and left the socket open).
                    if self._fc_close_handled:
                        self.close()
                    else:
                        self._close_once()
                    return
            size = self.ac_out_buffer_size
            try:
                data = first[:size]
            except TypeError:
                # A producer. more() and send() are the program's code: the
                # fifo is read again after them, as 3.11 does.
                data = first.more()
                if data:
                    self.producer_fifo.appendleft(data)
                else:
                    del self.producer_fifo[0]
                continue
            if isinstance(data, str) and self.use_encoding:
                data = bytes(data, self.encoding)
            elif type(data) is memoryview and type(self).send is not DispatcherBase.send:
                data = bytes(data)  # an overriding send() expects what 3.11 passed
            try:
                num_sent = self.send(data)
            except OSError:
                self.handle_error()
                return
            if num_sent:
                if num_sent < len(data) or size < len(first):
                    if type(first) is bytes:
                        first = memoryview(first)
                    self.producer_fifo[0] = first[num_sent:]
                else:
                    del self.producer_fifo[0]
            return

    def discard_buffers(self):
        self.ac_in_buffer = b""
        self._fc_line_len = 0
        del self.incoming[:]
        self.producer_fifo.clear()
