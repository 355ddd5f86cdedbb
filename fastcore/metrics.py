"""A Prometheus endpoint on the loop: ``fastcore.metrics.serve(host, port, map=None)``.

The server is a dispatcher in ``map`` (the default map when None), run by the
same loop as the application. It answers ``GET /metrics`` (and ``HEAD``) with
``fastcore.stats(map)`` in the Prometheus text exposition format 0.0.4, one
request per connection (``Connection: close``). Other paths get 404, other
methods 405; a request larger than ``MAX_REQUEST`` bytes or not HTTP/1.x gets
400, after which the connection's input is drained and it is closed.
"""

import re
import socket

from fastcore import asyncore
from fastcore import stats as _stats

__all__ = ["MAX_REQUEST", "MetricsServer", "exposition", "serve"]

MAX_REQUEST = 8192  # bytes of request line and headers
_DRAIN_LIMIT = 65536  # bytes read and dropped after a 400 before closing anyway
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_REQUEST_LINE = re.compile(rb"([A-Z]+) (\S+) HTTP/1\.[0-9]\Z")
_HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~\x80-\xff]*\Z")

# (name, type, help, snapshot key): counters take the _total suffix.
_SCALARS = (
    ("fastcore_loop_iterations_total", "counter", "Loop iterations run.", "iterations"),
    (
        "fastcore_poll_seconds_total",
        "counter",
        "Time spent waiting for events in the poller.",
        "poll_seconds",
    ),
    (
        "fastcore_handler_seconds_total",
        "counter",
        "Time spent dispatching events to handlers.",
        "handler_seconds",
    ),
    ("fastcore_bytes_read_total", "counter", "Bytes read by dispatchers.", "bytes_read"),
    ("fastcore_bytes_written_total", "counter", "Bytes written by dispatchers.", "bytes_written"),
    (
        "fastcore_connections_accepted_total",
        "counter",
        "Connections accepted by listening dispatchers.",
        "accepted",
    ),
    (
        "fastcore_connections_rejected_total",
        "counter",
        "Accepted connections fastcore closed without handing them to the program:"
        " a bad, truncated or late PROXY protocol header (not a peer that left"
        " before sending a byte).",
        "rejected",
    ),
    (
        "fastcore_accept_pauses_total",
        "counter",
        "Times a listener reached its connection limit and stopped accepting"
        " (the kernel's backlog holds new connections meanwhile).",
        "accept_pauses",
    ),
    (
        "fastcore_tls_handshakes_total",
        "counter",
        "TLS handshakes completed.",
        "tls_handshakes",
    ),
    (
        "fastcore_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or that the peer left before they completed.",
        "tls_handshake_failures",
    ),
    (
        "fastcore_connections_closed_total",
        "counter",
        "Connected dispatchers closed.",
        "closed",
    ),
    ("fastcore_timers_run_total", "counter", "Timer callbacks run.", "timers_run"),
    ("fastcore_dispatchers", "gauge", "Dispatchers in the map.", "dispatchers"),
    ("fastcore_listening", "gauge", "Listening dispatchers in the map.", "listening"),
    ("fastcore_connections_open", "gauge", "Connected dispatchers in the map.", "connections_open"),
)


def _number(value):
    if isinstance(value, float):
        return repr(value)
    return str(value)


def exposition(map=None):
    """fastcore.stats(map) in the Prometheus text format (a str)."""
    import fastcore

    snapshot = _stats.snapshot(map)
    lines = []
    for name, kind, text, key in _SCALARS:
        lines += ["# HELP %s %s" % (name, text), "# TYPE %s %s" % (name, kind)]
        lines.append("%s %s" % (name, _number(snapshot[key])))
    name = "fastcore_iteration_handler_seconds"
    lines += [
        "# HELP %s Time per loop iteration from the end of its wait to its end:"
        " the handlers run and the loop's dispatch work around them." % name,
        "# TYPE %s histogram" % name,
    ]
    for bound, below in snapshot["handler_seconds_histogram"]:
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append('%s_bucket{le="%s"} %d' % (name, le, below))
    lines.append("%s_sum %s" % (name, _number(snapshot["handler_seconds"])))
    lines.append("%s_count %d" % (name, snapshot["handler_seconds_histogram"][-1][1]))
    name = "fastcore_events_total"
    lines += ["# HELP %s Handler calls by kind of event." % name, "# TYPE %s counter" % name]
    for kind, count in snapshot["events"].items():
        lines.append('%s{kind="%s"} %d' % (name, kind, count))
    name = "fastcore_info"
    lines += ["# HELP %s The fastcore in use." % name, "# TYPE %s gauge" % name]
    lines.append(
        '%s{version="%s",implementation="%s",backend="%s"} 1'
        % (
            name,
            fastcore.__version__,
            "extension" if fastcore.EXTENSION else "python",
            fastcore.default_backend(),
        )
    )
    return "\n".join(lines) + "\n"


