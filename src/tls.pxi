# TLS for the core's dispatchers: an ssl.SSLObject between two memory BIOs,
# fed from and drained to the dispatcher's socket by the loop (the twin of
# fastcore/_core_py/tls.py; the public API is fastcore/tls.py).
#
# The socket stays a plain socket, and the dispatcher stays tracked: its
# interest is computed here in C from the layer's state (the handshake and
# an unwrap read, ciphertext waiting for the socket writes, a write that
# needs the peer first waits for a read). Read events pull ciphertext into
# the incoming BIO and decrypt into a plaintext buffer; handle_read runs
# only when that buffer holds data or the peer closed. Plaintext left in
# the buffer after a recv gets a read event without waiting for the socket.

import ssl

cdef object _SSLWantReadError = ssl.SSLWantReadError
cdef object _SSLEOFError = ssl.SSLEOFError
cdef object _SSLZeroReturnError = ssl.SSLZeroReturnError
cdef object _SSLError = ssl.SSLError
cdef object _SSLContext = ssl.SSLContext
cdef object _MemoryBIO = ssl.MemoryBIO

cdef enum:
    TLS_SOCKET_READ_SIZE = 65536
    TLS_CIPHER_BACKLOG = 65536  # unsent ciphertext above which send() reports 0

cdef enum:
    TLS_DRAINING = 0     # plaintext queued before start_tls() is still being sent
    TLS_HANDSHAKING = 1
    TLS_OPEN = 2
    TLS_UNWRAPPING = 3
    TLS_PLAIN = 4        # unwrapped: plaintext read with the close_notify goes first

cdef tuple _TLS_STATE_NAMES = (
    "draining", "handshaking", "open", "unwrapping", "unwrapped")

# Layers holding plaintext their dispatcher has not read yet.
cdef list _tls_ready = []


