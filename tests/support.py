"""Shared helpers for the fastcore test-suite.

conftest.py puts this directory on sys.path, so test modules simply
``import support``; that works with ``--import-mode=importlib`` and on every
pytest version (no package-relative imports involved).

Everything that needs the modules under test takes them as arguments
(``asyncore``, ``asynchat``): the same helpers build classes over fastcore's
modules or over the reference modules (see ``kit``).
"""

import errno
import functools
import os
import select
import socket
import struct
import sys
import threading
import time
import warnings

import pytest

LOCALHOST = "127.0.0.1"


# ---------------------------------------------------------------------------
# the modules
# ---------------------------------------------------------------------------

_reference_cache = []


def load_reference():
    """The reference (asyncore, asynchat), or raise ImportError.

    Python <= 3.11: the standard library's modules (their DeprecationWarning
    suppressed); 3.12+: pyasyncore/pyasynchat, which install modules named
    ``asyncore``/``asynchat``.
    """
    if _reference_cache:
        return _reference_cache[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat
        import asyncore
    for mod in (asyncore, asynchat):
        # By name, not by path: a venv's path may well contain "fastcore".
        if mod.__name__.startswith("fastcore"):
            raise ImportError("%r is fastcore's module, not the reference "
                              "(fastcore.install() was called in this process?)" % mod)
    _reference_cache.append((asyncore, asynchat))
    return asyncore, asynchat


def load_fastcore():
    import fastcore
    from fastcore import asynchat, asyncore
    return fastcore, asyncore, asynchat
DEFAULT_TIMEOUT = 5.0


# ---------------------------------------------------------------------------
# running the loop
# ---------------------------------------------------------------------------

def run_until(asyncore, map, predicate, timeout=DEFAULT_TIMEOUT, use_poll=False,
              what=None, **loop_kw):
    """Run ``asyncore.loop(count=1)`` until ``predicate()`` is true.

    Fails the test when the deadline passes first.  Returns the number of
    iterations run.
    """
    deadline = time.monotonic() + timeout
    n = 0
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition %s not reached within %.1f s (%d iterations, map=%r)"
                        % (what or getattr(predicate, "__name__", predicate),
                           timeout, n, map))
        asyncore.loop(timeout=0.01, map=map, count=1, use_poll=use_poll, **loop_kw)
        n += 1
    return n


def run_iterations(asyncore, map, n, use_poll=False, timeout=0.01, **loop_kw):
    """Exactly ``n`` one-iteration loops (each returns at once on an empty map)."""
    for _ in range(n):
        asyncore.loop(timeout=timeout, map=map, count=1, use_poll=use_poll, **loop_kw)


