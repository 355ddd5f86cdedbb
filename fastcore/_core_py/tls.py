"""TLS for the core's dispatchers: an ``ssl.SSLObject`` between two memory
BIOs, fed from and drained to the dispatcher's socket by the loop (the twin
of src/tls.pxi; the public API is fastcore/tls.py).

The socket stays a plain socket. Read events pull ciphertext into the
incoming BIO, drive the handshake or the unwrap, and decrypt into a
plaintext buffer; ``handle_read`` runs only when that buffer holds data or
the peer closed, so ``recv`` never has to report "nothing yet" in the middle
of a record. ``send`` encrypts into the outgoing BIO and sends what the
socket takes; the rest waits for a write event, and ``send`` reports 0 (try
again) while it waits. Bytes an async_chat read past a STARTTLS command are
handed to the incoming BIO, so none is lost or reordered.
"""

import ssl
from collections import deque
from errno import EWOULDBLOCK

from fastcore._common import _DISCONNECTED, POLLIN
from fastcore._core_py.chat import ChatBase
from fastcore._core_py.dispatcher import DispatcherBase, WithSendBase
from fastcore._core_py.stats import counts

SOCKET_READ_SIZE = 65536
CIPHER_BACKLOG = 65536  # unsent ciphertext above which send() reports 0

# Layer states.
DRAINING = 0  # plaintext queued before start_tls() is still being sent
HANDSHAKING = 1
OPEN = 2
UNWRAPPING = 3
PLAIN = 4  # unwrapped: plaintext read with the close_notify is handed out first

STATE_NAMES = ("draining", "handshaking", "open", "unwrapping", "unwrapped")

# Layers holding plaintext their dispatcher has not read yet: the loop gives
# them a read event without waiting for the socket.
_ready = []


