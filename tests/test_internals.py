"""The fast paths that rest on CPython internals (src/cpython_internals.h).

On every CPython the extension was checked on (3.9-3.15) all of them are on,
and `python -m fastcore info` says so. Without them the core is only slower:
a subprocess that takes every dict watcher slot before fastcore is imported
runs the loop and the attribute cache correctly all the same.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import fastcore
from fastcore import cli

pytestmark = pytest.mark.fastcore_only

CHECKED = (3, 9) <= sys.version_info[:2] <= (3, 15)


def extension_or_skip():
    if not fastcore.EXTENSION:
        pytest.skip("the pure core rests on no CPython internals")
    from fastcore import _core_c

    return _core_c


@pytest.mark.skipif(not CHECKED, reason="a CPython the internals were not checked on")
def test_every_fast_path_is_on_where_checked():
    core = extension_or_skip()
    states = dict(core._fast_paths())
    assert states and all(state.startswith("on:") for state in states.values()), states


def test_info_says_which_fast_paths_are_on():
    rows = dict(cli.info())
    if fastcore.EXTENSION:
        names = [name for name, _ in extension_or_skip()._fast_paths()]
        for name in names:
            assert rows["fast path: " + name].startswith(("on:", "off:"))
    else:
        assert rows["fast paths"].startswith("off: the pure-Python core runs")


# Takes every dict watcher slot of the interpreter (ctypes, a callback that is
# never called: it watches no dict), then imports fastcore.
WITHOUT_WATCHERS = textwrap.dedent(r"""
    import ctypes, socket, sys
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                ctypes.c_void_p, ctypes.c_void_p)
    keep = CALLBACK(lambda *args: 0)
    add = ctypes.pythonapi.PyDict_AddWatcher
    add.argtypes = [CALLBACK]
    add.restype = ctypes.c_int
    taken = 0
    while True:
        try:
            add(keep)
        except RuntimeError:
            break
        taken += 1
    from fastcore import _core_c, asynchat, asyncore
    states = dict(_core_c._fast_paths())
    assert states["instance attribute stores"].startswith("off:"), states

    class Lines(asynchat.async_chat):
        def __init__(self, sock, map):
            super().__init__(sock, map)
            self.set_terminator(b"\n")
            self.lines = []
            self.part = b""
        def collect_incoming_data(self, data):
            self.part += data
        def found_terminator(self):
            self.lines.append(self.part)
            self.part = b""

    sockmap = {}
    a, b = socket.socketpair()
    lines = Lines(a, sockmap)
    b.send(b"one\n")
    while not lines.lines:
        asyncore.loop(timeout=1, map=sockmap, count=1)
    # Behind every hook: straight into the instance dict.
    lines.__dict__["terminator"] = b";"
    b.send(b"two;three\n")
    while len(lines.lines) < 2:
        asyncore.loop(timeout=1, map=sockmap, count=1)
    assert lines.lines == [b"one", b"two"], lines.lines

    # A dispatcher put in the map directly is served.
    c, d = socket.socketpair()
    late = Lines(c, {})
    sockmap[c.fileno()] = late
    d.send(b"late\n")
    while not late.lines:
        asyncore.loop(timeout=1, map=sockmap, count=1)
    print("ok", taken, states["unchanged map skipped"].split(":")[0])
""")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="dict watchers are 3.12's")
def test_without_dict_watchers_the_core_is_correct():
    extension_or_skip()
    env = dict(os.environ, FASTCORE_EXPECT_EXTENSION="1")
    env.pop("FASTCORE_NO_EXTENSIONS", None)
    done = subprocess.run([sys.executable, "-I", "-c", WITHOUT_WATCHERS], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ok, taken, map_state = done.stdout.split()
    assert ok == "ok" and int(taken) > 0
    # Before 3.14 the map's version tag still skips an unchanged map.
    assert map_state == ("on" if sys.version_info < (3, 14) else "off")
