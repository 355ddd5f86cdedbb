"""Debug mode: per-dispatcher traces, slow handlers, the trace logged on
errors, dispatchers left open at exit; FASTCORE_DEBUG and loop(debug=True)."""

import logging
import socket
import time

import pytest
import support
from support import USE_POLL, run_iterations, run_until

pytestmark = pytest.mark.fastcore_only


@pytest.fixture
def debug(fastcore_pkg, caplog):
    from fastcore import debug

    caplog.set_level(logging.DEBUG, logger="fastcore")
    was = debug.enabled()
    yield debug
    if was:
        debug.enable()
    else:
        debug.disable()


def _reader(asyncore):
    class Reader(asyncore.dispatcher):
        def writable(self):
            return False

        def handle_read(self):
            self.recv(1000)

    return Reader


@pytest.mark.parametrize("use_poll", USE_POLL)
def test_trace_records_events(fastcore_pkg, debug, asyncore, sockmap, use_poll):
    debug.enable()
    a, b = socket.socketpair()
    d = _reader(asyncore)(a, map=sockmap)
    started = time.monotonic()
    for chunk in (b"abc", b"defgh"):
        b.send(chunk)
        run_until(asyncore, sockmap, lambda: support.consumed(d), use_poll=use_poll)
    events = fastcore_pkg.trace(d)
    assert [(e.kind, e.read, e.written) for e in events] == [("read", 3, 0), ("read", 5, 0)]
    for e in events:
        assert started <= e.time <= time.monotonic()
        assert 0 <= e.duration < 1.0
    assert events[0].time <= events[1].time
    b.close()


def test_trace_of_writes(fastcore_pkg, debug, asyncore, sockmap):
    debug.enable()
    a, b = socket.socketpair()
    d = asyncore.dispatcher_with_send(a, map=sockmap)
    d.out_buffer = b"z" * 10  # sent by the next write event
    run_until(asyncore, sockmap, lambda: not d.out_buffer)
    assert [(e.kind, e.read, e.written) for e in fastcore_pkg.trace(d)] == [("write", 0, 10)]
    b.close()


def test_ring_buffer_keeps_the_last(fastcore_pkg, debug, asyncore, sockmap):
    debug.enable(size=3)
    a, b = socket.socketpair()
    d = _reader(asyncore)(a, map=sockmap)
    for n in range(1, 7):
        b.send(b"x" * n)
        run_until(asyncore, sockmap, lambda: support.consumed(d))
    assert [e.read for e in fastcore_pkg.trace(d)] == [4, 5, 6]
    b.close()


def test_off_records_nothing(fastcore_pkg, debug, asyncore, sockmap):
    debug.disable()
    assert not debug.enabled()
    a, b = socket.socketpair()
    d = _reader(asyncore)(a, map=sockmap)
    b.send(b"abc")
    run_until(asyncore, sockmap, lambda: support.consumed(d))
    assert fastcore_pkg.trace(d) == []
    b.close()


def test_loop_debug_true_turns_it_on(fastcore_pkg, debug, asyncore, sockmap):
    debug.disable()
    a, b = socket.socketpair()
    d = _reader(asyncore)(a, map=sockmap)
    b.send(b"abc")
    asyncore.loop(timeout=support.DEFAULT_TIMEOUT, map=sockmap, count=1, debug=True)
    assert debug.enabled()
    assert [e.read for e in fastcore_pkg.trace(d)] == [3]
    b.close()


def test_slow_handler_is_logged(debug, asyncore, sockmap, caplog):
    debug.enable(slow=0.02)
    a, b = socket.socketpair()

    class Slow(asyncore.dispatcher):
        def writable(self):
            return False

        def handle_read(self):
            self.recv(100)
            time.sleep(0.04)  # the slowness being detected

    d = Slow(a, map=sockmap)
    b.send(b"x")
    run_iterations(asyncore, sockmap, 1, timeout=support.DEFAULT_TIMEOUT)
    (r,) = [r for r in caplog.records if "slow handler" in r.getMessage()]
    assert r.levelno == logging.WARNING
    assert repr(d) in r.getMessage() and "fd %d" % a.fileno() in r.getMessage()
    caplog.clear()
    b.send(b"x")
    d.handle_read = lambda: d.recv(100)  # fast now
    run_iterations(asyncore, sockmap, 1, timeout=support.DEFAULT_TIMEOUT)
    assert not [r for r in caplog.records if "slow handler" in r.getMessage()]
    b.close()


