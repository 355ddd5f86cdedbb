"""fastcore.metrics: the Prometheus endpoint, on the same loop, scraped by real
HTTP clients; the output checked by a strict parser of the text format 0.0.4."""

import http.client
import math
import re
import socket
import urllib.error
import urllib.request

import pytest
import support
from support import run_until

pytestmark = pytest.mark.fastcore_only

# -- a strict parser of the Prometheus text exposition format 0.0.4 ------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(r"(%s)(?:\{((?:%s)(?:,%s)*,?)?\})? (?P<value>\S+)(?: -?[0-9]+)?\Z"
                     % (_NAME, _LABEL, _LABEL))
_HELP = re.compile(r"# HELP (%s) (.*)\Z" % _NAME)
_TYPE = re.compile(r"# TYPE (%s) (counter|gauge|histogram|summary|untyped)\Z" % _NAME)


def _value(text):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", text):
        raise ValueError("bad sample value %r" % text)
    return float(text)


def _family_of(sample_name, families):
    """A histogram's samples are its name with _bucket, _sum or _count."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample_name[: -len(suffix)]
        if sample_name.endswith(suffix) and families.get(base, {}).get("type") == "histogram":
            return base
    return sample_name


def _check_histogram(name, samples):
    # Keys: (("", sample name),) + labels. Buckets cumulative, ending at +Inf == count.
    buckets = []
    for key, value in samples.items():
        if key[0] == ("", name + "_bucket"):
            les = [v for k, v in key[1:] if k == "le"]
            if len(les) != 1:
                raise ValueError("bucket of %s without one le label" % name)
            buckets.append((_value(les[0]), value))
    buckets.sort()
    if not buckets or buckets[-1][0] != math.inf:
        raise ValueError("histogram %s without a +Inf bucket" % name)
    if any(b[1] > c[1] for b, c in zip(buckets, buckets[1:])):
        raise ValueError("histogram %s buckets not cumulative" % name)
    count = samples.get((("", name + "_count"),))
    if count != buckets[-1][1] or (("", name + "_sum"),) not in samples:
        raise ValueError("histogram %s: _count is not the +Inf bucket, or no _sum" % name)


def histogram_buckets(family, name):
    """{upper bound: cumulative count} of a parsed histogram family."""
    return {_value(dict(key[1:])["le"]): value for key, value in family["samples"].items()
            if key[0] == ("", name + "_bucket")}


def parse_exposition(text):
    """{family: {"type", "help", "samples": {labels (sorted tuple): value}}};
    raises ValueError on anything the format does not allow."""
    if not text.endswith("\n"):
        raise ValueError("no final newline")
    families = {}
    current = None
    done = set()
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        where = "line %d (%r)" % (lineno, line)
        if line.startswith("#"):
            m = _HELP.match(line) or _TYPE.match(line)
            if m is None:
                raise ValueError("bad comment at " + where)
            name = m.group(1)
            if name in done:
                raise ValueError("%s after its samples at %s" % (name, where))
            fam = families.setdefault(name, {"type": None, "help": None, "samples": {}})
            key = "help" if line.startswith("# HELP") else "type"
            if fam[key] is not None:
                raise ValueError("second %s for %s at %s" % (key, name, where))
            if fam["samples"]:
                raise ValueError("%s after samples at %s" % (key, where))
            fam[key] = m.group(2)
            if current is not None and current != name:
                done.add(current)
            current = name
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError("bad sample at " + where)
        name = _family_of(m.group(1), families)
        if name in done or name not in families or families[name]["type"] is None:
            raise ValueError("sample without its TYPE first, or not grouped, at " + where)
        if current is not None and current != name:
            done.add(current)
        current = name
        labels = tuple(sorted(re.findall(_LABEL, m.group(2) or "")))
        if len({k for k, _ in labels}) != len(labels):
            raise ValueError("repeated label at " + where)
        samples = families[name]["samples"]
        if labels in samples:
            raise ValueError("repeated series at " + where)
        samples[labels if name == m.group(1) else (("", m.group(1)),) + labels] = \
            _value(m.group("value"))
    for name, fam in families.items():
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
        if fam["type"] == "counter":
            if not name.endswith("_total"):
                raise ValueError("counter %s without _total" % name)
            if any(v < 0 for v in fam["samples"].values()):
                raise ValueError("negative counter %s" % name)
        if not fam["samples"]:
            raise ValueError("family %s without samples" % name)
    return families


def test_parser_rejects():
    good = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n"
    assert parse_exposition(good)["a_total"]["samples"] == {(): 1.0}
    histogram = ("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                 "h_sum 3.5\nh_count 2\n")
    assert histogram_buckets(parse_exposition(histogram)["h"], "h") == {1.0: 1, math.inf: 2}
    for bad in (
        good[:-1],                                           # no final newline
        "a_total 1\n",                                       # no TYPE
        "# TYPE a_total counter\na_total x\n",               # bad value
        "# TYPE a_total counter\na_total -1\n",              # negative counter
        "# TYPE a counter\na 1\n",                           # counter without _total
        "# TYPE a gauge\na 1\na 2\n",                        # repeated series
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n",  # not grouped
        "# TYPE a gauge\na{x=1} 1\n",                        # unquoted label
        "# TYPE a gauge\n\na 1\n",                           # blank line
        "# TYPE a gauge\na 1\n# TYPE a gauge\n",              # second TYPE
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",  # no +Inf
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
        "h_sum 1\nh_count 1\n",                                # not cumulative
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",  # count
    ):
        with pytest.raises(ValueError):
            parse_exposition(bad)


# -- running a client while the loop serves ---------------------------------------


def in_thread_while_looping(asyncore, map, fn, *args):
    thread = support.start_thread(fn, *args)
    run_until(asyncore, map, lambda: not thread.is_alive(), what="client done")
    return thread.finish()


def http_get(address, path="/metrics", method="GET"):
    conn = http.client.HTTPConnection(address[0], address[1], timeout=support.DEFAULT_TIMEOUT)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def raw_exchange(address, request):
    """Send request, read until EOF: (response bytes, EOF seen)."""
    sock = socket.create_connection(address, timeout=support.DEFAULT_TIMEOUT)
    try:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)
    finally:
        sock.close()


@pytest.fixture
def metrics(fastcore_pkg):
    import fastcore.metrics

    fastcore_pkg.stats.reset()
    return fastcore.metrics


def test_scrape_with_urllib(asyncore, sockmap, metrics):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    url = "http://%s:%d/metrics" % server.address

    def scrape():
        with urllib.request.urlopen(url, timeout=support.DEFAULT_TIMEOUT) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode("utf-8")

    status, ctype, body = in_thread_while_looping(asyncore, sockmap, scrape)
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    families = parse_exposition(body)
    expected = {
        "fastcore_loop_iterations_total": "counter",
        "fastcore_poll_seconds_total": "counter",
        "fastcore_handler_seconds_total": "counter",
        "fastcore_bytes_read_total": "counter",
        "fastcore_bytes_written_total": "counter",
        "fastcore_connections_accepted_total": "counter",
        "fastcore_connections_rejected_total": "counter",
        "fastcore_accept_pauses_total": "counter",
        "fastcore_tls_handshakes_total": "counter",
        "fastcore_tls_handshake_failures_total": "counter",
        "fastcore_connections_closed_total": "counter",
        "fastcore_timers_run_total": "counter",
        "fastcore_iteration_handler_seconds": "histogram",
        "fastcore_events_total": "counter",
        "fastcore_dispatchers": "gauge",
        "fastcore_listening": "gauge",
        "fastcore_connections_open": "gauge",
        "fastcore_info": "gauge",
    }
    assert {name: fam["type"] for name, fam in families.items()} == expected
    assert all(fam["help"] for fam in families.values())
    events = families["fastcore_events_total"]["samples"]
    assert {labels for labels in events} == {
        (("kind", k),) for k in ("read", "write", "expt", "close", "error")}
    assert events[(("kind", "read"),)] >= 2  # the accept and the request
    assert families["fastcore_connections_accepted_total"]["samples"][()] == 1
    assert families["fastcore_listening"]["samples"][()] == 1
    assert families["fastcore_connections_open"]["samples"][()] == 1  # the scrape itself
    (info,) = families["fastcore_info"]["samples"]
    import fastcore
    assert dict(info)["version"] == fastcore.__version__
    assert dict(info)["implementation"] == ("extension" if fastcore.EXTENSION else "python")


def test_values_follow_the_traffic(asyncore, kit, sockmap, metrics):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    echo = kit.EchoServer(sockmap)
    payload = b"hello world\n" * 100
    client = socket.create_connection(echo.address, timeout=support.DEFAULT_TIMEOUT)
    client.sendall(payload)
    reader = support.PeerReader(client)
    run_until(asyncore, sockmap, lambda: reader.has(len(payload)))
    client.close()
    run_until(asyncore, sockmap, lambda: len(sockmap) == 2)  # the echo handler closed
    request = b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n"
    reply = in_thread_while_looping(asyncore, sockmap, raw_exchange, server.address, request)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close" in head
    assert b"\r\nContent-Length: %d" % len(body) in head
    fams = parse_exposition(body.decode("utf-8"))
    value = {name: fam["samples"].get(()) for name, fam in fams.items()}
    assert value["fastcore_bytes_read_total"] == len(payload) + len(request)
    assert value["fastcore_bytes_written_total"] == len(payload)
    assert value["fastcore_connections_accepted_total"] == 2
    assert value["fastcore_connections_rejected_total"] == 0
    assert value["fastcore_connections_closed_total"] == 1
    assert value["fastcore_dispatchers"] == 3  # two servers and the scrape
    assert value["fastcore_listening"] == 2
    assert value["fastcore_connections_open"] == 1
    assert value["fastcore_loop_iterations_total"] >= 3
    # Every iteration is one observation of the handler-time histogram, its
    # sum the handler_seconds counter, its buckets from 100 µs.
    name = "fastcore_iteration_handler_seconds"
    samples = fams[name]["samples"]
    buckets = histogram_buckets(fams[name], name)
    assert min(buckets) == 0.0001 and sorted(buckets)[-2] == 2.5
    assert samples[(("", name + "_count"),)] >= value["fastcore_loop_iterations_total"]
    assert samples[(("", name + "_sum"),)] >= value["fastcore_handler_seconds_total"]


def test_rejected_connections(asyncore, kit, sockmap, metrics):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    listener = kit.EchoServer(sockmap)
    listener.log_info = lambda message, type="info": None
    from fastcore.proxy import accept_proxy_protocol

    accept_proxy_protocol(listener)
    with socket.create_connection(listener.address, timeout=support.DEFAULT_TIMEOUT) as bad:
        bad.sendall(b"PROXY TCP4 1.2.3\r\n")
        bad.setblocking(False)

        def closed_by_the_listener():
            try:
                return bad.recv(1) == b""
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True

        run_until(asyncore, sockmap, closed_by_the_listener)
    request = b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n"
    reply = in_thread_while_looping(asyncore, sockmap, raw_exchange, server.address, request)
    fams = parse_exposition(reply.partition(b"\r\n\r\n")[2].decode("utf-8"))
    rejected = fams["fastcore_connections_rejected_total"]
    assert rejected["type"] == "counter" and "PROXY protocol header" in rejected["help"]
    assert rejected["samples"][()] == 1


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/", 404),
    ("GET", "/metricsx", 404),
    ("GET", "/metrics?x=1", 200),
    ("POST", "/metrics", 405),
])
def test_status_codes(asyncore, sockmap, metrics, method, path, status):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    got, _, body = in_thread_while_looping(asyncore, sockmap, http_get, server.address, path,
                                           method)
    assert got == status
    if status == 200:
        parse_exposition(body.decode("utf-8"))


def test_head(asyncore, sockmap, metrics):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    reply = in_thread_while_looping(asyncore, sockmap, raw_exchange, server.address,
                                    b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, sep, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and sep and body == b""
    assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) > 0


@pytest.mark.parametrize("request_bytes", [
    b"HELLO\r\n\r\n",
    b"GET /metrics\r\n\r\n",                      # HTTP/0.9
    b"GET /metrics HTTP/2.0\r\n\r\n",
    b"get /metrics HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nX: \x00\r\n\r\n",
    b"GET  /metrics HTTP/1.1\r\n\r\n",
], ids=["garbage", "http09", "http2", "lowercase", "header", "nul", "spaces"])
def test_malformed_is_400_and_closed(asyncore, sockmap, metrics, request_bytes):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    reply = in_thread_while_looping(asyncore, sockmap, raw_exchange, server.address,
                                    request_bytes)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    run_until(asyncore, sockmap, lambda: len(sockmap) == 1)  # closed on the server too


@pytest.mark.parametrize("size", [9000, 200000])
def test_oversized_is_400_and_closed(asyncore, sockmap, metrics, size):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    assert size > metrics.MAX_REQUEST
    request = b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * size + b"\r\n\r\n"

    def send_all_then_read():
        sock = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
        try:
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server stopped reading: its reply is still there to read
            data = bytearray()
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
            return bytes(data)
        finally:
            sock.close()

    reply = in_thread_while_looping(asyncore, sockmap, send_all_then_read)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"too large" in reply
    run_until(asyncore, sockmap, lambda: len(sockmap) == 1)


def test_a_slow_request_in_pieces(asyncore, sockmap, metrics):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    sock = socket.create_connection(server.address, timeout=support.DEFAULT_TIMEOUT)
    try:
        run_until(asyncore, sockmap, lambda: len(sockmap) == 2)
        conn = [d for d in sockmap.values() if d is not server][0]
        for piece in (b"GET /met", b"rics HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            sock.sendall(piece)
            run_until(asyncore, sockmap, lambda: support.consumed(conn) or not conn.connected)
        reader = support.PeerReader(sock)
        run_until(asyncore, sockmap, reader.at_eof)
        assert bytes(reader.buf).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        sock.close()


def test_other_connections_unaffected(asyncore, kit, sockmap, metrics):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    echo = kit.EchoServer(sockmap)
    client = socket.create_connection(echo.address, timeout=support.DEFAULT_TIMEOUT)
    reply = in_thread_while_looping(asyncore, sockmap, raw_exchange, server.address,
                                    b"\xff\xfe garbage\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    client.sendall(b"still here\n")
    reader = support.PeerReader(client)
    run_until(asyncore, sockmap, lambda: reader.has(11))
    assert bytes(reader.buf) == b"still here\n"
    client.close()


def test_serve_on_a_busy_port_raises(asyncore, sockmap, metrics):
    server = metrics.serve("127.0.0.1", 0, map=sockmap)
    with pytest.raises(OSError):
        metrics.serve("127.0.0.1", server.address[1], map=sockmap)
    assert len(sockmap) == 1


def test_exposition_default_map(asyncore, global_map, metrics):
    metrics.serve("127.0.0.1", 0)
    fams = parse_exposition(metrics.exposition())
    assert fams["fastcore_listening"]["samples"][()] == 1