def wait_for(predicate, timeout=DEFAULT_TIMEOUT, what=None):
    """Wait (outside any loop) for a condition another thread brings about."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition %s not reached within %.1f s"
                        % (what or getattr(predicate, "__name__", predicate), timeout))
        time.sleep(0.001)


def kernel_wait_channel(native_id):
    """Where the kernel has thread ``native_id`` of this process sleeping
    (/proc/self/task/N/wchan: "do_epoll_wait", "do_sys_poll", ...), or None
    where the kernel does not say."""
    try:
        with open("/proc/self/task/%d/wchan" % native_id) as f:
            channel = f.read().strip()
    except OSError:
        return None
    return channel if channel not in ("", "0") else None


def _polling(native_id):
    channel = kernel_wait_channel(native_id) or ""
    return "poll" in channel or "select" in channel


def wait_until_polling(native_id, timeout=DEFAULT_TIMEOUT):
    """Wait until thread ``native_id`` sleeps in epoll_wait/poll/select: the
    loop on it is in its wait, not about to enter it."""
    wait_for(lambda: _polling(native_id), timeout,
             "thread %d waiting in the kernel's poll" % native_id)


@functools.cache
def can_see_kernel_waits():
    """True where wait_until_polling works: a thread blocked in select()
    shows it in its wchan."""
    r, w = os.pipe()
    try:
        sleeper = threading.Thread(target=select.select, args=([r], [], [], DEFAULT_TIMEOUT))
        sleeper.start()
        deadline = time.monotonic() + DEFAULT_TIMEOUT / 2
        seen = False
        while not seen and time.monotonic() < deadline:
            seen = _polling(sleeper.native_id)
            time.sleep(0.001)
        os.write(w, b"x")
        sleeper.join()
        return seen
    finally:
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------------------
# sockets
# ---------------------------------------------------------------------------

def closed_port():
    """A loopback TCP port nobody listens on (bound, then released)."""
    s = socket.socket()
    try:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def tcp_pair():
    """A connected pair of blocking TCP sockets on loopback: (a, b)."""
    lst = socket.socket()
    try:
        lst.bind((LOCALHOST, 0))
        lst.listen(1)
        a = socket.create_connection(lst.getsockname(), timeout=DEFAULT_TIMEOUT)
        b, _ = lst.accept()
    finally:
        lst.close()
    a.settimeout(None)
    b.settimeout(None)
    return a, b


def unix_pair():
    """socket.socketpair(): the deterministic transport for chunking tests."""
    return socket.socketpair()


def pair_at_fd(fd):
    """A socketpair whose first socket has the (free) descriptor number ``fd``."""
    x, y = socket.socketpair()
    if x.fileno() == fd:
        return x, y
    if y.fileno() == fd:
        return y, x
    os.dup2(x.fileno(), fd)
    x.close()
    return socket.socket(fileno=fd), y


def make_pair(transport):
    return tcp_pair() if transport == "tcp" else unix_pair()


def reset(sock):
    """Close ``sock`` so that the peer gets a TCP RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_available(sock, limit=1 << 20):
    """Whatever is readable on ``sock`` right now, without blocking.

    Returns (data, eof).
    """
    chunks = []
    eof = False
    was_timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        total = 0
        while total < limit:
            try:
                d = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionResetError:
                eof = True
                break
            if not d:
                eof = True
                break
            chunks.append(d)
            total += len(d)
    finally:
        sock.settimeout(was_timeout)
    return b"".join(chunks), eof


def recv_exactly(sock, n, timeout=DEFAULT_TIMEOUT):
    """Read exactly n bytes from a blocking socket (bounded by timeout)."""
    sock.settimeout(timeout)
    buf = bytearray()
    try:
        while len(buf) < n:
            d = sock.recv(min(1 << 20, n - len(buf)))
            if not d:
                break
            buf += d
    finally:
        sock.settimeout(None)
    return bytes(buf)


def fd_is_open(fd):
    try:
        os.fstat(fd)
    except OSError as e:
        return e.errno != errno.EBADF
    return True


def consumed(d):
    """True when ``d``'s socket has nothing left to read (or is closed)."""
    s = d.socket
    if s is None or s.fileno() < 0:
        return True
    r, _, _ = select.select([s], [], [], 0)
    return not r


def feed(asyncore, map, d, peer, chunks, use_poll=False, timeout=DEFAULT_TIMEOUT):
    """Deterministic chunking: send each chunk from ``peer`` and run the loop
    until ``d`` has read all of it, before sending the next one.

    Only meaningful on socketpair(), where sent data is readable at once.
    """
    for chunk in chunks:
        if chunk:
            peer.sendall(chunk)
        run_until(asyncore, map, lambda: consumed(d), use_poll=use_poll, timeout=timeout,
                  what="chunk consumed")