class TLSLayer:
    def __init__(self, owner, context, server_side, server_hostname, session):
        self.owner = owner
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(
            self.incoming,
            self.outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
            session=session,
        )
        self.state = DRAINING
        self.plain = deque()  # decrypted, not yet recv()'d
        self.plain_len = 0
        self.cipher = b""  # encrypted, not yet taken by the socket
        # Bound methods, looked up once: the socket and the BIOs stay for good.
        self.sock_recv = owner.socket.recv
        self.sock_send = owner.socket.send
        self.bio_write = self.incoming.write
        self.bio_read = self.outgoing.read
        # ssl.SSLObject.read/write are Python methods that only pass the
        # call on to the _ssl object under them: call that one directly.
        engine = getattr(self.sslobj, "_sslobj", self.sslobj)
        self.ssl_read = engine.read
        self.ssl_write = engine.write
        self.eof = False  # the peer closed (TCP EOF or close_notify)
        self.write_wants_read = False  # SSL_write needs the peer first
        self.queued = False  # in _ready

    # -- what the loop asks --------------------------------------------------

    def read_interest(self, readable):
        return readable or self.state in (HANDSHAKING, UNWRAPPING) or self.write_wants_read

    def write_interest(self, writable):
        if self.cipher:
            return True
        if self.state == OPEN:
            return writable and not self.write_wants_read
        if self.state == DRAINING:
            # A write event is where the drained queue is noticed.
            return True
        return writable and self.state == PLAIN

    def on_read(self):
        """A read event: True if the dispatcher's handle_read_event should run."""
        if self.state == PLAIN:
            return True
        self._read_socket()
        if self.state == DRAINING:
            return False  # ciphertext waits in the BIO for the handshake
        if self.state == HANDSHAKING:
            self._handshake()
            if self.state != OPEN:
                return False
        if self.state == UNWRAPPING:
            self._unwrap()
            return self.state == PLAIN and self.plain_len > 0
        self._decrypt()
        if self.write_wants_read:
            self.write_wants_read = False
            self.owner._mark_dirty()
        return self.plain_len > 0 or self.eof

    def on_write(self):
        """A write event: True if the dispatcher's handle_write_event should run."""
        if self.cipher:
            self._flush()
            if self.cipher:
                return False
        if self.state == DRAINING:
            if _has_output(self.owner):
                return True
            self.begin_handshake()
            return False
        return self.state in (OPEN, PLAIN)

    def read_event(self):
        if self.on_read():
            self.owner.handle_read_event()

    def write_event(self):
        if self.on_write():
            self.owner.handle_write_event()

    # -- the dispatcher's recv/send ------------------------------------------

    def recv(self, buffer_size):
        if self.plain_len:
            data = self._take_plain(buffer_size)
            if self.plain_len:
                self._queue()
            elif self.state == PLAIN:
                self._detach()
            return data
        if self.state == PLAIN:
            self._detach()
            return DispatcherBase.recv(self.owner, buffer_size)
        if self.eof:
            self.owner._close_once()
            return b""
        raise BlockingIOError(EWOULDBLOCK, "no TLS application data yet")

    def _take_plain(self, size):
        """Up to size bytes of the plaintext held, splitting at most one chunk."""
        plain = self.plain
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

    def _add_plain(self, data):
        self.plain.append(data)
        self.plain_len += len(data)

    def send(self, data):
        state = self.state
        if self.cipher:
            self._flush()
            if len(self.cipher) >= CIPHER_BACKLOG or (state == PLAIN and self.cipher):
                return 0
        if state == DRAINING:
            return self._send_plain(data)
        if state == PLAIN:
            self._detach()
            return DispatcherBase.send(self.owner, data)
        if state != OPEN or self.write_wants_read:
            return 0
        try:
            sent = self.ssl_write(data)
        except ssl.SSLWantReadError:
            self.write_wants_read = True
            self.owner._mark_dirty()
            return 0
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            self.owner._close_once()
            return 0
        self._flush()
        return sent

    # -- state changes -------------------------------------------------------

    def begin_handshake(self):
        self.state = HANDSHAKING
        self.owner._mark_dirty()
        self._handshake()

    def begin_unwrap(self):
        if self.state != OPEN:
            raise ValueError(
                "TLS is not established on this dispatcher (state %s)" % STATE_NAMES[self.state]
            )
        self.state = UNWRAPPING
        self.owner._mark_dirty()
        self._unwrap()

    def _handshake(self):
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            # The peer went away mid-handshake: a close, not an error (3.8
            # and 3.9 report the EOF as SSLZeroReturnError).
            counts.tls_handshake_failures += 1
            self.owner._close_once()
            return
        except ssl.SSLError:
            counts.tls_handshake_failures += 1
            self._flush_alert()
            raise
        self.state = OPEN
        counts.tls_handshakes += 1
        self.owner._mark_dirty()
        self._flush()
        done = getattr(self.owner, "handle_handshake_done", None)
        if done is not None:
            done()

    def _unwrap(self):
        try:
            self.sslobj.unwrap()
        except ssl.SSLWantReadError:
            self._flush()
            if self.eof:
                self.owner._close_once()
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            self.owner._close_once()
            return
        self._flush()
        # The close_notify was the last record: what follows is plaintext.
        rest = self.incoming.read()
        if rest:
            self._add_plain(rest)
        self.state = PLAIN
        self.owner._mark_dirty()
        done = getattr(self.owner, "handle_unwrap_done", None)
        if done is not None:
            done()
        if not self.plain_len and not self.cipher:
            self._detach()

    def close_notify(self):
        """The connection is being closed: tell the peer (best effort, never
        blocks; skipped while ciphertext still waits, and when no TLS is open)."""
        if self.state != OPEN or self.cipher or self.eof:
            return
        self.state = UNWRAPPING
        try:
            self.sslobj.unwrap()
        except ssl.SSLError:
            pass
        try:
            data = self.bio_read()
            if data:
                self.sock_send(data)
        except OSError:
            pass

    def _detach(self):
        owner = self.owner
        if owner._fc_tls is self:
            object.__setattr__(owner, "_fc_tls", None)
            if self.eof and not self.plain_len:
                owner._close_once()
            owner._mark_dirty()

    def _queue(self):
        if not self.queued:
            self.queued = True
            _ready.append(self)

    # -- moving bytes --------------------------------------------------------

    def _read_socket(self):
        if self.eof:
            return
        try:
            data = self.sock_recv(SOCKET_READ_SIZE)
        except BlockingIOError:
            return
        except OSError as why:
            if why.errno not in _DISCONNECTED:
                raise
            data = b""
        if data:
            if self.state == PLAIN:
                self._add_plain(data)
            else:
                self.bio_write(data)
        else:
            self.eof = True
            self.incoming.write_eof()

    def _decrypt(self):
        incoming = self.incoming
        # A read asks for more than a record holds, so once the BIO is empty
        # nothing is left to decrypt (and no SSLWantReadError need be raised).
        while incoming.pending:
            try:
                chunk = self.ssl_read(SOCKET_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.eof = True
                break
            if not chunk:
                self.eof = True  # close_notify
                break
            self._add_plain(chunk)
        if self.outgoing.pending:  # post-handshake messages may need an answer
            self._flush()

    def _send_plain(self, data):
        try:
            return self.sock_send(data)
        except BlockingIOError:
            return 0
        except OSError as why:
            if why.errno in _DISCONNECTED:
                self.owner._close_once()
                return 0
            raise

    def _flush(self):
        had = bool(self.cipher)
        cipher = self.cipher or self.bio_read()
        while cipher:
            try:
                sent = self.sock_send(cipher)
            except BlockingIOError:
                break
            except OSError as why:
                if why.errno not in _DISCONNECTED:
                    raise
                cipher = b""
                self.eof = True
                self.cipher = b""
                self.owner._close_once()
                return
            if sent < len(cipher):
                cipher = memoryview(cipher)[sent:]
                break  # the socket is full: the rest waits for a write event
            cipher = self.bio_read() if self.outgoing.pending else b""
        self.cipher = cipher
        if had != bool(cipher):
            self.owner._mark_dirty()

    def _flush_alert(self):
        """Best effort: let the peer see the alert of a failed handshake."""
        try:
            self._flush()
        except OSError:
            pass


def _has_output(owner):
    if isinstance(owner, ChatBase):
        return bool(owner.producer_fifo)
    if isinstance(owner, WithSendBase):
        return len(owner.out_buffer) > 0
    return False


# -- the loop's side ---------------------------------------------------------


def take_ready(registry):
    """Entries of this registry whose TLS layer holds unread plaintext (taken
    off the ready list; layers of other maps stay on it)."""
    if not _ready:
        return ()
    entries = registry.entries
    taken = []
    kept = []
    for layer in _ready:
        owner = layer.owner
        if owner._fc_tls is not layer or not layer.plain_len or not owner._fc_entries:
            layer.queued = False
            continue
        entry = entries.get(owner._fileno)
        if entry is not None and entry.obj is owner:
            layer.queued = False
            taken.append(entry)
        else:
            kept.append(layer)
    _ready[:] = kept
    return taken


# -- the API (fastcore/tls.py documents it) ----------------------------------


def start_tls(dispatcher, context, server_side=False, server_hostname=None, session=None):
    if not isinstance(dispatcher, DispatcherBase):
        raise TypeError(
            "start_tls() needs a fastcore dispatcher, not %s" % type(dispatcher).__name__
        )
    if not isinstance(context, ssl.SSLContext):
        raise TypeError("context must be an ssl.SSLContext, not %s" % type(context).__name__)
    if dispatcher._fc_tls is not None:
        raise ValueError("TLS is already started on %r" % (dispatcher,))
    # Plaintext pushed earlier in this event goes out as plaintext, as 3.11 sent it.
    if dispatcher._fc_deferred is not None:
        dispatcher._fc_flush_deferred()
    if getattr(dispatcher, "socket", None) is None or not (
        dispatcher.connected or getattr(dispatcher, "connecting", False)
    ):
        raise ValueError("start_tls() needs a connected dispatcher (or one in handle_connect)")
    layer = TLSLayer(dispatcher, context, server_side, server_hostname, session)
    if isinstance(dispatcher, ChatBase):
        # Read past the command that started TLS: the peer's first records.
        rest = dispatcher.ac_in_buffer
        if rest:
            dispatcher.ac_in_buffer = b""
            layer.incoming.write(rest)
    object.__setattr__(dispatcher, "_fc_tls", layer)
    dispatcher._mark_dirty()
    if not _has_output(dispatcher):
        layer.begin_handshake()
    return layer.sslobj


def stop_tls(dispatcher):
    layer = _layer_of(dispatcher)
    layer.begin_unwrap()


def tls_object(dispatcher):
    layer = getattr(dispatcher, "_fc_tls", None)
    return None if layer is None else layer.sslobj


def tls_state(dispatcher):
    layer = getattr(dispatcher, "_fc_tls", None)
    if layer is None:
        return "plain"
    return STATE_NAMES[layer.state]


def _layer_of(dispatcher):
    layer = getattr(dispatcher, "_fc_tls", None)
    if layer is None:
        raise ValueError("TLS is not started on %r" % (dispatcher,))
    return layer


# -- the loop's side, continued: events through the layer --------------------


def read_handler(obj):
    """What a read event runs: the TLS layer first when obj has one."""
    layer = getattr(obj, "_fc_tls", None)
    return obj.handle_read_event if layer is None else layer.read_event


def write_handler(obj):
    """What a write event runs: the TLS layer first when obj has one."""
    layer = getattr(obj, "_fc_tls", None)
    return obj.handle_write_event if layer is None else layer.write_event


def add_ready(ready, entries):
    """Read events for the entries take_ready() gave, merged into the
    (fd, obj, flags, mask) list a wait returned."""
    index = {item[0]: i for i, item in enumerate(ready)}
    for entry in entries:
        i = index.get(entry.fd)
        if i is None:
            ready.append((entry.fd, entry.obj, POLLIN, entry.mask))
        else:
            fd, obj, flags, mask = ready[i]
            ready[i] = (fd, obj, flags | POLLIN, mask)
    return ready
