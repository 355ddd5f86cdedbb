"""The PROXY protocol (v1 and v2) on listeners behind a load balancer.

HAProxy's ``send-proxy`` / ``send-proxy-v2`` (and other balancers) open each
connection with a header giving the client's address. A listener opts in::

    from fastcore.proxy import accept_proxy_protocol, peer_address

    class Server(Listener):
        def __init__(self, sock):
            super().__init__(sock)
            accept_proxy_protocol(self)

        def handle_accepted(self, sock, addr):
            Echo(sock)              # addr: the client's address, from the header

Each accepted connection is then read by a small dispatcher of its own in the
listener's map, so the loop keeps serving everyone else meanwhile. Only the
header's bytes are taken from the socket (v1's line is peeked at, then read up
to its line feed; v2's length is in its first 16 bytes): whatever the client
sent after it is still in the socket when ``handle_accepted(sock, addr)`` runs,
for async_chat, TLS (``fastcore.tls.start_tls``) or any other reader. The
socket is the one ``accept()`` returned, in the blocking mode it had then.

``addr`` is the source address of the header: ``(host, port)`` for TCP over
IPv4, ``(host, port, 0, 0)`` for IPv6, a path for a UNIX socket. A v1
``UNKNOWN`` header, a v2 ``LOCAL`` one (the balancer's health checks) or a v2
header with an unspecified family give the real peer's address, as
``accept()`` did. A dispatcher made on the socket still gets the balancer's
address from ``getpeername()`` (so in ``self.addr``): ``peer_address(d)``
gives the client's, ``proxy_header(d)`` the whole header.

A connection whose header is missing, malformed, truncated, too long, of a
version not accepted, with an unknown v2 command or family, or not complete
within ``timeout`` seconds is closed; the listener's ``log_info(reason,
'error')`` says why (``fastcore.use_logging()`` sends it to ``logging``);
``handle_accepted`` never sees it. One that closes or resets before sending
a byte (a balancer's health check does) is logged with type ``'info'``.
The closed ones other than those count as ``rejected`` in ``fastcore.stats()``
(``fastcore_connections_rejected_total`` in ``fastcore.metrics``).
"""

import collections
import socket
import struct

import fastcore
from fastcore import asyncore
from fastcore._impl import core as _core
from fastcore._weak import WeakKeyTable

__all__ = ["ProxyHeader", "accept_proxy_protocol", "peer_address", "proxy_header"]

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # the specification's bound, "\r\n" included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LENGTH = 16  # signature, version and command, family, length
# Addresses and TLVs (skipped): a UNIX address block is 216 bytes, and
# balancers' TLVs (ALPN, authority, TLS details, cloud endpoint ids) are tens
# of bytes; v2's 16-bit length would otherwise let each pending connection
# hold 64 KiB.
V2_MAX_LENGTH = V2_FIXED_LENGTH + 4096
# The log_info type for a connection that went away before sending a byte: not
# bad input but the usual end of a balancer's health check (connect, then reset).
GONE = "info"

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
# v2 family byte (address family << 4 | transport) -> address block length.
_V2_ADDRESS_LENGTHS = {
    0x00: 0,  # unspecified: use the real peer's address
    0x11: 12, 0x12: 12,  # IPv4, stream or datagram
    0x21: 36, 0x22: 36,  # IPv6
    0x31: 216, 0x32: 216,  # UNIX
}

ProxyHeader = collections.namedtuple("ProxyHeader", "version command source destination")
ProxyHeader.__doc__ = """A PROXY protocol header as read: ``version`` 1 or 2,
``command`` ``"PROXY"`` or ``"LOCAL"`` (v2 health checks); ``source`` and
``destination`` as socket addresses, None for v1 ``UNKNOWN``, v2 ``LOCAL``
or an unspecified v2 family."""

# Sockets handed on -> their ProxyHeader (dropped with the socket).
_headers = WeakKeyTable()


def accept_proxy_protocol(listener, versions=(1, 2), timeout=5.0):
    """Read a PROXY protocol header on every connection ``listener`` accepts,
    before its ``handle_accepted(sock, addr)`` runs (see the module's docstring).

    ``versions``: the header versions accepted, (1, 2), (1,) or (2,);
    ``timeout``: seconds a connection has to send its whole header. The
    listener's ``handle_accepted`` is what asyncore's ``handle_accept`` calls:
    a ``handle_accept`` of its own that does not call it bypasses this.
    TypeError/ValueError for a listener that is not a fastcore dispatcher or
    already reads the protocol, and for bad ``versions`` or ``timeout``.
    """
    if not isinstance(listener, asyncore.dispatcher):
        raise TypeError("accept_proxy_protocol() needs a fastcore asyncore.dispatcher, not %s"
                        % type(listener).__name__)
    try:
        accepted = frozenset(versions)
    except TypeError:
        raise TypeError("versions must be a collection of 1 and/or 2, not %r"
                        % (versions,)) from None
    if not accepted or not accepted <= {1, 2}:
        raise ValueError("versions must hold 1, 2 or both, not %r" % (versions,))
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("timeout must be a number of seconds, not %r" % (timeout,))
    if not timeout > 0:
        raise ValueError("timeout must be positive, not %r" % (timeout,))
    if isinstance(vars(listener).get("handle_accepted"), _HeaderReading):
        raise ValueError("%r already reads the PROXY protocol" % (listener,))
    listener.handle_accepted = _HeaderReading(listener, accepted, float(timeout))