@cython.binding(False)
cdef class TLSLayer:
    cdef DispatcherBase owner
    cdef object incoming
    cdef object outgoing
    cdef object sslobj
    cdef int state
    cdef object plain          # decrypted, not yet recv()'d: a deque of bytes
    cdef Py_ssize_t plain_len
    cdef object cipher         # encrypted, not yet taken by the socket
    # Bound methods, looked up once: the socket and the BIOs stay for good.
    cdef object sock_recv, sock_send, bio_write, bio_read, ssl_read, ssl_write
    cdef bint eof              # the peer closed (TCP EOF or close_notify)
    cdef bint write_wants_read  # SSL_write needs the peer first
    cdef bint queued           # in _tls_ready

    def __cinit__(self, DispatcherBase owner not None, context, server_side, server_hostname,
                  session):
        self.owner = owner
        self.incoming = _MemoryBIO()
        self.outgoing = _MemoryBIO()
        self.sslobj = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side,
            server_hostname=server_hostname, session=session)
        self.state = TLS_DRAINING
        self.plain = collections.deque()
        self.cipher = b""
        self.sock_recv = owner.socket.recv
        self.sock_send = owner.socket.send
        self.bio_write = self.incoming.write
        self.bio_read = self.outgoing.read
        # ssl.SSLObject.read/write are Python methods that only pass the
        # call on to the _ssl object under them: call that one directly.
        engine = getattr(self.sslobj, "_sslobj", self.sslobj)
        self.ssl_read = engine.read
        self.ssl_write = engine.write

    # -- what the loop asks --------------------------------------------------

    cdef inline bint read_interest(self, bint readable) noexcept:
        return (readable or self.state == TLS_HANDSHAKING or self.state == TLS_UNWRAPPING
                or self.write_wants_read)

    cdef inline bint write_interest(self, bint writable) noexcept:
        if len(self.cipher):
            return True
        if self.state == TLS_OPEN:
            return writable and not self.write_wants_read
        if self.state == TLS_DRAINING:
            return True   # a write event is where the drained queue is noticed
        return writable and self.state == TLS_PLAIN

    cdef int on_read(self) except -1:
        """A read event: 1 if the dispatcher's read event should run."""
        if self.state == TLS_PLAIN:
            return 1
        self.read_socket()
        if self.state == TLS_DRAINING:
            return 0   # ciphertext waits in the BIO for the handshake
        if self.state == TLS_HANDSHAKING:
            self.handshake()
            if self.state != TLS_OPEN:
                return 0
        if self.state == TLS_UNWRAPPING:
            self.unwrap()
            return self.state == TLS_PLAIN and self.plain_len > 0
        self.decrypt()
        if self.write_wants_read:
            self.write_wants_read = False
            self.owner.mark_dirty()
        return self.plain_len > 0 or self.eof

    cdef int on_write(self) except -1:
        """A write event: 1 if the dispatcher's write event should run."""
        if len(self.cipher):
            self.flush()
            if len(self.cipher):
                return 0
        if self.state == TLS_DRAINING:
            if has_queued_output(self.owner):
                return 1
            self.begin_handshake()
            return 0
        return self.state == TLS_OPEN or self.state == TLS_PLAIN

    # -- the dispatcher's recv/send ------------------------------------------

    cdef object recv(self, buffer_size):
        if self.plain_len:
            data = self.take_plain(buffer_size)
            if self.plain_len:
                self.queue()
            elif self.state == TLS_PLAIN:
                self.detach()
            return data
        if self.state == TLS_PLAIN:
            self.detach()
            return self.owner.sock_recv(buffer_size)
        if self.eof:
            self.owner.close_once()
            return b""
        raise BlockingIOError(EWOULDBLOCK, "no TLS application data yet")

    cdef object take_plain(self, Py_ssize_t size):
        """Up to size bytes of the plaintext held, splitting at most one chunk."""
        cdef object plain = self.plain
        cdef Py_ssize_t n
        if size <= 0:
            return b""
        if self.plain_len <= size:
            data = plain.popleft() if len(plain) == 1 else b"".join(plain)
            plain.clear()
            self.plain_len = 0
            return data
        parts = []
        while size:
            first = plain[0]
            n = len(first)
            if n <= size:
                parts.append(plain.popleft())
            else:
                parts.append(first[:size])
                plain[0] = first[size:]
                n = size
            size -= n
            self.plain_len -= n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    cdef int add_plain(self, data) except -1:
        self.plain.append(data)
        self.plain_len += len(data)
        return 0

    cdef object send(self, data):
        cdef int state = self.state
        if len(self.cipher):
            self.flush()
            if len(self.cipher) >= TLS_CIPHER_BACKLOG or (state == TLS_PLAIN and len(self.cipher)):
                return 0
        if state == TLS_DRAINING:
            return self.send_plain(data)
        if state == TLS_PLAIN:
            self.detach()
            return self.owner.sock_send(data)
        if state != TLS_OPEN or self.write_wants_read:
            return 0
        try:
            sent = self.ssl_write(data)
        except _SSLWantReadError:
            self.write_wants_read = True
            self.owner.mark_dirty()
            return 0
        except (_SSLZeroReturnError, _SSLEOFError):
            self.owner.close_once()
            return 0
        self.flush()
        return sent

    # -- state changes -------------------------------------------------------

    cdef int begin_handshake(self) except -1:
        self.state = TLS_HANDSHAKING
        self.owner.mark_dirty()
        self.handshake()
        return 0

    cdef int begin_unwrap(self) except -1:
        if self.state != TLS_OPEN:
            raise ValueError("TLS is not established on this dispatcher (state %s)"
                             % _TLS_STATE_NAMES[self.state])
        self.state = TLS_UNWRAPPING
        self.owner.mark_dirty()
        self.unwrap()
        return 0

    cdef int handshake(self) except -1:
        try:
            self.sslobj.do_handshake()
        except _SSLWantReadError:
            self.flush()
            return 0
        except (_SSLEOFError, _SSLZeroReturnError):
            # The peer went away mid-handshake: a close, not an error (3.8
            # and 3.9 report the EOF as SSLZeroReturnError).
            _stats.tls_handshake_failures += 1
            self.owner.close_once()
            return 0
        except _SSLError:
            _stats.tls_handshake_failures += 1
            self.flush_alert()
            raise
        self.state = TLS_OPEN
        _stats.tls_handshakes += 1
        self.owner.mark_dirty()
        self.flush()
        done = getattr(self.owner, "handle_handshake_done", None)
        if done is not None:
            done()
        return 0

    cdef int unwrap(self) except -1:
        try:
            self.sslobj.unwrap()
        except _SSLWantReadError:
            self.flush()
            if self.eof:
                self.owner.close_once()
            return 0
        except (_SSLEOFError, _SSLZeroReturnError):
            self.owner.close_once()
            return 0
        self.flush()
        # The close_notify was the last record: what follows is plaintext.
        rest = self.incoming.read()
        if rest:
            self.add_plain(rest)
        self.state = TLS_PLAIN
        self.owner.mark_dirty()
        done = getattr(self.owner, "handle_unwrap_done", None)
        if done is not None:
            done()
        if not self.plain_len and not len(self.cipher):
            self.detach()
        return 0

    cdef int close_notify(self) except -1:
        """The connection is being closed: tell the peer (best effort, never
        blocks; skipped while ciphertext still waits, and when no TLS is open)."""
        if self.state != TLS_OPEN or len(self.cipher) or self.eof:
            return 0
        self.state = TLS_UNWRAPPING
        try:
            self.sslobj.unwrap()
        except _SSLError:
            pass
        try:
            data = self.bio_read()
            if data:
                self.sock_send(data)
        except OSError:
            pass
        return 0

    cdef int detach(self) except -1:
        cdef DispatcherBase owner = self.owner
        if owner._tls is self:
            owner._tls = None
            if self.eof and not self.plain_len:
                owner.close_once()
            owner.mark_dirty()
        return 0

    cdef int queue(self) except -1:
        if not self.queued:
            self.queued = True
            _tls_ready.append(self)
        return 0

    # -- moving bytes --------------------------------------------------------

    cdef int read_socket(self) except -1:
        if self.eof:
            return 0
        try:
            data = self.sock_recv(TLS_SOCKET_READ_SIZE)
        except BlockingIOError:
            return 0
        except OSError as why:
            if why.errno not in _DISCONNECTED:
                raise
            data = b""
        if data:
            if self.state == TLS_PLAIN:
                self.add_plain(data)
            else:
                self.bio_write(data)
        else:
            self.eof = True
            self.incoming.write_eof()
        return 0

    cdef int decrypt(self) except -1:
        incoming = self.incoming
        # A read asks for more than a record holds, so once the BIO is empty
        # nothing is left to decrypt (and no SSLWantReadError need be raised).
        while incoming.pending:
            try:
                chunk = self.ssl_read(TLS_SOCKET_READ_SIZE)
            except _SSLWantReadError:
                break
            except (_SSLZeroReturnError, _SSLEOFError):
                self.eof = True
                break
            if not chunk:
                self.eof = True   # close_notify
                break
            self.add_plain(chunk)
        if self.outgoing.pending:   # post-handshake messages may need an answer
            self.flush()
        return 0

    cdef object send_plain(self, data):
        try:
            return self.sock_send(data)
        except BlockingIOError:
            return 0
        except OSError as why:
            if why.errno in _DISCONNECTED:
                self.owner.close_once()
                return 0
            raise

    cdef int flush(self) except -1:
        cdef bint had = len(self.cipher) > 0
        cdef Py_ssize_t sent
        cipher = self.cipher if had else self.bio_read()
        while len(cipher):
            try:
                sent = self.sock_send(cipher)
            except BlockingIOError:
                break
            except OSError as why:
                if why.errno not in _DISCONNECTED:
                    raise
                self.cipher = b""
                self.eof = True
                self.owner.close_once()
                return 0
            if sent < len(cipher):
                cipher = memoryview(cipher)[sent:]
                break   # the socket is full: the rest waits for a write event
            cipher = self.bio_read() if self.outgoing.pending else b""
        self.cipher = cipher
        if had != (len(cipher) > 0):
            self.owner.mark_dirty()
        return 0

    cdef int flush_alert(self) except -1:
        """Best effort: let the peer see the alert of a failed handshake."""
        try:
            self.flush()
        except OSError:
            pass
        return 0