def _response(status, reason, body, head_only=False, extra=()):
    data = body.encode("utf-8")
    head = ["HTTP/1.1 %d %s" % (status, reason)]
    head.append("Content-Type: %s" % (CONTENT_TYPE if status == 200 else "text/plain"))
    head.append("Content-Length: %d" % len(data))
    head.append("Connection: close")
    head.extend(extra)
    out = ("\r\n".join(head) + "\r\n\r\n").encode("ascii")
    return out if head_only else out + data


class MetricsConnection(asyncore.dispatcher):
    """One scrape: read the request head, answer, close."""

    def __init__(self, sock, map, server):
        asyncore.dispatcher.__init__(self, sock, map)
        self.server = server
        self.request = bytearray()
        self.reply = b""
        self.answered = False  # the reply is decided: no more parsing
        self.drain = False  # after the reply, read the rest before closing
        self.drained = 0

    def writable(self):
        return len(self.reply) > 0

    def handle_read(self):
        data = self.recv(65536)
        if not data:
            return
        if self.answered:
            self.drained += len(data)
            if self.drained > _DRAIN_LIMIT:
                self.close()
            return
        self.request += data
        found = _END_OF_HEAD.search(self.request)
        if found is None:
            if len(self.request) > MAX_REQUEST:
                self._answer(_response(400, "Bad Request", "request too large\n"), drain=True)
            return
        if found.end() > MAX_REQUEST:
            self._answer(_response(400, "Bad Request", "request too large\n"), drain=True)
            return
        self._answer(*self._route(bytes(self.request[: found.start()])))

    def _route(self, head):
        lines = re.split(rb"\r?\n", head)
        match = _REQUEST_LINE.match(lines[0])
        if match is None or not all(_HEADER_LINE.match(line) for line in lines[1:]):
            return _response(400, "Bad Request", "malformed request\n"), True
        method, target = match.group(1), match.group(2)
        path = target.split(b"?", 1)[0]
        if path != b"/metrics":
            return _response(404, "Not Found", "not found: only /metrics is served\n"), False
        if method not in (b"GET", b"HEAD"):
            return (
                _response(405, "Method Not Allowed", "GET or HEAD\n", extra=("Allow: GET, HEAD",)),
                False,
            )
        return _response(200, "OK", exposition(self.server.stats_map), method == b"HEAD"), False

    def _answer(self, reply, drain):
        self.answered = True
        self.drain = drain
        self.reply = reply
        self.request = bytearray()

    def handle_write(self):
        sent = self.send(self.reply)
        self.reply = self.reply[sent:]
        if not self.reply:
            if self.drain:
                # Closing with unread input would reset the connection and
                # could lose the 400 before the client reads it.
                try:
                    self.socket.shutdown(socket.SHUT_WR)
                except OSError:
                    self.close()
            else:
                self.close()

    def handle_close(self):
        self.close()


class MetricsServer(asyncore.dispatcher):
    """Listens on (host, port); ``address`` is where it listens."""

    def __init__(self, host, port, map=None, backlog=64):
        asyncore.dispatcher.__init__(self, map=map)
        self.stats_map = self._map
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.create_socket(family, socket.SOCK_STREAM)
        try:
            self.set_reuse_addr()
            self.bind((host, port))
            self.listen(backlog)
        except BaseException:
            self.close()
            raise
        self.address = self.socket.getsockname()

    def handle_accepted(self, sock, addr):
        MetricsConnection(sock, self._map, self)

    def handle_close(self):
        self.close()


def serve(host, port, map=None, backlog=64):
    """Listen on (host, port) for scrapes, as a dispatcher in ``map``; returns
    the MetricsServer (``.address`` is the bound address, ``.close()`` stops it)."""
    return MetricsServer(host, port, map, backlog)
