"""The extension keeps a polled dispatcher's readable()/writable() answer
while it can prove the answer unchanged (src/interest_proof.pxi); every way
the attributes those methods read can change must bring the dispatcher's
interest along, exactly as the reference's loop, which asks every iteration.

The pattern is the asyncore documentation's: readable() True, writable()
``len(self.buffer) > 0``. A socket pair's end is always writable, so whether
handle_write runs in the next iteration shows the interest the loop gave.
"""

import builtins
import socket
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fastcore_only

PROOF_VERSIONS = (3, 10) <= sys.version_info[:2] <= (3, 15)

SOURCE = """
class Base(asyncore.dispatcher):
    pass

class Doc(Base):
    def __init__(self, sock, map):
        Base.__init__(self, sock, map=map)
        self.buffer = b""
        self.writes = 0

    def readable(self):
        return True

    def writable(self):
        return len(self.buffer) > 0

    def handle_write(self):
        self.writes += 1

class AlwaysWritable(Doc):
    def writable(self):
        return True
"""


def _core():
    from fastcore._impl import core
    return core


def _extension(asyncore):
    return asyncore.__name__ == "fastcore.asyncore" and _core().__name__ == "fastcore._core_c"


class World:
    """The pattern's classes, made in a namespace of their own (with their own
    builtins), and one dispatcher of them in its own map."""

    def __init__(self, asyncore):
        self.asyncore = asyncore
        self.namespace = {"asyncore": asyncore, "__builtins__": dict(builtins.__dict__)}
        exec(compile(SOURCE, "<doc pattern>", "exec"), self.namespace)
        self.map = {}
        self.sock, self.peer = socket.socketpair()
        self.d = self.namespace["Doc"](self.sock, self.map)

    def iteration(self):
        """handle_write calls in one iteration."""
        before = self.d.writes
        self.asyncore.loop(timeout=0, map=self.map, count=1)
        return self.d.writes - before

    def close(self):
        self.d.close()
        self.peer.close()


@pytest.fixture
def worlds(asyncore, ref_asyncore):
    made = [World(asyncore), World(ref_asyncore)]
    yield made
    for world in made:
        world.close()


def _proven(world):
    return _extension(world.asyncore) and _core()._proven(world.d)


def assign(w):
    w.d.buffer = b"x"


def into_vars(w):
    vars(w.d)["buffer"] = b"x"


def delete_to_class(w):
    w.namespace["Doc"].buffer = b"class"
    # The class changed too: let the loop settle on that first.
    w.iteration()
    del w.d.buffer


def class_attribute(w):
    del w.d.buffer
    w.namespace["Doc"].buffer = b""
    w.iteration()
    w.iteration()
    w.namespace["Doc"].buffer = b"x"


def base_attribute(w):
    del w.d.buffer
    w.namespace["Base"].buffer = b""
    w.iteration()
    w.iteration()
    w.namespace["Base"].buffer = b"x"


def replace_dict(w):
    w.d.__dict__ = dict(vars(w.d), buffer=b"x")


def replace_dict_kept(w):
    w.kept = vars(w.d)   # the old dict outlives the assignment
    w.d.__dict__ = dict(vars(w.d), buffer=b"x")


def replace_class(w):
    w.d.__class__ = w.namespace["AlwaysWritable"]


def method_on_class(w):
    w.namespace["Doc"].writable = lambda self: True


def method_on_instance(w):
    w.d.writable = lambda: True


def method_code(w):
    w.namespace["Doc"].writable.__code__ = (lambda self: True).__code__


def shadow_len_global(w):
    w.namespace["len"] = lambda obj: 1


def shadow_len_builtin(w):
    w.namespace["__builtins__"]["len"] = lambda obj: 1


CHANGES = [assign, into_vars, delete_to_class, class_attribute, base_attribute,
           replace_dict, replace_dict_kept, replace_class, method_on_class,
           method_on_instance, method_code, shadow_len_global, shadow_len_builtin]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__ for c in CHANGES])
def test_interest_follows_each_change(worlds, change):
    if change is shadow_len_builtin and sys.implementation.name != "cpython":
        # PyPy does not look a function's builtins up in its namespace's
        # __builtins__ dict at each call (neither implementation there sees
        # the change); the proofs this guards are CPython's alone.
        pytest.skip("builtins shadowed through __builtins__ is CPython's behaviour")
    for w in worlds:
        assert [w.iteration(), w.iteration()] == [0, 0]
        if PROOF_VERSIONS and _extension(w.asyncore):
            assert _proven(w), "the documentation's pattern is proven"
    for w in worlds:
        change(w)
    got = [w.iteration() for w in worlds]
    assert got[0] == got[1] == 1, got


def test_bytearray_buffer_is_asked(worlds):
    for w in worlds:
        w.d.buffer = bytearray()
        assert [w.iteration(), w.iteration()] == [0, 0]
        assert not _proven(w)
        w.d.buffer.extend(b"x")   # grows in place: no assignment
        assert w.iteration() == 1