cdef bint has_queued_output(DispatcherBase owner) except -1:
    if isinstance(owner, ChatBase):
        return (<ChatBase>owner).has_output()
    if isinstance(owner, WithSendBase):
        return (<WithSendBase>owner).has_output()
    return False


# -- the loop's side ---------------------------------------------------------

cdef list tls_take_ready(Registry reg):
    """Entries of this registry whose TLS layer holds unread plaintext (taken
    off the ready list; layers of other maps stay on it)."""
    cdef TLSLayer layer
    cdef Entry entry
    cdef list taken = []
    cdef list kept = []
    for item in _tls_ready:
        layer = <TLSLayer>item
        owner = layer.owner
        if layer.owner._tls is not layer or not layer.plain_len or not layer.owner._entries:
            layer.queued = False
            continue
        entry = reg.entries.get(owner._fileno)
        if entry is not None and entry.obj is owner and not entry.removed:
            layer.queued = False
            taken.append(entry)
        else:
            kept.append(layer)
    _tls_ready[:] = kept
    return taken


cdef int tls_add_ready(list ready, list entries) except -1:
    """Read events for the entries tls_take_ready() gave, merged into the
    (entry, flags) list of a wait."""
    cdef Entry entry
    cdef dict index = {}
    cdef Py_ssize_t i
    for i in range(len(ready)):
        index[id(ready[i][0])] = i
    for e in entries:
        entry = <Entry>e
        i = index.get(id(entry), -1)
        if i < 0:
            ready.append((entry, FC_IN))
        else:
            ready[i] = (entry, <int>ready[i][1] | FC_IN)
    return 0


