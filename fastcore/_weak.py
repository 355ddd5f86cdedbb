"""A weak-keyed table whose entries die without running Python code.

``weakref.WeakKeyDictionary`` drops an entry from a Python callback that runs
when the key dies, inside whatever code freed it. A signal handler can run
in that callback, and the exception it raises there (``KeyboardInterrupt``, a
SIGTERM handler's ``SystemExit``) is only printed: the program never sees
it. Here a dead key's reference is handed to ``list.append`` (C) and the
entry is dropped at the table's next use.
"""

from weakref import ref


class WeakKeyTable:
    """key -> value for weakly referable, hashable keys; an entry goes with
    its key. Lookups of a key that cannot be weakly referenced raise
    ``TypeError``, as ``WeakKeyDictionary``'s do."""

    __slots__ = ("_entries", "_dead")

    def __init__(self):
        self._entries = {}  # weakref of the key -> value
        self._dead = []  # references whose key died, not yet dropped

    def _drop_dead(self):
        dead = self._dead
        while dead:
            # A dead reference keeps the hash it had and equals only itself.
            self._entries.pop(dead.pop(), None)

    def get(self, key, default=None):
        self._drop_dead()
        return self._entries.get(ref(key), default)

    def __setitem__(self, key, value):
        self._drop_dead()
        self._entries[ref(key, self._dead.append)] = value

    def __len__(self):
        self._drop_dead()
        return len(self._entries)

    def keys(self):
        """The live keys, as a list."""
        self._drop_dead()
        return [key for key in (wr() for wr in list(self._entries)) if key is not None]
