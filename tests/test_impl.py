"""Implementation selection: the extension vs the pure-Python twin."""

import importlib.util
import os
import platform
import select
import sys

import pytest
import support

pytestmark = pytest.mark.fastcore_only

ALL_BACKENDS = ("epoll", "kqueue", "poll", "select")


def _env_flag(name):
    return os.environ.get(name, "") not in ("", "0")


def _extension_imports():
    """Whether fastcore._core_c is there and imports here (what the default
    selection tries first on CPython)."""
    if importlib.util.find_spec("fastcore._core_c") is None:
        return False
    r = support.run_python(["-c", "import fastcore._core_c"], {"FASTCORE_NO_EXTENSIONS": None})
    return r.returncode == 0 and platform.python_implementation() == "CPython"


def test_extension_says_which_core_runs(fastcore_pkg):
    assert fastcore_pkg.EXTENSION is (fastcore_pkg._impl.core.__name__ == "fastcore._core_c")


def test_expected_implementation(fastcore_pkg):
    if _env_flag("FASTCORE_NO_EXTENSIONS"):
        assert fastcore_pkg.EXTENSION is False, (
            "FASTCORE_NO_EXTENSIONS=1 must select the pure-Python twin")
    else:
        if _env_flag("FASTCORE_EXPECT_EXTENSION"):
            assert _extension_imports(), (
                "FASTCORE_EXPECT_EXTENSION=1 but fastcore._core_c is missing or fails to import")
        # Without the flag the extension is used whenever it imports.
        assert fastcore_pkg.EXTENSION is _extension_imports()


def _run_python(code, **env_updates):
    return support.run_python(["-c", code], env_updates)


def test_no_extensions_env_forces_twin_in_subprocess(fastcore_pkg):
    r = _run_python("import fastcore; print(fastcore.EXTENSION)", FASTCORE_NO_EXTENSIONS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_default_selection_in_subprocess(fastcore_pkg):
    r = _run_python("import fastcore; print(fastcore.EXTENSION)", FASTCORE_NO_EXTENSIONS=None)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(_extension_imports())


def test_both_implementations_expose_the_same_core_api(fastcore_pkg):
    """The facade's public classes and functions exist whatever core is used."""
    code = ("import fastcore\n"
            "from fastcore import asyncore, asynchat\n"
            "names = ['dispatcher', 'dispatcher_with_send', 'loop', 'poll', 'poll2', 'read', "
            "'write', 'readwrite', '_exception', 'close_all', 'compact_traceback', 'ExitNow']\n"
            "missing = [n for n in names if not hasattr(asyncore, n)]\n"
            "missing += [n for n in ('async_chat', 'simple_producer', 'find_prefix_at_end') "
            "if not hasattr(asynchat, n)]\n"
            "print(fastcore.EXTENSION, missing)\n")
    r = _run_python(code, FASTCORE_NO_EXTENSIONS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False []"
    if importlib.util.find_spec("fastcore._core_c") is not None:
        r = _run_python(code, FASTCORE_NO_EXTENSIONS=None)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("[]")


def test_default_backend(fastcore_pkg):
    b = fastcore_pkg.default_backend()
    assert isinstance(b, str)
    if sys.platform.startswith("linux"):
        assert b == "epoll"
    elif sys.platform == "darwin" or "bsd" in sys.platform:
        assert b == "kqueue"
    assert b in fastcore_pkg.available_backends()


def test_available_backends(fastcore_pkg):
    backends = fastcore_pkg.available_backends()
    assert isinstance(backends, tuple)
    assert len(backends) == len(set(backends)) >= 1
    assert set(backends) <= set(ALL_BACKENDS)
    assert backends[0] == fastcore_pkg.default_backend()
    assert "select" in backends
    assert ("poll" in backends) == hasattr(select, "poll")
    assert ("epoll" in backends) == hasattr(select, "epoll")
    if sys.platform.startswith("linux"):
        assert "kqueue" not in backends
        assert "epoll" in backends


@pytest.mark.parametrize("base_name", ["dispatcher", "dispatcher_with_send", "async_chat"])
def test_extension_tracks_dispatchers_of_unmodified_classes(fastcore_pkg, base_name):
    """The extension tracks the interest of a dispatcher whose class keeps the
    core's readable/writable, and asks one that overrides them: it relies on
    class version tags, whose validity CPython marks differently from 3.13."""
    if not fastcore_pkg.EXTENSION:
        pytest.skip("the pure core has no tracked dispatchers")
    import socket

    from fastcore import _core_c, asynchat, asyncore
    base = getattr(asynchat if base_name == "async_chat" else asyncore, base_name)

    class Plain(base):
        pass

    class Asking(base):
        def readable(self):
            return True

    sockmap = {}
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        plain = Plain(pairs[0][0], map=sockmap)
        asking = Asking(pairs[1][0], map=sockmap)
        asyncore.loop(timeout=0, map=sockmap, count=2)
        assert not _core_c._polled(plain)
        assert _core_c._polled(asking)
    finally:
        asyncore.close_all(map=sockmap, ignore_all=True)
        for _a, b in pairs:
            b.close()
