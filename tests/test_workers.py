"""fastcore.serve_forever(): pre-forked workers, in real processes on loopback.

The servers run in subprocesses (tests/prefork_server.py, examples/prefork_echo.py),
each in its own session so that a failing test can kill whatever it left. Workers
announce themselves on stdout ("ready <index> <pid> <port>"): the tests wait for
those lines, never for a fixed time.
"""

import errno
import os
import queue
import signal
import socket
import subprocess
import sys
import threading

import pytest
import support

from fastcore import asyncore
from fastcore.workers import Listener, reuse_port_balances, serve_forever

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "prefork_server.py")
EXAMPLE = os.path.join(HERE, os.pardir, "examples", "prefork_echo.py")
LINE_TIMEOUT = 20.0  # the machine is shared: generous, but every wait is for an event

pytestmark = [
    pytest.mark.fastcore_only,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="serve_forever(workers>=1) needs fork"),
    pytest.mark.timeout(90),
]

needs_reuse_port = pytest.mark.skipif(not reuse_port_balances(),
                                      reason="no load-balancing SO_REUSEPORT here")
REUSE_MODES = [pytest.param("yes", marks=needs_reuse_port), "no"]


class Process:
    """A Python subprocess in its own session; threads collect its output lines."""

    def __init__(self, args, cwd):
        env = dict(os.environ)
        env.pop("PYTHONUNBUFFERED", None)  # block-buffered stdout, as in production
        self.proc = subprocess.Popen([sys.executable] + list(args), cwd=cwd, text=True, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.out = queue.Queue()
        self.err = queue.Queue()
        self.out_lines = []
        self.err_lines = []
        self.readers = [self._reader(self.proc.stdout, self.out, self.out_lines),
                        self._reader(self.proc.stderr, self.err, self.err_lines)]

    @staticmethod
    def _reader(stream, lines_queue, lines):
        def read():
            for line in stream:
                lines.append(line.rstrip("\n"))
                lines_queue.put(lines[-1])
            lines_queue.put(None)

        t = threading.Thread(target=read, daemon=True)
        t.start()
        return t

    def expect(self, prefix, stream="out", timeout=LINE_TIMEOUT):
        """The next line of ``stream`` starting with ``prefix`` (earlier lines skipped)."""
        q = self.out if stream == "out" else self.err
        while True:
            try:
                line = q.get(timeout=timeout)
            except queue.Empty:
                pytest.fail("no %s line starting %r within %.0f s\n%s"
                            % (stream, prefix, timeout, self.transcript()))
            if line is None:
                pytest.fail("%s closed before a line starting %r\n%s"
                            % (stream, prefix, self.transcript()))
            if line.startswith(prefix):
                return line

    def ready(self, n):
        """{index: pid} and the port, from the next ``n`` "ready" lines."""
        pids = {}
        port = None
        for _ in range(n):
            _, index, pid, port = self.expect("ready ").split()
            pids[int(index)] = int(pid)
        return pids, int(port)

    def finish(self, sig=None, timeout=LINE_TIMEOUT):
        """Send ``sig`` (if any) and wait for the exit; returns the exit code."""
        if sig is not None:
            os.kill(self.proc.pid, sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("process still running %.0f s after %r\n%s"
                        % (timeout, sig, self.transcript()))
        for t in self.readers:
            t.join(timeout)
        return code

    def transcript(self):
        return "--- stdout\n%s\n--- stderr\n%s" % ("\n".join(self.out_lines),
                                                   "\n".join(self.err_lines))

    def kill_session(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(LINE_TIMEOUT)


@pytest.fixture
def start(tmp_path):
    started = []

    def start(*args):
        p = Process(args, str(tmp_path))
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill_session()


def read_lines(sock, n=1):
    data = b""
    while data.count(b"\n") < n:
        chunk = sock.recv(256)
        assert chunk, "connection closed after %r" % data
        data += chunk
    return data.split(b"\n")[:n]


def ask_pid(port):
    with socket.create_connection((support.LOCALHOST, port), timeout=LINE_TIMEOUT) as s:
        s.sendall(b"pid\n")
        return int(read_lines(s)[0])


def reaped(pid):
    """The process no longer exists at all (not even as a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def exited(pid):
    """The process has exited (a zombie no one reaped counts: its parent is gone)."""
    if reaped(pid):
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return reaped(pid)


# -- serving -------------------------------------------------------------------

@needs_reuse_port
def test_every_worker_serves_with_reuse_port(start):
    p = start(SERVER, "--workers", "3", "--reuse-port", "yes")
    pids, port = p.ready(3)
    answered = {ask_pid(port) for _ in range(90)}
    # 90 connections hashed over 3 sockets: all 3 miss one with probability 3 * (2/3)**90
    assert answered == set(pids.values())
    assert p.finish(signal.SIGTERM) == 0
    assert p.out_lines[-1] == "stopped"
    assert p.out_lines.count("starting") == 1  # flushed before the fork, not by each worker
    assert all(reaped(pid) for pid in pids.values())


def test_inherited_socket_serves_every_connection(start):
    p = start(SERVER, "--workers", "2", "--reuse-port", "no")
    pids, port = p.ready(2)
    # Several at once: every worker may take some, each one is answered.
    conns = [socket.create_connection((support.LOCALHOST, port), timeout=LINE_TIMEOUT)
             for _ in range(20)]
    for c in conns:
        c.sendall(b"pid\n")
    for c in conns:
        with c:
            assert int(read_lines(c)[0]) in pids.values()
    assert {ask_pid(port) for _ in range(20)} <= set(pids.values())
    assert "inherited socket" in "\n".join(p.err_lines)
    assert p.finish(signal.SIGTERM) == 0


def test_user_map_and_a_map_used_before_the_fork(start):
    # The parent ran the loop on the map (its registry has an epoll instance);
    # each worker must get its own, or they would all share one kernel object.
    p = start(SERVER, "--workers", "2", "--prime", "--use-map")
    pids, port = p.ready(2)
    answered = {ask_pid(port) for _ in range(60)}
    if reuse_port_balances():
        assert answered == set(pids.values())
    else:
        assert answered <= set(pids.values())
    if sys.platform.startswith("linux"):
        # Both loops run: a shared epoll instance would now watch both workers' sockets.
        for _ in range(6):
            with socket.create_connection((support.LOCALHOST, port), timeout=LINE_TIMEOUT) as s:
                s.sendall(b"epoll\n")
                assert read_lines(s)[0] == b"ok"
    assert p.finish(signal.SIGTERM) == 0


@pytest.mark.parametrize("workers", [2, 0])
def test_a_given_listening_socket_is_shared_and_left_open(start, workers):
    p = start(SERVER, "--workers", str(workers), "--given-socket")
    pids, port = p.ready(max(workers, 1))
    assert {ask_pid(port) for _ in range(10)} <= set(pids.values())
    assert p.finish(signal.SIGTERM) == 0
    assert p.out_lines[-2:] == ["given socket listening: 1", "stopped"], p.transcript()
    if workers:
        assert "inherited socket" in "\n".join(p.err_lines)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_default_workers_follow_the_cpu_affinity(start):
    p = start(SERVER, "--workers", "-1", "--one-cpu")
    pids, _ = p.ready(1)
    assert p.finish(signal.SIGTERM) == 0
    assert any(line.startswith("fastcore.workers: 1 workers on") for line in p.err_lines), \
        p.transcript()
    assert len([x for x in p.out_lines if x.startswith("ready ")]) == 1


def test_workers_zero_serves_in_process(start):
    p = start(SERVER, "--workers", "0")
    pids, port = p.ready(1)
    assert pids == {0: p.proc.pid}
    assert ask_pid(port) == p.proc.pid
    assert p.finish(signal.SIGTERM) == 0
    assert p.out_lines[-1] == "stopped"


# -- restarts --------------------------------------------------------------------

@pytest.mark.parametrize("reuse", REUSE_MODES)
def test_a_killed_worker_is_replaced(start, reuse):
    p = start(SERVER, "--workers", "2", "--reuse-port", reuse)
    pids, port = p.ready(2)
    os.kill(pids[0], signal.SIGKILL)
    new_pids, _ = p.ready(1)
    assert list(new_pids) == [0] and new_pids[0] not in pids.values()
    assert reaped(pids[0])
    live = {new_pids[0], pids[1]}
    if reuse == "yes":
        # The replacement has its own socket: it takes its share.
        for _ in range(200):
            pid = ask_pid(port)
            assert pid in live
            if pid == new_pids[0]:
                break
        else:
            pytest.fail("the new worker answered none of 200 connections")
    else:
        assert {ask_pid(port) for _ in range(20)} <= live
    assert p.finish(signal.SIGTERM) == 0
    restarted = "worker 0 (pid %d) was killed by SIGKILL; restarting it" % pids[0]
    assert any(line.endswith(restarted) for line in p.err_lines), p.transcript()
    assert all(reaped(pid) for pid in live)


def test_a_worker_stopped_by_someone_else_is_replaced(start):
    p = start(SERVER, "--workers", "2")
    pids, port = p.ready(2)
    os.kill(pids[1], signal.SIGTERM)  # it exits cleanly; the parent did not ask for it
    new_pids, _ = p.ready(1)
    assert list(new_pids) == [1] and new_pids[1] not in pids.values()
    assert any(line.endswith("worker 1 (pid %d) exited with code 0; restarting it" % pids[1])
               for line in p.err_lines), p.transcript()
    assert ask_pid(port) in {pids[0], new_pids[1]}
    assert p.finish(signal.SIGTERM) == 0


def test_a_worker_failing_at_start_fails_fast(start):
    p = start(SERVER, "--workers", "2", "--crash", "start")
    line = p.expect("WorkerError: ")
    assert p.finish() == 3
    assert ("failed before it was serving (it exited with code 1): "
            "ValueError: boom in make_server") in line, p.transcript()
    assert "Traceback" in "\n".join(p.err_lines)  # the worker logged its own traceback


def test_crash_loop_guard(start):
    # Every worker crashes (exit code 7) right after it started serving.
    p = start(SERVER, "--workers", "2", "--crash", "serving", "--max-restarts", "3")
    line = p.expect("WorkerError: ")
    assert p.finish() == 3
    assert "4 unexpected worker exits within 60 s" in line, p.transcript()
    assert "exited with code 7); giving up" in line
    restarts = [x for x in p.err_lines if "exited with code 7; restarting it" in x]
    assert len(restarts) == 3, p.transcript()
    assert any(x.endswith("restarting it in 0.2 s") for x in restarts)
    started = [int(x.split()[2]) for x in p.out_lines if x.startswith("ready ")]
    assert len(started) >= 4 and all(reaped(pid) for pid in started)


# -- stopping --------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_parent_stops_everything(start, sig):
    p = start(SERVER, "--workers", "2")
    pids, port = p.ready(2)
    assert ask_pid(port) in pids.values()
    held = socket.create_connection((support.LOCALHOST, port), timeout=LINE_TIMEOUT)
    held.sendall(b"pid\n")
    assert int(read_lines(held)[0]) in pids.values()  # accepted (else stopping resets it)
    assert p.finish(sig) == 0
    assert p.out_lines[-1] == "stopped"
    assert all(reaped(pid) for pid in pids.values())
    # The workers closed their connections on the way out.
    with held:
        assert held.recv(1) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((support.LOCALHOST, port), timeout=LINE_TIMEOUT)


def test_ctrl_c_on_the_process_group_restarts_nothing(start):
    # A terminal's Ctrl-C: SIGINT to the parent and the workers at once.
    p = start(SERVER, "--workers", "2")
    pids, _ = p.ready(2)
    os.killpg(p.proc.pid, signal.SIGINT)
    assert p.finish() == 0
    assert not [x for x in p.err_lines if "restarting" in x], p.transcript()
    assert all(reaped(pid) for pid in pids.values())


def test_a_stuck_worker_is_killed_after_stop_timeout(start):
    p = start(SERVER, "--workers", "2", "--stop-timeout", "0.5")
    pids, port = p.ready(2)
    stuck = socket.create_connection((support.LOCALHOST, port), timeout=LINE_TIMEOUT)
    stuck.sendall(b"hang\n")
    p.expect("hanging ")
    assert p.finish(signal.SIGTERM) == 0
    assert any("killing 1 workers still running (stop_timeout=0.5 s)" in x
               for x in p.err_lines), p.transcript()
    assert all(reaped(pid) for pid in pids.values())
    stuck.close()


def test_a_second_signal_kills_at_once(start):
    p = start(SERVER, "--workers", "2", "--stop-timeout", "300")
    pids, port = p.ready(2)
    stuck = socket.create_connection((support.LOCALHOST, port), timeout=LINE_TIMEOUT)
    stuck.sendall(b"hang\n")
    p.expect("hanging ")
    os.kill(p.proc.pid, signal.SIGTERM)
    p.expect("fastcore.workers: SIGTERM: stopping 2 workers", stream="err")
    assert p.finish(signal.SIGINT) == 0
    assert any("(second signal)" in x for x in p.err_lines), p.transcript()
    assert all(reaped(pid) for pid in pids.values())
    stuck.close()


def test_workers_exit_when_the_parent_is_killed(start):
    p = start(SERVER, "--workers", "2")
    pids, port = p.ready(2)
    assert p.finish(signal.SIGKILL) == -signal.SIGKILL
    # Orphans now: they see EOF on the lifeline and stop by themselves.
    support.wait_for(lambda: all(exited(pid) for pid in pids.values()), timeout=LINE_TIMEOUT,
                     what="workers exited after their parent's SIGKILL")


# -- the example -------------------------------------------------------------------

def test_example_runs(start):
    p = start(EXAMPLE, "--port", "0", "--workers", "2")
    ports = {int(p.expect("worker ").rsplit(":", 1)[1]) for _ in range(2)}
    assert len(ports) == 1
    with socket.create_connection((support.LOCALHOST, ports.pop()), timeout=LINE_TIMEOUT) as s:
        s.sendall(b"hello\npid\n")
        hello, pid = read_lines(s, 2)
    assert hello == b"hello" and int(pid) > 0
    assert p.finish(signal.SIGINT) == 0
    assert p.out_lines[-1] == "stopped"


def test_the_readme_haproxy_configuration(start, tmp_path, haproxy):
    # Two "hosts" (serve_forever on two ports) behind the README's configuration.
    with open(os.path.join(HERE, os.pardir, "README.md")) as f:
        readme = f.read()
    config = readme.split("A minimal HAProxy\nconfiguration:\n\n```\n", 1)[1].split("```")[0]
    hosts = [start(EXAMPLE, "--port", "0", "--workers", "2") for _ in range(2)]
    ports, host_pids = [], []
    for h in hosts:
        lines = [h.expect("worker ") for _ in range(2)]
        ports.append(int(lines[0].rsplit(":", 1)[1]))
        host_pids.append({int(line.split()[3].rstrip(")")) for line in lines})
    front = support.closed_port()
    config = config.replace("bind :8007", "bind 127.0.0.1:%d" % front)
    for i, port in enumerate(ports):
        config = config.replace("10.0.0.1%d:8007" % (i + 1), "127.0.0.1:%d" % port)
    assert "10.0.0" not in config
    (tmp_path / "haproxy.cfg").write_text(config)
    balancer = subprocess.Popen([haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        answered = set()
        support.wait_for(lambda: answer_through(front, answered), timeout=LINE_TIMEOUT,
                         what="haproxy listening")
        for _ in range(20):
            answer_through(front, answered)
        # leastconn takes turns between equally loaded hosts
        assert all(answered & pids for pids in host_pids), (answered, host_pids)
    finally:
        balancer.kill()
        balancer.wait(LINE_TIMEOUT)
    for h in hosts:
        assert h.finish(signal.SIGTERM) == 0


def answer_through(port, answered):
    try:
        with socket.create_connection((support.LOCALHOST, port), timeout=LINE_TIMEOUT) as s:
            s.sendall(b"pid\n")
            answered.add(int(read_lines(s)[0]))
    except (ConnectionRefusedError, ConnectionResetError, AssertionError):
        return False
    return True


# -- in this process: errors at the call, Listener ---------------------------------

def serve_nothing(sock):
    raise AssertionError("no worker may start in these tests")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(make_server=None), TypeError, "make_server must be callable"),
    (dict(workers=-1), ValueError, "workers must be >= 0"),
    (dict(workers="2"), TypeError, "workers must be an int"),
    (dict(address="127.0.0.1:80"), TypeError, "address must be (host, port)"),
    (dict(loop_kwargs={"count": 1}), ValueError, "'count' would end"),
    (dict(loop_kwargs={"tiemout": 1}), TypeError, "loop_kwargs"),
    (dict(loop_kwargs={"map": {99: object()}}), RuntimeError, "already holds 1 dispatcher"),
    (dict(max_restarts=-1), ValueError, "max_restarts"),
    (dict(on_worker_start=1), TypeError, "on_worker_start must be callable"),
])
def test_bad_arguments_raise_at_the_call(kwargs, error, message):
    args = dict(make_server=serve_nothing, address=(support.LOCALHOST, 0), workers=2)
    args.update(kwargs)
    with pytest.raises(error) as info:
        serve_forever(**args)
    assert message in str(info.value)


def test_a_socket_must_be_listening_and_cannot_reuse_port():
    with socket.socket() as s:
        s.bind((support.LOCALHOST, 0))
        with pytest.raises(ValueError, match="not listening"):
            serve_forever(serve_nothing, s, 2)
        s.listen(1)
        with pytest.raises(ValueError, match="reuse_port=True needs an address"):
            serve_forever(serve_nothing, s, 2, reuse_port=True)


@pytest.mark.parametrize("reuse", [pytest.param(True, marks=needs_reuse_port), False])
def test_an_address_in_use_raises_at_the_call(reuse):
    with socket.socket() as s:
        s.bind((support.LOCALHOST, 0))
        s.listen(1)
        with pytest.raises(OSError) as info:
            serve_forever(serve_nothing, s.getsockname(), 2, reuse_port=reuse)
    assert info.value.errno == errno.EADDRINUSE


def test_pending_timers_are_refused(fastcore_pkg):
    timer = fastcore_pkg.call_later(60, print)
    try:
        with pytest.raises(RuntimeError, match="timers or handed-over callbacks are pending"):
            serve_forever(serve_nothing, (support.LOCALHOST, 0), 2)
    finally:
        timer.cancel()


def test_not_from_another_thread():
    t = support.start_thread(serve_forever, serve_nothing, (support.LOCALHOST, 0), 2)
    with pytest.raises(RuntimeError, match="main thread"):
        t.finish()


def test_listener_accepts_where_a_plain_dispatcher_would_not(sockmap):
    accepted = []

    class Server(Listener):
        def handle_accepted(self, sock, addr):
            accepted.append(sock)

    lsock = socket.socket()
    lsock.bind((support.LOCALHOST, 0))
    lsock.listen(8)
    plain = asyncore.dispatcher(lsock.dup(), {})
    # What asyncore 3.11 makes of a listening socket: not accepting, not connected.
    assert (plain.accepting, plain.connected) == (False, False)
    plain.close()
    server = Server(lsock, sockmap)
    assert server.accepting and not server.connected
    assert server.addr == lsock.getsockname()
    with socket.create_connection(server.addr, timeout=LINE_TIMEOUT):
        support.run_until(asyncore, sockmap, lambda: accepted, what="accepted")
    accepted[0].close()
