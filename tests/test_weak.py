"""fastcore._weak.WeakKeyTable: the weak-keyed table of fastcore.proxy and
fastcore.debug, whose entries die without running Python code."""

import gc
import types

import pytest

pytestmark = pytest.mark.fastcore_only


class Key:
    pass


def test_an_entry_goes_with_its_key():
    from fastcore._weak import WeakKeyTable

    table = WeakKeyTable()
    a, b = Key(), Key()
    table[a] = 1
    table[b] = 2
    table[a] = 3
    assert table.get(a) == 3 and table.get(b) == 2 and len(table) == 2
    del a
    gc.collect()
    assert len(table) == 1
    assert table.keys() == [b]
    assert table.get(Key(), "none") == "none"


def test_keys_that_cannot_be_weakly_referenced_or_hashed_raise_type_error():
    from fastcore._weak import WeakKeyTable

    table = WeakKeyTable()
    with pytest.raises(TypeError):
        table.get(1)
    with pytest.raises(TypeError):
        table[[]] = 1

    class Unhashable:
        __hash__ = None

    with pytest.raises(TypeError):
        table[Unhashable()] = 1


def test_a_dying_key_runs_no_python_code():
    """The references' callback is C (list.append): a signal handler cannot
    run in it, where its exception would only be printed."""
    from fastcore._weak import WeakKeyTable

    table = WeakKeyTable()
    key = Key()
    table[key] = "value"
    callbacks = [wr.__callback__ for wr in table._entries]
    assert callbacks and not any(isinstance(cb, types.FunctionType) for cb in callbacks)
    del key
    gc.collect()
    assert len(table) == 0