# -- the API (fastcore/tls.py documents it) ----------------------------------

def start_tls(dispatcher, context, server_side=False, server_hostname=None, session=None):
    cdef DispatcherBase disp
    cdef TLSLayer layer
    if not isinstance(dispatcher, DispatcherBase):
        raise TypeError(
            "start_tls() needs a fastcore dispatcher, not %s" % type(dispatcher).__name__)
    if not isinstance(context, _SSLContext):
        raise TypeError("context must be an ssl.SSLContext, not %s" % type(context).__name__)
    disp = <DispatcherBase>dispatcher
    if disp._tls is not None:
        raise ValueError("TLS is already started on %r" % (dispatcher,))
    # Plaintext pushed earlier in this event goes out as plaintext, as 3.11 sent it.
    disp.flush_deferred()
    if getattr(dispatcher, "socket", None) is None or not (
            getattr(dispatcher, "connected", False) or getattr(dispatcher, "connecting", False)):
        raise ValueError("start_tls() needs a connected dispatcher (or one in handle_connect)")
    layer = TLSLayer(disp, context, server_side, server_hostname, session)
    if isinstance(dispatcher, ChatBase):
        # Read past the command that started TLS: the peer's first records.
        rest = dispatcher.ac_in_buffer
        if rest:
            dispatcher.ac_in_buffer = b""
            layer.incoming.write(rest)
    disp._tls = layer
    disp.mark_dirty()
    if not has_queued_output(disp):
        layer.begin_handshake()
    return layer.sslobj


def stop_tls(dispatcher):
    tls_layer_of(dispatcher).begin_unwrap()


def tls_object(dispatcher):
    if isinstance(dispatcher, DispatcherBase) and (<DispatcherBase>dispatcher)._tls is not None:
        return (<DispatcherBase>dispatcher)._tls.sslobj
    return None


def tls_state(dispatcher):
    if isinstance(dispatcher, DispatcherBase) and (<DispatcherBase>dispatcher)._tls is not None:
        return _TLS_STATE_NAMES[(<DispatcherBase>dispatcher)._tls.state]
    return "plain"


cdef TLSLayer tls_layer_of(object dispatcher):
    if isinstance(dispatcher, DispatcherBase) and (<DispatcherBase>dispatcher)._tls is not None:
        return (<DispatcherBase>dispatcher)._tls
    raise ValueError("TLS is not started on %r" % (dispatcher,))
