"""dispatcher.recv/send against socket.socket's own recv/send.

The extension calls recv(2)/send(2) on a non-blocking socket's descriptor
itself (src/socket_io.h). What a caller sees must stay what socket.socket's
methods give: the same bytes, the same exceptions, the same waiting on a
socket with a timeout. Every test here runs on the reference too.
"""

import select
import socket
import sys
import threading

import pytest
import support


def readable(sock):
    assert select.select([sock], [], [], support.DEFAULT_TIMEOUT)[0], "nothing to read"


@pytest.fixture
def pair(kit, sockmap):
    """(a socket, its peer, a recorded dispatcher on the socket), closed after."""
    a, peer = socket.socketpair()
    d = kit.Dispatcher(a, map=sockmap)
    yield a, peer, d
    peer.close()
    d.close()


def read_all(d, size, request):
    """d.recv(request) until size bytes came."""
    got = bytearray()
    while len(got) < size:
        readable(d.socket)
        chunk = d.recv(request)
        assert chunk, "the dispatcher saw the peer close"
        assert len(chunk) <= request
        got += chunk
    return bytes(got)


@pytest.mark.fastcore_only
def test_extension_goes_straight_to_the_descriptor(fastcore_pkg):
    if not fastcore_pkg.EXTENSION:
        pytest.skip("the pure-Python core calls the socket's methods")
    from fastcore import _core_c
    # The layout check at import must pass where the extension is built: a
    # failing check quietly costs 2,500 instructions per message.
    assert _core_c._socket_io_direct()


# (payload size, recv size): small reads, a large one, small after large (the
# core switches where a read lands by the size of the last one), a read that
# fills its request exactly, requests above the core's 64 KiB buffer.
READS = [(10, 4096), (5000, 65536), (10, 65536), (3, 1), (65536, 65536),
         (70000, 70000), (1, 100000), (20000, 65536), (300000, 65536), (7, 7)]


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_reads_of_every_size_arrive_whole(kit, sockmap, transport):
    a, peer = support.make_pair(transport)
    d = kit.Dispatcher(a, map=sockmap)
    try:
        for n, (size, request) in enumerate(READS):
            payload = bytes((n * 31 + i) % 251 for i in range(size))
            sender = support.start_thread(peer.sendall, payload)
            assert read_all(d, size, request) == payload, (size, request)
            sender.finish()
        assert d.names() == []
    finally:
        peer.close()
        d.close()


def test_recv_of_a_socket_with_a_timeout_waits_as_its_method_does(pair):
    """A socket given a timeout (after the dispatcher made it non-blocking)
    waits for it and raises socket.timeout, not BlockingIOError."""
    a, peer, d = pair
    a.settimeout(0.05)
    with pytest.raises(socket.timeout):
        d.recv(10)
    peer.send(b"late")
    assert d.recv(10) == b"late"


def test_send_of_buffers(pair):
    a, peer, d = pair
    assert d.send(memoryview(b"hello world")[6:]) == 5
    assert d.send(bytearray(b"!?")) == 2
    assert d.send(memoryview(bytearray(b"abc"))) == 3
    assert d.send(b"") == 0
    assert support.recv_exactly(peer, 10) == b"world!?abc"
    assert d.names() == []


def assert_same_error(by_socket, by_dispatcher):
    """by_dispatcher() raises what by_socket() raises: same type, same message."""
    with pytest.raises(Exception) as expected:
        by_socket()
    with pytest.raises(type(expected.value)) as raised:
        by_dispatcher()
    assert str(raised.value) == str(expected.value)


def released_view():
    view = memoryview(b"data")
    view.release()
    return view


@pytest.mark.parametrize("data", [
    pytest.param(lambda: memoryview(b"abcdef")[::2], id="non-contiguous view"),
    pytest.param(released_view, id="released view"),
    pytest.param(lambda: "text", id="str"),
    pytest.param(lambda: 42, id="int"),
])
def test_send_of_what_the_socket_refuses_raises_its_error(pair, data):
    a, peer, d = pair
    try:
        sent = a.send(data())
    except Exception:
        assert_same_error(lambda: a.send(data()), lambda: d.send(data()))
    else:
        # PyPy's socket takes a non-contiguous view: so must the dispatcher.
        assert d.send(data()) == sent
        assert peer.recv(100) == bytes(data()) * 2


@pytest.mark.parametrize("size", [-1, 1.5, "10", 2 ** 70, None])
def test_recv_of_a_size_the_socket_refuses_raises_its_error(pair, size):
    a, peer, d = pair
    peer.send(b"x")
    assert_same_error(lambda: a.recv(size), lambda: d.recv(size))
    assert d.recv(10) == b"x"


def test_recv_of_nothing_is_taken_for_a_close(pair):
    a, peer, d = pair
    peer.send(b"x")
    assert d.recv(0) == b""
    assert d.names() == ["handle_close", "close"]


def test_reads_in_two_threads_stay_apart(asyncore, kit):
    """Each thread's dispatchers read only their own peer's bytes, while the
    other thread reads too (the extension's small reads share one buffer)."""
    rounds = 2000
    failures = []
    start = threading.Barrier(2, timeout=support.DEFAULT_TIMEOUT)

    def reader(letter):
        a, peer = socket.socketpair()
        d = kit.Dispatcher(a, map={})
        try:
            start.wait()
            for n in range(rounds):
                line = letter * (1 + n % 200)
                peer.send(line)
                if read_all(d, len(line), 4096) != line:
                    failures.append((letter, n))
                    return
        except Exception as e:
            failures.append((letter, repr(e)))
        finally:
            peer.close()
            d.close()

    threads = [threading.Thread(target=reader, args=(c,)) for c in (b"A", b"B")]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # hand the GIL over as often as it can be
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(support.DEFAULT_TIMEOUT * 4)
    finally:
        sys.setswitchinterval(switch)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
