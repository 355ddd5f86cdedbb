"""python -m fastcore: info, and the echo and chat servers, run as subprocesses."""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile

import pytest
import support

pytestmark = pytest.mark.fastcore_only

LISTENING = re.compile(r"(\w+) listening on ([\d.]+):(\d+)\Z")


def _default_sigint():
    # A test run started in the background by a non-interactive shell (nohup,
    # `cmd &`) inherits SIGINT ignored, and Python then installs no
    # KeyboardInterrupt for it: the server under test gets the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Server:
    """``python -m fastcore <args>`` in the background; the addresses it printed."""

    def __init__(self, *args):
        self.cwd = tempfile.mkdtemp(prefix="fastcore-cli-")  # no checkout on sys.path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastcore"] + list(args), cwd=self.cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_default_sigint)
        self.addresses = {}
        expected = 1
        if "--metrics-port" in args:
            # One metrics endpoint, or one per worker.
            expected += int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        while len(self.addresses) < expected:
            line = self._readline()
            m = LISTENING.match(line.strip())
            assert m, "unexpected output %r (stderr: %s)" % (line, self.stop()[1])
            self.addresses[m.group(1)] = (m.group(2), int(m.group(3)))

    def _readline(self):
        # Bounded: a server that never prints is killed, not waited for forever.
        timer = support.start_thread(self.proc.stdout.readline)
        try:
            return timer.finish(timeout=20)
        except BaseException:
            self.proc.kill()
            raise

    def connect(self, name):
        return socket.create_connection(self.addresses[name], timeout=support.DEFAULT_TIMEOUT)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        os.rmdir(self.cwd)
        return out, err


@pytest.fixture
def server():
    started = []

    def start(*args):
        started.append(Server(*args))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()


def read_line(sock):
    buf = bytearray()
    while not buf.endswith(b"\n"):
        data = sock.recv(4096)
        if not data:
            break
        buf += data
    return bytes(buf)


def test_info():
    import fastcore

    proc = support.run_python(["-m", "fastcore", "info"])
    assert proc.returncode == 0, proc.stderr
    info = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert info["fastcore"] == fastcore.__version__
    assert info["implementation"] == ("extension" if fastcore.EXTENSION else "pure Python")
    assert info["default backend"] == fastcore.default_backend()
    assert info["available backends"] == ", ".join(fastcore.available_backends())
    assert info["debug mode"] == "off"
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert re.fullmatch(r"soft (\d+|unlimited), hard (\d+|unlimited)", info["RLIMIT_NOFILE"])
    if soft != resource.RLIM_INFINITY:
        assert info["RLIMIT_NOFILE"].startswith("soft %d," % soft)
    if os.path.exists("/proc/sys/net/core/somaxconn"):
        with open("/proc/sys/net/core/somaxconn") as f:
            assert info["somaxconn"] == f.read().strip()


def test_info_debug_from_environment():
    proc = support.run_python(["-m", "fastcore", "info"], {"FASTCORE_DEBUG": "1"})
    assert "debug mode: on" in proc.stdout.splitlines()


def test_usage_errors():
    proc = support.run_python(["-m", "fastcore"])
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = support.run_python(["-m", "fastcore", "echo"])  # --port is required
    assert proc.returncode == 2 and "--port" in proc.stderr
    proc = support.run_python(["-m", "fastcore", "echo", "--port", "0", "--backend", "nope"])
    assert proc.returncode == 2


def test_busy_port_is_a_clear_error():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        proc = support.run_python(["-m", "fastcore", "echo", "--port",
                                   str(busy.getsockname()[1])])
    finally:
        busy.close()
    assert proc.returncode == 1
    assert proc.stderr.startswith("python -m fastcore echo: ")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_echo(server, sig):
    s = server("echo", "--port", "0")
    a = s.connect("echo")
    b = s.connect("echo")
    a.sendall(b"hello\n")
    b.sendall(b"x" * 100000)
    assert read_line(a) == b"hello\n"
    assert support.recv_exactly(b, 100000) == b"x" * 100000
    a.close()
    b.close()
    out, err = s.stop(sig)
    assert s.proc.returncode == 0, err
    assert err.startswith("fastcore ") and err.count("\n") == 1
    assert "debug mode" not in err


def test_chat_broadcasts_to_the_others(server):
    s = server("chat", "--port", "0")
    # A line is read only after its sender was accepted, and connections are
    # accepted in order: whoever connected earlier is in the room by then.
    alice = s.connect("chat")
    bob = s.connect("chat")
    bob.sendall(b"bob here\n")
    assert read_line(alice) == b"bob here\n"
    carol = s.connect("chat")
    carol.sendall(b"carol here\n")
    assert read_line(alice) == b"carol here\n"
    assert read_line(bob) == b"carol here\n"
    alice.sendall(b"hi ")
    alice.sendall(b"all\n")
    assert read_line(bob) == b"hi all\n"
    assert read_line(carol) == b"hi all\n"
    bob.close()
    carol.sendall(b"still on\n")
    assert read_line(alice) == b"still on\n"
    alice.setblocking(False)
    with pytest.raises(BlockingIOError):
        alice.recv(100)  # nothing of its own came back
    alice.close()
    carol.close()
    out, err = s.stop()
    assert s.proc.returncode == 0, err


def test_metrics_port(server):
    import http.client

    s = server("echo", "--port", "0", "--metrics-port", "0")
    a = s.connect("echo")
    a.sendall(b"1234567\n")
    assert read_line(a) == b"1234567\n"
    conn = http.client.HTTPConnection(*s.addresses["metrics"], timeout=support.DEFAULT_TIMEOUT)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    assert resp.status == 200
    assert re.search(r"^fastcore_bytes_written_total 8$", body, re.M), body
    assert re.search(r"^fastcore_listening 2$", body, re.M), body
    a.close()
    s.stop()


def test_workers_share_the_port_and_stop_together(server):
    import http.client

    s = server("echo", "--port", "0", "--workers", "2", "--metrics-port", "0")
    assert set(s.addresses) == {"echo", "metrics0", "metrics1"}
    conns = [s.connect("echo") for _ in range(20)]
    for i, c in enumerate(conns):
        c.sendall(b"line %d\n" % i)
    for i, c in enumerate(conns):
        assert read_line(c) == b"line %d\n" % i
        c.close()
    accepted = 0
    for name in ("metrics0", "metrics1"):
        conn = http.client.HTTPConnection(*s.addresses[name], timeout=support.DEFAULT_TIMEOUT)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
        conn.close()
        total = re.search(r"^fastcore_connections_accepted_total (\d+)$", body, re.M)
        accepted += int(total.group(1))
    # Each worker counts what it accepted (its scrapes included): all 20 between them.
    assert accepted >= 20
    out, err = s.stop()
    assert s.proc.returncode == 0, err
    assert "2 workers" in err


def test_debug_flag(server):
    s = server("echo", "--port", "0", "--debug")
    a = s.connect("echo")
    a.sendall(b"x\n")
    assert read_line(a) == b"x\n"
    a.close()
    out, err = s.stop()
    assert s.proc.returncode == 0, err
    assert ", debug mode on" in err.splitlines()[0]
    # Shut down cleanly: nothing was left open at exit to report.
    assert "left open" not in err
