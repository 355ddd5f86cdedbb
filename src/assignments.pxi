# How the loop hears of assignments to a dispatcher's instance attributes
# that change what it must do:
#   - readable/writable: the dispatcher becomes polled, or tracked again;
#   - a method the core otherwise calls without a Python call: that fast path
#     is off for the instance;
#   - socket: the new socket may have the old one's fd number, and so must be
#     registered with the kernel again;
#   - connected, accepting, out_buffer, producer_fifo: the interest is recomputed;
#   - an attribute whose value attribute_cache.pxi keeps: it is forgotten.
# On CPython 3.12+ a dict watcher on each instance dict reports them, so the
# facade's classes keep the interpreter's own attribute stores, which it
# specialises. Before 3.12 (or with every watcher slot taken) the facade
# derives from HookedDispatcherBase instead, whose tp_setattro reports them
# (DISPATCHER_BASE).

cdef extern from "dict_watch.h":
    ctypedef int fc_dict_event
    enum:
        FC_DICT_WATCHERS
        FC_DICT_ADDED
        FC_DICT_MODIFIED
        FC_DICT_DELETED
        FC_DICT_DEALLOCATED
    ctypedef int (*fc_dict_callback)(fc_dict_event, PyObject *, PyObject *, PyObject *) noexcept
    int fc_dict_add_watcher(fc_dict_callback callback) except -1
    int fc_dict_watch(int watcher_id, object d) except -1
    bint fc_str_interned(PyObject *o) noexcept


cdef enum:
    ASSIGNED_METHOD = 1   # a name in _WATCHED_METHODS
    ASSIGNED_SOCKET = 2
    ASSIGNED_INTEREST = 4  # connected, accepting, out_buffer, producer_fifo: interest follows
    CACHED_SHIFT = 8      # bits from here on: the name's attribute_cache.pxi slot
    # The dict was cleared or filled at once: all of the above.
    ASSIGNED_ANY = ASSIGNED_METHOD | ASSIGNED_SOCKET | ASSIGNED_INTEREST | \
        (((1 << CACHED_SLOTS) - 1) << CACHED_SHIFT)


cdef dict _watched_kinds = {}   # watched name -> its ASSIGNED_* bits
for _name in _WATCHED_METHODS:
    _watched_kinds[sys.intern(_name)] = ASSIGNED_METHOD
_watched_kinds[sys.intern("socket")] = ASSIGNED_SOCKET
for _i, _name in enumerate(_cached_names):
    _watched_kinds[_name] = _watched_kinds.get(_name, 0) | (1 << (_i + CACHED_SHIFT))
    if (1 << _i) & CACHED_INTEREST:
        _watched_kinds[_name] |= ASSIGNED_INTEREST

# The watched names, interned (attribute names are), and their kinds, in an
# open-addressing table keyed by address: the watcher looks up the key of
# every store to a dispatcher's dict. The tuple keeps the names alive.
cdef enum:
    NAME_TABLE_SIZE = 64   # a power of two, well above the names' count