class PeerReader:
    """Drains a plain socket without blocking; call ``drain()`` between
    loop iterations (e.g. inside a run_until predicate)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def drain(self):
        if not self.eof:
            data, self.eof = recv_available(self.sock, limit=1 << 24)
            self.buf += data
        return self

    def has(self, n):
        self.drain()
        return len(self.buf) >= n

    def at_eof(self):
        self.drain()
        return self.eof


def pump(asyncore, map, peer_reader, n, use_poll=False, timeout=DEFAULT_TIMEOUT):
    """Run the loop until the peer has received ``n`` bytes; returns them."""
    run_until(asyncore, map, lambda: peer_reader.has(n), use_poll=use_poll, timeout=timeout,
              what="peer received %d bytes" % n)
    return bytes(peer_reader.buf)


def chunked(data, sizes):
    """Cut ``data`` into pieces of the given sizes (cycled), the rest last."""
    out = []
    i = 0
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i:i + n])
        i += n
        k += 1
    return out


def all_chunkings(data):
    """Every way to cut ``data`` into non-empty consecutive pieces."""
    n = len(data)
    for mask in range(1 << max(n - 1, 0)):
        pieces = []
        start = 0
        for i in range(1, n):
            if mask & (1 << (i - 1)):
                pieces.append(data[start:i])
                start = i
        pieces.append(data[start:])
        yield pieces


# ---------------------------------------------------------------------------
# subprocesses
# ---------------------------------------------------------------------------

_NEUTRAL_DIR = []


def run_python(args, env_updates=None, timeout=60):
    """Run ``sys.executable`` with ``args`` from an empty directory, so that a
    checkout in the current directory does not shadow the installed package
    (``python -c`` puts the current directory first on sys.path).

    ``env_updates`` maps names to values, None removing the variable.
    """
    import subprocess
    import tempfile
    if not _NEUTRAL_DIR:
        import atexit
        import shutil
        _NEUTRAL_DIR.append(tempfile.mkdtemp(prefix="fastcore-tests-"))
        atexit.register(shutil.rmtree, _NEUTRAL_DIR[0], True)
    env = dict(os.environ)
    for k, v in (env_updates or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run([sys.executable] + list(args), env=env, cwd=_NEUTRAL_DIR[0],
                          capture_output=True, text=True, timeout=timeout)


def in_ci():
    """True under CI (it sets CI=true), where every test must run: a program a
    test needs that is missing fails the test instead of skipping it."""
    return os.environ.get("CI", "").lower() == "true"


def system_program(name):
    """The path of program ``name`` (haproxy, prometheus, ...), which
    .ci/system-packages installs. Missing: the test fails under CI, is skipped
    elsewhere."""
    import shutil
    path = shutil.which(name)
    if path is None:
        why = "%s is not installed (bash .ci/system-packages installs it)" % name
        if in_ci():
            pytest.fail("CI=true: " + why, pytrace=False)
        pytest.skip(why)
    return path


# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------

class Thread(threading.Thread):
    """A daemon thread whose exception is re-raised by ``finish()``."""

    def __init__(self, target, *args):
        threading.Thread.__init__(self, daemon=True)
        self._target_fn = target
        self._args = args
        self.result = None
        self.exc = None

    def run(self):
        try:
            self.result = self._target_fn(*self._args)
        except BaseException as e:  # reported in the test's thread
            self.exc = e

    def finish(self, timeout=DEFAULT_TIMEOUT):
        self.join(timeout)
        if self.is_alive():
            pytest.fail("helper thread still running after %.1f s" % timeout)
        if self.exc is not None:
            raise self.exc
        return self.result


def start_thread(target, *args):
    t = Thread(target, *args)
    t.start()
    return t


# ---------------------------------------------------------------------------
# recording dispatchers
# ---------------------------------------------------------------------------

class RecorderMixin:
    """Records the sequence of handler calls into ``self.events``.

    Entries are tuples: ('handle_close',), ('handle_connect',),
    ('handle_accepted',), ('handle_expt',), ('handle_error', 'ExcTypeName'),
    and for chats ('collect', b'data'), ('found',).  IORecorderMixin adds
    ('handle_read',) and ('handle_write',), CloseRecorderMixin ('close',),
    SendRecorderMixin ('send', len(data), result) when ``record_sends``.
    When ``self.shared`` is a list, (tag,) + entry is appended there too, to
    see the interleaving of several dispatchers.

    The plain recorder deliberately leaves handle_read/handle_write/send/
    close alone, so that an implementation's fast paths for non-overridden
    methods are still exercised by the tests that use it.
    """

    tag = None
    shared = None

    def _rec(self, *ev):
        try:
            events = self.events
        except AttributeError:
            events = self.events = []
        events.append(ev)
        shared = self.shared
        if shared is not None:
            shared.append((self.tag,) + ev)

    def count(self, name):
        return sum(1 for ev in getattr(self, "events", ()) if ev[0] == name)

    def names(self):
        return [ev[0] for ev in getattr(self, "events", ())]

    def handle_close(self):
        self._rec("handle_close")
        super().handle_close()

    def handle_connect(self):
        self._rec("handle_connect")
        super().handle_connect()

    def handle_accepted(self, sock, addr):
        self._rec("handle_accepted")
        super().handle_accepted(sock, addr)

    def handle_expt(self):
        self._rec("handle_expt")
        super().handle_expt()

    def handle_error(self):
        t = sys.exc_info()[0]
        self._rec("handle_error", t.__name__ if t is not None else None)
        super().handle_error()


class IORecorderMixin(RecorderMixin):
    def handle_read(self):
        self._rec("handle_read")
        super().handle_read()

    def handle_write(self):
        self._rec("handle_write")
        super().handle_write()


class CloseRecorderMixin:
    def close(self):
        self._rec("close")
        super().close()


class SendRecorderMixin:
    record_sends = False

    def send(self, data):
        result = super().send(data)
        if self.record_sends:
            self._rec("send", len(data), result)
        return result


@functools.cache
def kit(asyncore, asynchat):
    """Test classes built over the given modules (cached per module pair)."""

    class Dispatcher(IORecorderMixin, CloseRecorderMixin, asyncore.dispatcher):
        """A recorded plain dispatcher (stdlib handlers underneath)."""

    class _ReaderBase(asyncore.dispatcher_with_send):
        read_size = 65536

        def __init__(self, sock=None, map=None):
            asyncore.dispatcher_with_send.__init__(self, sock, map)
            self.data = bytearray()

        def handle_read(self):
            d = self.recv(self.read_size)
            self.data += d

    class Reader(IORecorderMixin, CloseRecorderMixin, _ReaderBase):
        """dispatcher_with_send that accumulates what it reads in ``data``."""

    class _ChatBase(asynchat.async_chat):
        def __init__(self, sock=None, map=None, terminator=b"\n"):
            asynchat.async_chat.__init__(self, sock, map)
            self.lines = []
            self.set_terminator(terminator)

        def collect_incoming_data(self, data):
            self._rec("collect", bytes(data))
            self._collect_incoming_data(data)

        def found_terminator(self):
            self._rec("found")
            self.lines.append(self._get_data())
            self.on_line(self.lines[-1])

        def on_line(self, line):
            pass

    class _Echo:
        def on_line(self, line):
            term = self.get_terminator()
            if isinstance(term, (bytes, bytearray)):
                self.push(line + term)
            else:
                self.push(line)

    class Chat(RecorderMixin, _ChatBase):
        """async_chat collecting lines (data between terminators) in ``lines``."""

    class IOChat(IORecorderMixin, CloseRecorderMixin, SendRecorderMixin, _ChatBase):
        """Chat that also records handle_read/handle_write/close (and sends)."""

    class EchoChat(_Echo, Chat):
        """Echoes every line followed by the current (bytes) terminator."""

    class IOEchoChat(_Echo, IOChat):
        pass

    class EchoServer(Dispatcher):
        """Listens on loopback; every accepted connection gets a handler_class."""

        handler_class = EchoChat

        def __init__(self, map, handler_class=None, backlog=128):
            Dispatcher.__init__(self, map=map)
            if handler_class is not None:
                self.handler_class = handler_class
            self.handlers = []
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind((LOCALHOST, 0))
            self.listen(backlog)
            self.address = self.socket.getsockname()

        def handle_accepted(self, sock, addr):
            self._rec("handle_accepted")
            self.handlers.append(self.handler_class(sock, map=self._map))

    class ClientChat(Chat):
        """Connects to ``address``; pushes ``payload`` once connected."""

        def __init__(self, address, map, payload=b"", terminator=b"\n"):
            Chat.__init__(self, map=map, terminator=terminator)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            if payload:
                self.push(payload)
            self.connect(address)

    ns = dict(locals())
    ns.pop("asyncore")
    ns.pop("asynchat")
    return type("Kit", (), ns)


# ---------------------------------------------------------------------------
# differential runs
# ---------------------------------------------------------------------------

def differential(scenario, reference, implementation, normalise=None, **kw):
    """Run ``scenario(asyncore, asynchat, **kw)`` on both module pairs.

    The scenario returns something comparable (recorded call sequences,
    delivered bytes); both results must be equal, after ``normalise`` when
    one is given (for the documented, deliberate differences).
    """
    expected = scenario(reference[0], reference[1], **kw)
    actual = scenario(implementation[0], implementation[1], **kw)
    if normalise is not None:
        expected = normalise(expected)
        actual = normalise(actual)
    assert actual == expected
    return actual


def drop(events, *names):
    """``events`` without the entries named ``names``."""
    return [ev for ev in events if ev[0] not in names]


HAS_POLL = hasattr(select, "poll")
USE_POLL = [False, pytest.param(True, marks=pytest.mark.skipif(
    not HAS_POLL, reason="select.poll not available"))]
