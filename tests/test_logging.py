"""fastcore.use_logging: dispatchers' log/log_info and the loop's own warnings
through ``logging``; the standard behaviour by default."""

import logging
import socket

import pytest
from support import run_until

pytestmark = pytest.mark.fastcore_only


@pytest.fixture
def routed(fastcore_pkg, caplog):
    caplog.set_level(logging.DEBUG, logger="fastcore")
    logger = fastcore_pkg.use_logging()
    yield logger
    fastcore_pkg.use_logging(False)


def _records(caplog, **fields):
    return [r for r in caplog.records
            if all(getattr(r, k, None) == v for k, v in fields.items())]


def test_default_behaviour_is_3_11s(asyncore, capsys):
    d = asyncore.dispatcher()
    d.log("a message")
    d.log_info("some info")
    d.log_info("a warning", "warning")  # in ignore_log_types
    d.log_info("an error", "error")
    out, err = capsys.readouterr()
    assert err == "log: a message\n"
    assert out == "info: some info\nerror: an error\n"


def test_routed_records_carry_the_dispatcher(asyncore, sockmap, routed, caplog, capsys):
    a, b = socket.socketpair()
    d = asyncore.dispatcher(a, map=sockmap)
    d.log("a message")
    d.log_info("some info")
    d.log_info("an error", "error")
    d.log_info("odd", "custom")
    d.log_info("a warning", "warning")
    assert capsys.readouterr() == ("", "")
    got = [(r.levelno, r.getMessage(), r.log_type) for r in caplog.records]
    assert got == [
        (logging.DEBUG, "a message", "log"),
        (logging.INFO, "some info", "info"),
        (logging.ERROR, "an error", "error"),
        (logging.INFO, "odd", "custom"),
        (logging.DEBUG, "a warning", "warning"),  # 3.11 drops it: DEBUG here
    ]
    for r in caplog.records:
        assert r.name == "fastcore"
        assert r.dispatcher == repr(d)
        assert r.fd == a.fileno()
        assert r.funcName == "test_routed_records_carry_the_dispatcher"  # the caller's
    b.close()


def test_not_ignored_warnings_are_warnings(asyncore, routed, caplog):
    d = asyncore.dispatcher()
    d.ignore_log_types = frozenset()
    d.handle_read()  # the facade's default: "unhandled read event"
    (r,) = caplog.records
    assert (r.levelno, r.getMessage(), r.fd) == (logging.WARNING, "unhandled read event", None)


def test_handle_error_goes_through_logging(asyncore, sockmap, routed, caplog):
    a, b = socket.socketpair()

    class Failing(asyncore.dispatcher):
        def writable(self):
            return False

        def handle_read(self):
            raise ValueError("bad input")

    d = Failing(a, map=sockmap)
    b.send(b"x")
    run_until(asyncore, sockmap, lambda: not sockmap)
    (r,) = _records(caplog, log_type="error")
    assert r.levelno == logging.ERROR
    assert "uncaptured python exception" in r.getMessage()
    assert "ValueError" in r.getMessage()
    assert r.dispatcher == repr(d) or r.dispatcher.startswith("<%s." % Failing.__module__)
    b.close()


def _failing_twice(asyncore):
    class FailingTwice(asyncore.dispatcher):
        def writable(self):
            return False

        def handle_read(self):
            raise ValueError("bad input")

        def handle_error(self):
            raise RuntimeError("handle_error broken")

    return FailingTwice


def test_loop_warning_default_is_stderr(asyncore, sockmap, capsys):
    a, b = socket.socketpair()
    _failing_twice(asyncore)(a, map=sockmap)
    b.send(b"x")
    run_until(asyncore, sockmap, lambda: not sockmap)
    err = capsys.readouterr().err
    assert err.startswith("error: handle_error")
    assert "RuntimeError" in err and "closing it" in err
    b.close()


def test_loop_warning_routed(asyncore, sockmap, routed, caplog, capsys):
    a, b = socket.socketpair()
    d = _failing_twice(asyncore)(a, map=sockmap)
    fd = a.fileno()
    label = repr(d)
    b.send(b"x")
    run_until(asyncore, sockmap, lambda: not sockmap)
    assert capsys.readouterr().err == ""
    (r,) = caplog.records
    assert r.levelno == logging.ERROR
    assert "handle_error" in r.getMessage() and "RuntimeError" in r.getMessage()
    assert (r.fd, r.dispatcher) == (fd, label)
    b.close()


def test_use_logging_false_restores(fastcore_pkg, asyncore, caplog, capsys):
    caplog.set_level(logging.DEBUG, logger="fastcore")
    fastcore_pkg.use_logging()
    fastcore_pkg.use_logging(False)
    d = asyncore.dispatcher()
    d.log_info("back to print")
    assert capsys.readouterr().out == "info: back to print\n"
    assert caplog.records == []


def test_named_and_given_loggers(fastcore_pkg, asyncore, caplog):
    caplog.set_level(logging.INFO)
    try:
        assert fastcore_pkg.use_logging("myapp.net").name == "myapp.net"
        asyncore.dispatcher().log_info("one")
        mine = logging.getLogger("myapp.other")
        assert fastcore_pkg.use_logging(mine) is mine
        asyncore.dispatcher().log_info("two")
    finally:
        fastcore_pkg.use_logging(False)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("myapp.net", "one"), ("myapp.other", "two")]


def test_bad_logger(fastcore_pkg):
    with pytest.raises(TypeError):
        fastcore_pkg.use_logging(42)


def test_subclass_override_is_kept(asyncore, asynchat, routed, caplog):
    seen = []

    class Own(asynchat.async_chat):
        def log_info(self, message, type="info"):
            seen.append((type, message))

    Own().log_info("mine")
    assert seen == [("info", "mine")]
    assert caplog.records == []
    asynchat.async_chat().log_info("chat's")  # inherits dispatcher's: routed
    assert [r.getMessage() for r in caplog.records] == ["chat's"]