def test_trace_logged_on_error(fastcore_pkg, debug, asyncore, sockmap, caplog, capsys):
    debug.enable()
    a, b = socket.socketpair()

    class FailsOnBang(asyncore.dispatcher):
        def writable(self):
            return False

        def handle_read(self):
            if b"!" in self.recv(100):
                raise ValueError("bang")

    d = FailsOnBang(a, map=sockmap)
    fd = a.fileno()
    for chunk in (b"12", b"345"):
        b.send(chunk)
        run_until(asyncore, sockmap, lambda: support.consumed(d))
    b.send(b"!")
    run_until(asyncore, sockmap, lambda: not sockmap)
    (r,) = [r for r in caplog.records if "handling an error" in r.getMessage()]
    message = r.getMessage()
    assert "(fd %d)" % fd in message and "its 2 events before this one" in message
    lines = message.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["read", "read"]
    assert [line.split()[-2:] for line in lines] == [["2", "0"], ["3", "0"]]
    assert [e.read for e in fastcore_pkg.trace(d)] == [2, 3, 1]
    assert "ValueError" in capsys.readouterr().out  # handle_error itself, unchanged
    b.close()


def test_bad_arguments(debug):
    with pytest.raises(ValueError):
        debug.enable(slow=0)
    with pytest.raises(ValueError):
        debug.enable(size=0)


SCRIPT = """
import socket
from fastcore import asyncore
import fastcore.debug

d = asyncore.dispatcher()
d.create_socket()
d.bind(("127.0.0.1", 0))
d.listen(5)
print("debug", fastcore.debug.enabled(), d._fileno)
"""


def test_open_dispatchers_reported_at_exit():
    proc = support.run_python(["-c", SCRIPT], {"FASTCORE_DEBUG": "1"})
    assert proc.returncode == 0, proc.stderr
    word, on, fd = proc.stdout.split()
    assert on == "True"
    assert "dispatcher left open at exit: <asyncore.dispatcher" in proc.stderr \
        or "dispatcher left open at exit: <fastcore.asyncore.dispatcher" in proc.stderr
    assert "(fd %s)" % fd in proc.stderr


def test_no_report_without_debug():
    proc = support.run_python(["-c", SCRIPT], {"FASTCORE_DEBUG": None})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[1] == "False"
    assert proc.stderr == ""


def test_closed_dispatchers_not_reported():
    script = SCRIPT + "d.close()\n"
    proc = support.run_python(["-c", script], {"FASTCORE_DEBUG": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "left open" not in proc.stderr


def test_slow_timer_is_logged(debug, caplog):
    # What the timer code hands over (trace_timer in src/stats.pxi and
    # fastcore/_core_py/stats.py) after each callback in debug mode.
    def tick():
        pass

    recorder = debug.Recorder(slow=0.05, size=4)
    recorder.timer_done(tick, 0.01)
    assert caplog.records == []
    recorder.timer_done(tick, 0.2)
    (r,) = caplog.records
    assert r.levelno == logging.WARNING
    assert "slow timer" in r.getMessage() and "tick" in r.getMessage()
    assert "200.0 ms" in r.getMessage()


def test_slow_timer_callback_is_logged_in_debug_mode(fastcore_pkg, debug, caplog):
    from fastcore import asyncore

    def slow_tick():
        time.sleep(0.03)  # the slowness under test, not synchronisation

    debug.enable(slow=0.01)
    fastcore_pkg.call_later(0, slow_tick)
    asyncore.loop(timeout=5, map={})
    assert ["slow timer" in r.getMessage() and "slow_tick" in r.getMessage()
            for r in caplog.records] == [True]
    debug.disable()
    caplog.clear()
    fastcore_pkg.call_later(0, slow_tick)
    asyncore.loop(timeout=5, map={})
    assert caplog.records == []
