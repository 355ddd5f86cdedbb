# ChatBase: async_chat's input scanner and output queue.
#
# Input lives in a bytearray with a start offset; consumed bytes are dropped
# by moving the offset and compacting only when most of the buffer is dead,
# so scanning is linear in the bytes read (3.11 re-copies the rest of the
# buffer for every terminator found). Terminators are found with memchr
# (then memcmp) or memmem. Output keeps a partly sent item as a memoryview
# slice instead of re-copying its remainder after every send.

cdef object _deque_append = collections.deque.append
cdef object _deque_appendleft = collections.deque.appendleft
cdef object _deque_popleft = collections.deque.popleft
cdef object _deque_setitem = collections.deque.__setitem__


# Output coalescing. While the loop dispatches an event, _event_serial names
# it (0 between events). A push in an event after one whose send (3.11's own,
# at once) took everything is not sent at once: it waits in the dispatcher's
# _deferred list, and dispatch.pxi's end_event() sends every dispatcher's list
# in one sendmsg(2) when the event's handlers return. docs/design.md says why
# no program can tell.
# Loops may run in several threads (one map each): an event belongs to the
# thread that dispatches it, and only that thread defers in it and sends what
# it deferred.
cdef unsigned long _event_serial = 0
cdef unsigned long _events_begun = 0
cdef unsigned long _event_thread = 0   # the thread of the event _event_serial names
cdef list _deferring = []   # the dispatchers with a _deferred list


cdef inline void begin_event() noexcept:
    global _event_serial, _events_begun, _event_thread
    _events_begun += 1
    _event_serial = _events_begun
    _event_thread = PyThread_get_thread_ident()


cdef enum:
    SHORT_NEEDLE = 16   # up to this length: memchr for the first byte, then memcmp


cdef Py_ssize_t find_bytes(const char *hay, Py_ssize_t hay_len,
                           const char *needle, Py_ssize_t needle_len) noexcept:
    cdef const char *hit
    cdef const char *end = hay + hay_len
    if needle_len == 1:
        hit = <const char *>memchr(hay, needle[0], hay_len)
    elif needle_len <= SHORT_NEEDLE:
        # memchr is several times faster than glibc's memmem on short
        # terminators (b"\r\n"); a short needle bounds the memcmp work per
        # candidate, so adversarial input stays linear.
        hit = hay
        while True:
            hit = <const char *>memchr(hit, needle[0], end - hit)
            if hit == NULL or end - hit < needle_len:
                hit = NULL
                break
            if memcmp(hit + 1, needle + 1, needle_len - 1) == 0:
                break
            hit += 1
    else:
        hit = <const char *>memmem(hay, hay_len, needle, needle_len)
    return -1 if hit == NULL else hit - hay


cdef Py_ssize_t prefix_at_end(const char *hay, Py_ssize_t hay_len,
                              const char *needle, Py_ssize_t needle_len) noexcept:
    """Length of the longest proper prefix of needle that ends hay."""
    cdef Py_ssize_t n = needle_len - 1
    if n > hay_len:
        n = hay_len
    while n > 0:
        if memcmp(hay + hay_len - n, needle, n) == 0:
            return n
        n -= 1
    return 0


def find_prefix_at_end(haystack, needle):
    cdef Py_ssize_t n = len(needle) - 1
    while n and not haystack.endswith(needle[:n]):
        n -= 1
    return n


def limit_line_length(chat, n):
    """The most bytes a line (the data before a bytes terminator) may have on
    ``chat``; a longer one is logged and closes the connection. None lifts it."""
    if not isinstance(chat, ChatBase):
        raise TypeError("limit_line_length() needs an async_chat, not %r" % (chat,))
    n = check_limit_value(n, "the line length limit", 0)
    (<ChatBase>chat)._line_limit = -1 if n is None else min(n, PY_SSIZE_T_MAX)


def get_line_length_limit(chat):
    """The line length limit of ``chat`` (limit_line_length), or None."""
    if not isinstance(chat, ChatBase):
        raise TypeError("get_line_length_limit() needs an async_chat, not %r" % (chat,))
    cdef Py_ssize_t limit = (<ChatBase>chat)._line_limit
    return None if limit < 0 else limit