def proxy_header(obj):
    """The ProxyHeader read before ``obj`` (a socket handed to handle_accepted,
    or a dispatcher over one) was handed on; None if it came with none."""
    sock = obj.socket if isinstance(obj, asyncore.dispatcher) else obj
    try:
        return _headers.get(sock)
    except TypeError:  # not weak-referenceable: not a socket handed on here
        return None


def peer_address(obj):
    """The client's address: the PROXY header's source when ``obj`` (a socket
    or a dispatcher over one) came with one, else ``getpeername()``."""
    header = proxy_header(obj)
    if header is not None and header.source is not None:
        return header.source
    sock = obj.socket if isinstance(obj, asyncore.dispatcher) else obj
    return sock.getpeername()


class _BadHeader(Exception):
    """The reason a connection's header is refused."""


class _HeaderReading:
    """The listener's handle_accepted while it reads the PROXY protocol."""

    def __init__(self, listener, versions, timeout):
        self.listener = listener
        self.handle_accepted = listener.handle_accepted  # the listener's own, called after
        self.versions = versions
        self.timeout = timeout

    def __call__(self, sock, addr):
        _PendingHeader(self, sock, addr)


class _PendingHeader(asyncore.dispatcher_with_send):
    # dispatcher_with_send with nothing ever sent: the core knows from its
    # state that it only wants to read, without asking writable() every iteration.

    def __init__(self, reading, sock, addr):
        self.reading = reading
        self.peer = addr
        self.blocking_timeout = sock.gettimeout()  # restored when handed on
        self.received = bytearray()  # the header so far
        self.timer = None
        asyncore.dispatcher_with_send.__init__(self, sock, reading.listener._map)
        if not self.connected:  # getpeername() failed: the peer is gone already
            self.refuse("it was gone when accepted", GONE)
            return
        self.timer = fastcore.call_later(reading.timeout, self.expire)

    def handle_read(self):
        sock = self.socket
        while True:
            try:
                wanted = _still_wanted(self.received, self.reading.versions)
            except _BadHeader as why:
                self.refuse(str(why))
                return
            if wanted == 0:
                break
            try:
                data = sock.recv(wanted, socket.MSG_PEEK)
                if data:
                    data = sock.recv(_header_part(self.received, data))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as why:
                self.refuse("reading its PROXY protocol header failed: %s" % (why,),
                            "error" if self.received else GONE)
                return
            if not data:
                self.refuse_truncated()
                return
            self.received += data
        try:
            header = _parse(bytes(self.received))
        except _BadHeader as why:
            self.refuse(str(why))
            return
        self.hand_on(header)

    def hand_on(self, header):
        self.timer.cancel()
        self.timer = None
        sock = self.socket
        self.del_channel()  # leaves the map; the socket stays open for the handler
        sock.settimeout(self.blocking_timeout)
        _headers[sock] = header
        listener = self.reading.listener
        # Leaving the map ended this dispatcher's count against the listener's
        # connection limit (limit_connections): the dispatcher the handler
        # makes on the socket counts from now on, as one made at accept() does.
        _core.claim_connection(listener, sock)
        try:
            self.reading.handle_accepted(sock, header.source or self.peer)
        except (asyncore.ExitNow, KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            # where an exception of handle_accepted goes without the PROXY protocol
            listener.handle_error()

    def handle_close(self):
        self.refuse_truncated()

    def expire(self):
        self.timer = None
        self.refuse("no complete PROXY protocol header within %g s" % (self.reading.timeout,))

    def refuse_truncated(self):
        if self.received:
            self.refuse("closed within its PROXY protocol header (%d bytes of it read)"
                        % len(self.received))
        else:
            self.refuse("closed before sending a PROXY protocol header", GONE)

    def refuse(self, reason, log_type="error"):
        if log_type != GONE:
            # Bad or late input: a peer that left before sending a byte (a
            # health check) was not turned away.
            _core.count_rejected()
        self.reading.listener.log_info(
            "PROXY protocol: closing the connection from %s: %s" % (_address_text(self.peer),
                                                                     reason), log_type)
        self.close()

    def close(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        asyncore.dispatcher_with_send.close(self)


def _still_wanted(received, versions):
    """How many more bytes the header may need (0: it is complete), or
    _BadHeader as soon as what was received cannot begin a good one."""
    if not received:
        return V2_FIXED_LENGTH  # the shortest v2 header; v1's line is read up to its b"\n"
    if V2_SIGNATURE.startswith(received[:12]):
        version = 2
    elif V1_PREFIX.startswith(received[:6]):
        version = 1
    else:
        raise _BadHeader("it sent no PROXY protocol header (it began %r)" % bytes(received[:16]))
    if version not in versions:
        raise _BadHeader("it sent a PROXY protocol v%d header; accepted: %s"
                         % (version, ", ".join("v%d" % v for v in sorted(versions))))
    if version == 1:
        if received.endswith(b"\n"):
            return 0
        if len(received) >= V1_MAX_LENGTH:
            raise _BadHeader("its PROXY protocol v1 header has no line end within %d bytes"
                             % V1_MAX_LENGTH)
        return V1_MAX_LENGTH - len(received)
    if len(received) < V2_FIXED_LENGTH:
        return V2_FIXED_LENGTH - len(received)
    command = _check_v2_fixed_part(received)
    total = V2_FIXED_LENGTH + struct.unpack_from("!H", received, 14)[0]
    if total > V2_MAX_LENGTH:
        raise _BadHeader("its PROXY protocol v2 header is %d bytes, over the %d accepted"
                         % (total, V2_MAX_LENGTH))
    if command == _V2_PROXY and total - V2_FIXED_LENGTH < _V2_ADDRESS_LENGTHS[received[13]]:
        raise _BadHeader("its PROXY protocol v2 header is too short for its addresses")
    return total - len(received)


def _header_part(received, peeked):
    """How many of the peeked bytes belong to the header: v1's line ends at
    its b"\\n"; a v2 read never asks past the header."""
    if (received or peeked)[:1] == b"P":
        end = peeked.find(b"\n")
        if end >= 0:
            return end + 1
    return len(peeked)


def _check_v2_fixed_part(received):
    version, command = received[12] >> 4, received[12] & 0xF
    if version != 2:
        raise _BadHeader("its PROXY protocol v2 header has version %d" % version)
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise _BadHeader("its PROXY protocol v2 header has an unknown command %#x" % command)
    # LOCAL: the specification has the family ignored with the rest of the block.
    if command == _V2_PROXY and received[13] not in _V2_ADDRESS_LENGTHS:
        raise _BadHeader("its PROXY protocol v2 header has an unknown address family and "
                         "transport %#04x" % received[13])
    return command


def _parse(header):
    """The ProxyHeader of a complete header (checked by _still_wanted as it came)."""
    if header[:1] == b"P":
        return _parse_v1(header)
    command = header[12] & 0xF
    family = header[13]
    if command == _V2_LOCAL or family == 0x00:
        return ProxyHeader(2, "PROXY" if command == _V2_PROXY else "LOCAL", None, None)
    block = header[V2_FIXED_LENGTH:]
    if family >> 4 == 1:
        source, destination = _inet(block, socket.AF_INET, 4)
    elif family >> 4 == 2:
        source, destination = _inet(block, socket.AF_INET6, 16)
    else:
        source, destination = _unix_path(block[:108]), _unix_path(block[108:216])
    return ProxyHeader(2, "PROXY", source, destination)


def _inet(block, family, size):
    source = socket.inet_ntop(family, block[:size])
    destination = socket.inet_ntop(family, block[size:2 * size])
    source_port, destination_port = struct.unpack_from("!HH", block, 2 * size)
    if family == socket.AF_INET6:
        return (source, source_port, 0, 0), (destination, destination_port, 0, 0)
    return (source, source_port), (destination, destination_port)


def _unix_path(raw):
    if raw[:1] == b"\0":  # Linux's abstract namespace, as socket.getpeername() gives it
        return raw.rstrip(b"\0")
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_v1(header):
    if not header.endswith(b"\r\n"):
        raise _BadHeader("its PROXY protocol v1 header does not end with CRLF")
    try:
        fields = header[:-2].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise _BadHeader("its PROXY protocol v1 header is not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(1, "PROXY", None, None)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise _BadHeader("malformed PROXY protocol v1 header %r" % header)
    family = socket.AF_INET if fields[1] == "TCP4" else socket.AF_INET6
    source_host, destination_host, source_port, destination_port = fields[2:]
    try:
        for host in (source_host, destination_host):
            socket.inet_pton(family, host)
    except OSError:
        raise _BadHeader("malformed PROXY protocol v1 header %r: not %s addresses"
                         % (header, fields[1])) from None
    ports = []
    for port in (source_port, destination_port):
        if not (port.isdigit() and int(port) <= 65535
                and (port == "0" or port[0] != "0")):
            raise _BadHeader("malformed PROXY protocol v1 header %r: bad port" % header)
        ports.append(int(port))
    extra = (0, 0) if family == socket.AF_INET6 else ()
    return ProxyHeader(1, "PROXY", (source_host, ports[0]) + extra,
                       (destination_host, ports[1]) + extra)


def _address_text(addr):
    if isinstance(addr, tuple) and len(addr) >= 2:
        return "%s:%s" % (addr[0], addr[1])
    return repr(addr)