def test_property_is_asked(asyncore, ref_asyncore):
    got = []
    for module in (asyncore, ref_asyncore):
        w = World(module)
        try:
            cls = w.namespace["Doc"]
            del w.d.buffer
            store = [b""]
            cls.buffer = property(lambda self, store=store: store[0])
            assert [w.iteration(), w.iteration()] == [0, 0]
            assert not _proven(w)
            store[0] = b"x"
            got.append(w.iteration())
        finally:
            w.close()
    assert got == [1, 1]


# What the proof must refuse: anything but reading self's attributes,
# constants and builtins.len, comparing, negating and returning.
UNPROVABLE = {
    "call": "return self.check()",
    "call_other_global": "return bool(self.buffer)",
    "subscript": "return self.buffer[0:1] != b''",
    "other_global": "return LIMIT > 0",
    "nested_attribute": "return len(self.inner.buffer) > 0",
    "method_load": "return len(self.buffer.strip()) > 0",
    "local": "n = len(self.buffer)\n        return n > 0",
    "arithmetic": "return len(self.buffer) + 1 > 1",
    "self_itself": "return self == self",
    "generator": "yield self.buffer",
}


@pytest.mark.skipif(not PROOF_VERSIONS, reason="no proofs on this version")
@pytest.mark.parametrize("body", list(UNPROVABLE.values()), ids=list(UNPROVABLE))
def test_unprovable_methods(asyncore, body):
    if not _extension(asyncore):
        pytest.skip("the pure core asks every iteration")
    namespace = {"asyncore": asyncore, "LIMIT": 1}
    exec("class C(asyncore.dispatcher):\n"
         "    buffer = b''\n"
         "    def writable(self):\n"
         "        " + body + "\n", namespace)
    assert _core()._provable(namespace["C"]) is None


@pytest.mark.skipif(not PROOF_VERSIONS, reason="no proofs on this version")
def test_provable_shapes(asyncore):
    if not _extension(asyncore):
        pytest.skip("the pure core asks every iteration")
    namespace = {"asyncore": asyncore}
    exec("class C(asyncore.dispatcher):\n"
         "    def readable(self):\n"
         "        return not self.paused and self.limit is None\n"
         "    def writable(self):\n"
         "        return len(self.buffer) > 0 or self.closing\n", namespace)
    assert set(_core()._provable(namespace["C"])) == {
        "paused", "limit", "buffer", "closing", "accepting"}


def test_closure_is_not_provable(asyncore):
    if not _extension(asyncore):
        pytest.skip("the pure core asks every iteration")
    limit = 0

    class C(asyncore.dispatcher):
        def writable(self):
            return limit > 0

    assert _core()._provable(C) is None


# Sized values only: a raising writable() leaves the reference's loop.
VALUES = [b"", b"x", b"", "", "y", bytearray(), bytearray(b"z")]
STEPS = st.one_of(
    st.tuples(st.just("assign"), st.sampled_from(VALUES)),
    st.tuples(st.just("vars"), st.sampled_from(VALUES)),
    st.tuples(st.just("class"), st.sampled_from(VALUES)),
    st.tuples(st.just("delete"), st.none()),
    st.tuples(st.just("grow"), st.none()),
    st.tuples(st.just("iterate"), st.none()),
)


def _apply(w, step):
    kind, value = step
    if isinstance(value, bytearray):
        value = bytearray(value)   # each world its own
    if kind == "assign":
        w.d.buffer = value
    elif kind == "vars":
        vars(w.d)["buffer"] = value
    elif kind == "class":
        w.namespace["Doc"].buffer = value
    elif kind == "delete":
        vars(w.d).pop("buffer", None)
    elif kind == "grow":
        buffer = getattr(w.d, "buffer", None)
        if isinstance(buffer, bytearray):
            buffer.extend(b"g")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(STEPS, min_size=1, max_size=12))
def test_changes_between_iterations_match_reference(asyncore, ref_asyncore, steps):
    worlds = [World(asyncore), World(ref_asyncore)]
    try:
        for w in worlds:
            w.namespace["Doc"].buffer = b""   # what a deleted one falls back to
        for step in steps:
            got = []
            for w in worlds:
                _apply(w, step)
                got.append(w.iteration())
            assert got[0] == got[1], (step, got)
    finally:
        for w in worlds:
            w.close()


def test_change_made_by_another_dispatchers_readable(asyncore, ref_asyncore):
    """A dispatcher asked before it in the iteration changes the class
    attribute its kept answer read: the reference sees that in the same
    iteration."""
    got = []
    for module in (asyncore, ref_asyncore):
        w = World(module)
        doc = w.namespace["Doc"]
        del w.d.buffer
        doc.buffer = b""

        class Changer(module.dispatcher):
            armed = False
            target = doc

            def readable(self):
                if self.armed:
                    self.target.buffer = b"x"
                return False

            def writable(self):
                return False

        a, b = socket.socketpair()
        # Before w.d in the map's order, as in the reference's iteration.
        w.map.pop(w.d._fileno)
        changer = Changer(a, w.map)
        w.map[w.d._fileno] = w.d
        try:
            assert [w.iteration(), w.iteration()] == [0, 0]
            changer.armed = True
            got.append(w.iteration())
        finally:
            changer.close()
            b.close()
            w.close()
    assert got == [1, 1]