cdef tuple _watched_names = tuple(sorted(_watched_kinds))
cdef PyObject *_name_table_keys[NAME_TABLE_SIZE]
cdef int _name_table_kinds[NAME_TABLE_SIZE]
if len(_watched_names) > NAME_TABLE_SIZE // 2:
    raise ImportError("the watched-name table holds %d names, not %d"
                      % (NAME_TABLE_SIZE // 2, len(_watched_names)))


cdef inline size_t name_slot(PyObject *name) noexcept:
    return (<size_t>name >> 4) & (NAME_TABLE_SIZE - 1)


cdef size_t _slot
for _name in _watched_names:
    _slot = name_slot(<PyObject *>_name)
    while _name_table_keys[_slot] is not NULL:
        _slot = (_slot + 1) & (NAME_TABLE_SIZE - 1)
    _name_table_keys[_slot] = <PyObject *>_name
    _name_table_kinds[_slot] = _watched_kinds[_name]
del _i, _name

cdef int _dict_watcher = -1
# address of a watched instance dict -> address of its dispatcher; entries go
# when either is deallocated.
cdef dict _dict_owners = {}


cdef int name_kind(PyObject *name) noexcept:
    """The ASSIGNED_* bits of a key of an instance dict (0: not watched)."""
    cdef size_t slot = name_slot(name)
    while _name_table_keys[slot] is not NULL:
        if _name_table_keys[slot] == name:
            return _name_table_kinds[slot]
        slot = (slot + 1) & (NAME_TABLE_SIZE - 1)
    if not PyUnicode_CheckExact(<object>name):
        # A str subclass or another object, put in the dict directly: whether
        # an attribute lookup finds it is up to its own __hash__/__eq__,
        # Python code the watcher may not run. Cannot tell: any name.
        return ASSIGNED_ANY
    if fc_str_interned(name):
        return 0   # an interned name equal to a watched one is that one
    # An exact str (hashed and compared in C): by value.
    return _watched_kinds.get(<object>name, 0)


cdef int on_instance_dict_event(fc_dict_event event, PyObject *d, PyObject *key,
                                PyObject *new_value) noexcept:
    """The dict watcher. Called before the change; runs no Python code: it
    only records (DispatcherBase.record_dirty)."""
    cdef int kind
    if event == FC_DICT_DEALLOCATED:
        address = _dict_owners.pop(<Py_ssize_t>d, None)
        if address is not None:
            (<DispatcherBase><PyObject *><Py_ssize_t>address)._interest_proven = False
        return 0
    if _any_proven:
        # A kept readable()/writable() answer may read any name.
        address = _dict_owners.get(<Py_ssize_t>d)
        if address is not None:
            (<DispatcherBase><PyObject *><Py_ssize_t>address)._interest_proven = False
    if event == FC_DICT_ADDED or event == FC_DICT_MODIFIED or event == FC_DICT_DELETED:
        kind = name_kind(key)
        if not kind:
            return 0
    else:
        kind = ASSIGNED_ANY
    address = _dict_owners.get(<Py_ssize_t>d)
    if address is None:
        return 0
    # The address of a live dispatcher: its entry goes when it or the dict
    # is deallocated (__dealloc__, FC_DICT_DEALLOCATED).
    owner = <DispatcherBase><PyObject *><Py_ssize_t>address
    if event == FC_DICT_ADDED or event == FC_DICT_MODIFIED:
        owner.note_assigned(kind)
    else:
        owner.note_removed(kind)
    return 0


cdef int watch_instance_dict(DispatcherBase disp, object own) except -1:
    fc_dict_watch(_dict_watcher, own)
    _dict_owners[<Py_ssize_t><PyObject *>own] = <Py_ssize_t><PyObject *>disp
    disp._watched_dict = <Py_ssize_t><PyObject *>own
    return 0


cdef int forget_instance_dict(DispatcherBase disp) noexcept:
    if _dict_owners.get(disp._watched_dict) == <Py_ssize_t><PyObject *>disp:
        del _dict_owners[disp._watched_dict]
    disp._watched_dict = 0
    return 0


cdef int check_instance_dict(DispatcherBase disp) except -1:
    """A dict given to the instance as a whole (obj.__dict__ = d) is watched
    from its registration on, and looked through once."""
    own = PyObject_GenericGetDict(disp, NULL)
    if <Py_ssize_t><PyObject *>own != disp._watched_dict:
        forget_instance_dict(disp)
        watch_instance_dict(disp, own)
        disp.note_removed(ASSIGNED_ANY)
    return 0


@cython.binding(False)
@cython.auto_pickle(False)   # copied and pickled as 3.11's: __getstate__
cdef class HookedDispatcherBase(DispatcherBase):
    """DispatcherBase with a tp_setattro that reports the assignments: the
    facade's base where there are no dict watchers (before CPython 3.12)."""

    def __setattr__(self, name, value):
        cdef bint plain = store_keeping_versions(self, name, value)
        self._interest_proven = False
        cdef int kind = name_kind(<PyObject *>name)
        if kind:
            self.note_assigned(kind)
            announce_recorded()
            if plain and kind >> CACHED_SHIFT:
                keep_stored(self, kind, value)

    def __delattr__(self, name):
        generic_delattr(self, name, NULL)
        self._interest_proven = False
        cdef int kind = name_kind(<PyObject *>name)
        if kind:
            self.note_removed(kind)
            announce_recorded()


if FC_DICT_WATCHERS:
    try:
        _dict_watcher = fc_dict_add_watcher(on_instance_dict_event)
    except RuntimeError:   # all of the interpreter's watcher slots are taken
        _dict_watcher = -1

DISPATCHER_BASE = DispatcherBase if _dict_watcher >= 0 else HookedDispatcherBase