@cython.binding(False)
@cython.auto_pickle(False)   # copied and pickled as 3.11's: __getstate__
cdef class ChatBase(DispatcherBase):
    # Unread input is _inbuf[_inpos:]. _inbuf is the bytes a read returned,
    # scanned where it lies while nothing else is unread, or a bytearray of
    # the core's own once the rest of one read must wait for the next.
    cdef object _inbuf
    cdef Py_ssize_t _inpos
    # producer_fifo is a plain attribute, as in 3.11 (read through
    # attribute_cache.pxi). _fifo is the object it held when last read, and
    # _fifo_tracked whether that object is a ProducerFifo of this
    # dispatcher's own, which tells the loop when it turns empty or not.
    cdef object _fifo
    cdef bint _fifo_tracked
    cdef Py_ssize_t _line_len  # bytes collected since the last bytes terminator
    cdef Py_ssize_t _line_limit  # limit_line_length(), -1 for none
    cdef bint _quiet_fifo      # push() is running: it marks the dispatcher dirty itself
    cdef list _deferred        # pushes of this event still to send (bytes), or None
    cdef unsigned long _deferred_thread  # the thread whose event deferred them
    cdef unsigned long _sent_serial  # the event in which a push's send took everything

    def __cinit__(self, *args, **kwargs):
        self._inbuf = b""
        self._inpos = 0
        self._line_limit = -1
        # A class attribute a subclass gave to ac_in_buffer (moved
        # aside by the facade's __init_subclass__) become the instance's
        # values. Here, not in DispatcherBase's __cinit__: Cython sets this
        # class's fields after the base's __cinit__ returns, over any value
        # stored by then.
        defaults = getattr(type(self), "_fc_defaults", None)
        if defaults:
            for name, value in defaults.items():
                setattr(self, name, value)

    # -- input -------------------------------------------------------------

    @property
    def ac_in_buffer(self):
        return bytes(self._inbuf[self._inpos:])

    @ac_in_buffer.setter
    def ac_in_buffer(self, value):
        self._inbuf = value if type(value) is bytes else bytearray(value)
        self._inpos = 0

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
                    "(set use_encoding to pass str)")
            term = bytes(term, self.encoding)
        elif isinstance(term, int):
            if term < 0:
                raise ValueError("the number of received bytes must be positive")
        elif term is not None and not isinstance(term, (bytes, bytearray, memoryview)):
            raise TypeError(
                "terminator must be bytes, an int or None, not %s" % type(term).__name__)
        self.terminator = term

    def get_terminator(self):
        return self.terminator

    def handle_read(self):
        self.chat_read()

    cdef int chat_read(self) except -1:
        try:
            if self.uses(FAST_RECV):
                data = self.sock_recv(cached_attr(self, CACHED_IN_SIZE))
            else:
                data = self.recv(cached_attr(self, CACHED_IN_SIZE))
        except BlockingIOError:
            return 0
        except OSError:
            self.handle_error()
            return 0
        if isinstance(data, str) and self.use_encoding:
            data = bytes(data, self.encoding)
        self.append_input(data)
        self.scan_input()
        return 0

    cdef int append_input(self, data) except -1:
        cdef object buf = self._inbuf
        cdef Py_ssize_t pos = self._inpos
        cdef Py_ssize_t size, added
        if pos >= Py_SIZE(buf):
            # Nothing unread: a bytes read is scanned where it is, uncopied.
            self._inbuf = data if type(data) is bytes else bytearray(data)
            self._inpos = 0
            return 0
        if type(buf) is bytes:
            # The rest of a read waits for more: from now on in a bytearray.
            buf = PyByteArray_FromStringAndSize(PyBytes_AS_STRING(buf) + pos, Py_SIZE(buf) - pos)
            self._inbuf = buf
            self._inpos = 0
        elif pos and pos * 2 >= len(buf):
            del buf[:pos]
            self._inpos = 0
        if type(data) is not bytes:
            buf += data
            return 0
        # buf += data without the number protocol and the buffer export.
        size = PyByteArray_GET_SIZE(buf)
        added = PyBytes_GET_SIZE(data)
        PyByteArray_Resize(buf, size + added)
        memcpy(PyByteArray_AS_STRING(buf) + size, PyBytes_AS_STRING(data), added)
        return 0

    cdef int consume(self, Py_ssize_t n) except -1:
        """Drop the first n unread bytes of the buffer as it is now."""
        cdef Py_ssize_t pos = self._inpos + n
        if pos >= Py_SIZE(self._inbuf):
            self._inbuf = b""
            self._inpos = 0
        else:
            self._inpos = pos
        return 0

    cdef int collect(self, Py_ssize_t n) except -1:
        """self.collect_incoming_data(<the first n unread bytes>), the method
        looked up before the bytes are taken, as the reference does."""
        if kept(self, CACHED_COLLECT):
            method = kept_value(self, CACHED_COLLECT)
            if self._cache_unbound & (1 << CACHED_COLLECT):
                method(self, self.take(n))
            else:
                method(self.take(n))
        else:
            fill_cache(self, CACHED_COLLECT)(self.take(n))
        return 0

    cdef object take(self, Py_ssize_t n):
        """The first n unread bytes, as bytes (the buffer is not changed)."""
        cdef object buf = self._inbuf
        if type(buf) is bytes and self._inpos == 0 and n == Py_SIZE(buf):
            return buf
        return PyBytes_FromStringAndSize(self.unread(), n)

    cdef inline const char *unread(self):
        """Where the unread input starts."""
        cdef object buf = self._inbuf
        if type(buf) is bytes:
            return PyBytes_AS_STRING(buf) + self._inpos
        return PyByteArray_AS_STRING(buf) + self._inpos

    cdef int close_overlong_line(self, Py_ssize_t limit) except -1:
        self.log_info("line longer than its limit (%d bytes): closing the connection"
                      % limit, "error")
        self.ac_in_buffer = b""
        self._line_len = 0
        self.close_once()
        self.close()
        return 0

    cdef int scan_input(self) except -1:
        cdef Py_ssize_t available, index, tlen
        cdef const char *start
        cdef bytes needle
        cdef bint own_get_terminator = self.uses(FAST_GET_TERMINATOR)
        cdef Py_ssize_t limit = self._line_limit
        while True:
            available = Py_SIZE(self._inbuf) - self._inpos
            if available <= 0:
                return 0
            # found_terminator() may change the terminator or the buffer:
            # both are read afresh for every step.
            terminator = cached_attr(self, CACHED_TERMINATOR) if own_get_terminator \
                else self.get_terminator()
            if not terminator:
                self._line_len = 0
                self.collect(available)
                self.ac_in_buffer = b""
            elif isinstance(terminator, int):
                self._line_len = 0
                index = terminator
                if available < index:
                    self.collect(available)
                    self.ac_in_buffer = b""
                    self.terminator = self.terminator - available
                else:
                    self.collect(index)
                    self.consume(index)
                    self.terminator = 0
                    call_cached(self, CACHED_FOUND)
            else:
                if isinstance(terminator, bytes):
                    needle = terminator
                else:
                    needle = bytes(terminator)
                tlen = len(needle)
                start = self.unread()
                index = find_bytes(start, available, needle, tlen)
                if index != -1:
                    if 0 <= limit < self._line_len + index:
                        return self.close_overlong_line(limit)
                    self._line_len = 0
                    if index > 0:
                        self.collect(index)
                    self.consume(index + tlen)
                    call_cached(self, CACHED_FOUND)
                else:
                    # Everything but a held-back terminator prefix is line data.
                    index = available - prefix_at_end(start, available, needle, tlen)
                    if 0 <= limit < self._line_len + index:
                        return self.close_overlong_line(limit)
                    self._line_len += index
                    if index != available:
                        if index:
                            self.collect(index)
                            self.consume(index)
                        return 0
                    self.collect(available)
                    self.ac_in_buffer = b""

    # -- output ------------------------------------------------------------

    cdef inline bint fifo_unchanged(self) except -1:
        """producer_fifo is still the object last read (_fifo), by the cache."""
        return kept(self, CACHED_FIFO) and kept_value(self, CACHED_FIFO) is self._fifo

    cdef inline object fifo(self):
        """self.producer_fifo; _fifo and _fifo_tracked follow it."""
        if self.fifo_unchanged():
            return self._fifo
        return self.read_fifo()

    cdef object read_fifo(self):
        fifo = cached_attr(self, CACHED_FIFO)
        if fifo is not self._fifo:
            self._fifo = fifo
            self._fifo_tracked = (
                isinstance(fifo, ProducerFifo) and fifo._owner_ref is not None
                and fifo._owner_ref() is self)
            # Tracked or not, empty or not: the interest may change.
            self.mark_dirty()
        return fifo

    cdef inline int fifo_tracked(self) except -1:
        """Whether producer_fifo is a ProducerFifo of its own. False when it
        cannot be read: writable(), asked then, raises what the read raised."""
        if self.fifo_unchanged():
            return self._fifo_tracked
        try:
            self.read_fifo()
        except Exception:
            return False
        return self._fifo_tracked

    cdef bint has_output(self) except -1:
        cdef object fifo = self.fifo()
        if self._fifo_tracked:
            return len(fifo) > 0
        return bool(fifo)

    cdef int fifo_append(self, item) except -1:
        cdef object fifo = self.fifo()
        if not self._fifo_tracked:
            fifo.append(item)
            return 0
        _deque_append(fifo, item)
        if len(fifo) == 1 and not self._quiet_fifo:
            self.mark_dirty()
        return 0

    cdef int fifo_popleft(self) except -1:
        cdef object fifo = self.fifo()
        if not self._fifo_tracked:
            del fifo[0]
            return 0
        _deque_popleft(fifo)
        if not fifo and not self._quiet_fifo:
            self.mark_dirty()
        return 0

    def handle_write(self):
        self.initiate()

    cdef int initiate(self) except -1:
        """self.initiate_send(), without a Python call unless overridden."""
        if self.uses(FAST_INITIATE_SEND):
            return self.send_some()
        self.initiate_send()
        return 0

    def push(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data argument must be byte-ish (%r)", type(data))
        # bytes only: a bytearray or memoryview may change before the event ends.
        if type(data) is bytes and self.may_defer(PyBytes_GET_SIZE(data)):
            if self._deferred is None:
                self._deferred = [data]
                self._deferred_thread = _event_thread
                _deferring.append(self)
            else:
                self._deferred.append(data)
            return
        if self._deferred is not None:
            self.flush_deferred()
        cdef Py_ssize_t size = cached_attr(self, CACHED_OUT_SIZE)
        cdef Py_ssize_t n = len(data)
        cdef Py_ssize_t i
        # A push sent at once leaves the write interest as it was: the
        # registry is told only if the fifo's emptiness changed.
        cdef bint quiet = self.fifo_tracked() and self._tls is None and not self._quiet_fifo
        # No Python code runs from here to the append: _fifo is still current.
        cdef bint had_output = quiet and len(<object>self._fifo) > 0
        if quiet:
            self._quiet_fifo = True
        try:
            if n > size:
                for i in range(0, n, size):
                    self.fifo_append(data[i:i + size])
            elif quiet:
                _deque_append(self._fifo, data)
            else:
                self.fifo_append(data)
            self.initiate()
        finally:
            if quiet:
                self._quiet_fifo = False
                if not self._fifo_tracked or self.has_output() != had_output:
                    self.mark_dirty()
        # A quiet push read the fifo again just above (has_output()), unless
        # it was no longer tracked then, which is all this needs to know.
        if _event_serial and (self._fifo_tracked if quiet else self.fifo_tracked()) \
                and not len(<object>self._fifo):
            self._sent_serial = _event_serial

    cdef bint may_defer(self, Py_ssize_t size) except -1:
        """Whether a push of size bytes may wait for the end of this event: an
        earlier push in it was sent in full, nothing is queued, 3.11 would
        send it in one piece (one send, not none), and the output path is the
        core's own on a socket the core sends on itself."""
        if _event_serial == 0 or self._sent_serial != _event_serial \
                or PyThread_get_thread_ident() != _event_thread:
            return False
        if self._deferred is not None and self._deferred_thread != _event_thread:
            return False
        # (3.11 drops an empty push without a send.)
        if size == 0 or size > cached_attr(self, CACHED_OUT_SIZE):
            return False
        if not self.fifo_tracked() or len(<object>self._fifo) or self._tls is not None \
                or not self.is_connected():
            return False
        if not self.uses(COALESCE_PATHS) or self.class_paths() & COALESCE_PATHS != COALESCE_PATHS:
            return False
        sock = cached_attr(self, CACHED_SOCKET)
        return plain_socket_methods(sock) and direct_socket_io(sock)

    cdef int flush_deferred(self) except -1:
        """Sends the deferred pushes, in one sendmsg(2) where the socket takes
        them all. What it does not take goes to the front of the fifo (3.11
        would have it there), and the error of a failed send has 3.11's
        consequence: handle_close() for a lost connection, else handle_error()."""
        cdef list items = self._deferred
        cdef Py_ssize_t sent = 0
        if items is None:
            return 0
        self._deferred = None
        sock = cached_attr(self, CACHED_SOCKET)
        if not (plain_socket_methods(sock) and direct_socket_io(sock)):
            # The socket was replaced: the write events send it all.
            return self.requeue(items, 0)
        try:
            sent = fc_socket_sendv(sock, items)
        except OSError as why:
            if why.errno != EWOULDBLOCK:
                self.requeue(items, 0)
                if why.errno in _DISCONNECTED:
                    self.close_once()
                else:
                    self.handle_error()
                return 0
        stats_bytes_written(sent)
        return self.requeue(items, sent)

    cdef int requeue(self, list items, Py_ssize_t sent) except -1:
        """Puts what a send of items left, after its first sent bytes, in
        front of the fifo."""
        cdef Py_ssize_t i = 0, size
        while sent:
            size = PyBytes_GET_SIZE(items[i])
            if sent < size:
                items[i] = memoryview(items[i])[sent:]
                break
            sent -= size
            i += 1
        if i == len(items):
            return 0
        fifo = self.fifo()
        for item in reversed(items[i:]):
            if self._fifo_tracked:
                _deque_appendleft(fifo, item)
            else:
                fifo.appendleft(item)
        self.mark_dirty()
        return 0

    def push_with_producer(self, producer):
        self.fifo_append(producer)
        self.initiate()

    def readable(self):
        return 1

    def writable(self):
        return self.fifo() or (not self.connected)

    def close_when_done(self):
        self.fifo_append(None)

    def initiate_send(self):
        self.send_some()

    cdef int send_some(self) except -1:
        cdef Py_ssize_t num_sent, obs
        cdef bint plain_send = self.uses(FAST_SEND)
        if self._deferred is not None:
            self.flush_deferred()
        while self.fifo() and self.is_connected():
            fifo = self._fifo
            first = fifo[0]
            if not first:
                self.fifo_popleft()
                if first is None:
                    # close_when_done() must close even when handle_close()
                    # already ran (and left the socket open).
                    if self._close_handled:
                        self.close()
                    else:
                        self.close_once()
                    return 0
            obs = cached_attr(self, CACHED_OUT_SIZE)
            if type(first) is bytes and PyBytes_GET_SIZE(first) <= obs:
                data = first   # what first[:obs] gives, without making a slice
            else:
                try:
                    data = first[:obs]
                except TypeError:
                    # A producer.
                    data = first.more()
                    if data:
                        fifo = self.fifo()   # more() is the program's code
                        if self._fifo_tracked:
                            _deque_appendleft(fifo, data)
                        else:
                            fifo.appendleft(data)
                    else:
                        self.fifo_popleft()
                    continue
            if isinstance(data, str) and self.use_encoding:
                data = bytes(data, self.encoding)
            elif not plain_send and type(data) is memoryview:
                data = bytes(data)
            try:
                if plain_send:
                    num_sent = self.sock_send(data)
                else:
                    num_sent = self.send(data)
            except OSError:
                self.handle_error()
                return 0
            if num_sent:
                if num_sent < len(data) or obs < len(first):
                    if type(first) is bytes:
                        rest = memoryview(first)[num_sent:]
                    else:
                        rest = first[num_sent:]
                    fifo = self.fifo()   # a send() of the program's may have replaced it
                    if self._fifo_tracked:
                        _deque_setitem(fifo, 0, rest)
                    else:
                        fifo[0] = rest
                else:
                    self.fifo_popleft()
            return 0
        return 0

    def __getstate__(self):
        # 3.11's async_chat keeps ac_in_buffer in its instance dict.
        state = dict(PyObject_GenericGetDict(self, NULL))
        state["ac_in_buffer"] = self.ac_in_buffer
        return state

    def __setstate__(self, state):
        # What copy and pickle do without a __setstate__ (the instance dict
        # updated), with the names kept in C fields set as attributes.
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
            for name, value in (slots or {}).items():
                setattr(self, name, value)
        if state:
            own = PyObject_GenericGetDict(self, NULL)
            for name, value in state.items():
                if name in FIELD_NAMES:
                    setattr(self, name, value)
                else:
                    own[name] = value

    def discard_buffers(self):
        self.ac_in_buffer = b""
        self._line_len = 0
        del self.incoming[:]
        self.fifo().clear()
