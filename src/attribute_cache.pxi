# The attributes the core reads for every message (socket, terminator, the
# buffer sizes, collect_incoming_data, found_terminator, and the state its
# interest follows: connected, accepting, out_buffer, producer_fifo),
# kept per dispatcher between reads where no change can go unseen.
#
# A value is kept when it comes from:
#   - the instance dict. On CPython 3.12+ the dict watcher (assignments.pxi)
#     forgets it when its name is assigned or deleted or the dict is cleared
#     or filled at once. Without a watcher (before 3.12) the dict's version
#     tag (PEP 509) tells that something in the dict changed, and one lookup
#     of the name tells whether it was this;
#   - the class, as a plain value or a Python function (kept unbound and
#     called with the instance): any change to the class or a base gives the
#     class a new version tag, which forgets every kept value.
# A dict given to the instance as a whole forgets them all. Anything else (a
# property or other descriptor, a __getattr__ result, a class with its own
# __getattribute__, a class without a version tag) is read with attr() every
# time. A kept read costs a few compares instead of the interpreter's lookup,
# and a method call makes no bound method.

# Interned: attribute names are, and the watcher compares them by address.
cdef tuple _cached_names = tuple(sys.intern(name) for name in (
    "socket", "terminator", "ac_in_buffer_size", "ac_out_buffer_size",
    "collect_incoming_data", "found_terminator", "connected", "accepting", "out_buffer",
    "producer_fifo"))


cdef extern from "cpython_internals.h":
    PyObject *fc_type_lookup(PyTypeObject *type, object name)   # borrowed, no error set
    PyObject **fc_instance_dict_ptr(object o)   # where the instance dict is, or NULL


cdef extern from "Python.h":
    PyObject *PyDict_GetItemWithError(object d, object key) except? NULL   # borrowed
    bint PyFunction_Check(PyObject *o)


cdef inline bint kept(DispatcherBase disp, int slot) except -1:
    """The slot's value is kept and still good."""
    cdef uint64_t version
    if not disp._cache_bits & (1 << slot) or \
            disp._cache_version != fc_type_version(type(disp)):
        return False
    cdef PyObject **where = fc_instance_dict_ptr(disp)
    if where is NULL or <Py_ssize_t>where[0] != disp._cache_dict:
        return False
    if disp._watched_dict:
        return True
    version = fc_dict_version(<object>where[0])
    # No version (FC_NO_VERSION) cannot tell: the lookup below says.
    return (version != FC_NO_VERSION and disp._cache_dict_versions[slot] == version) or \
        still_kept(disp, slot, where[0])


cdef bint still_kept(DispatcherBase disp, int slot, PyObject *own) except -1:
    """Without a watcher: the instance dict changed since the slot's value was
    kept. It still holds if the dict has the same object under the name, or
    none for a value of the class. (The lookup may run a key's __eq__, a key
    put in the dict directly: its exception propagates.)"""
    cdef PyObject *found = PyDict_GetItemWithError(<object>own,
                                                   <object>PyTuple_GET_ITEM(_cached_names, slot))
    cdef PyObject *expected = NULL   # a value of the class: the name is not in the dict
    if disp._cache_in_dict & (1 << slot):
        expected = PyList_GET_ITEM(disp._cache, slot)
    if found == expected:
        disp._cache_dict_versions[slot] = fc_dict_version(<object>own)
        return True
    disp._cache_bits &= ~(1 << slot)
    return False


cdef int store_keeping_versions(DispatcherBase disp, object name, object value) except -1:
    """PyObject_GenericSetAttr(disp, name, value) for HookedDispatcherBase;
    1 if it was one plain instance dict store, else 0.

    When the store is one plain instance dict store (no data descriptor on the
    class, the old value held until after it so that no finaliser runs in
    between), nothing else changed the dict: the kept slots that were good
    before it stay good, with its new version. Without this, a handler that
    assigns some other attribute per message (self.parts = []) would send
    every kept read of that message through still_kept()'s lookup."""
    cdef PyObject **where
    cdef PyObject *descr
    cdef uint64_t before, after
    cdef int slot
    if not disp._cache_bits or not PyUnicode_CheckExact(name):
        PyObject_GenericSetAttr(disp, name, value)
        return 0
    descr = fc_type_lookup(Py_TYPE(disp), name)
    where = fc_instance_dict_ptr(disp)
    if (descr is not NULL and Py_TYPE(<object>descr).tp_descr_set is not NULL) or \
            where is NULL or where[0] is NULL:
        PyObject_GenericSetAttr(disp, name, value)
        return 0
    own = <object>where[0]
    cdef PyObject *old = PyDict_GetItem(own, name)
    replaced = <object>old if old is not NULL else None   # released after the versions
    before = fc_dict_version(own)
    PyObject_GenericSetAttr(disp, name, value)
    after = fc_dict_version(own)
    for slot in range(CACHED_SLOTS):
        if disp._cache_dict_versions[slot] == before:
            disp._cache_dict_versions[slot] = after
    return 1


cdef int keep_stored(DispatcherBase disp, int kind, object value) except -1:
    """After HookedDispatcherBase.__setattr__ stored a kept name as one plain
    instance dict store (store_keeping_versions() said so): the value stored
    is kept, so the next read is no lookup (out_buffer is stored twice per
    send)."""
    cdef int slot = 0
    while slot < CACHED_SLOTS and not (kind >> CACHED_SHIFT) & (1 << slot):
        slot += 1
    cdef unsigned int version = fc_type_version(type(disp))
    if slot == CACHED_SLOTS or disp._cache is None or version == 0 \
            or version != disp._cache_version or not disp.class_paths() & FAST_GENERIC_LOOKUP:
        return 0
    cdef PyObject **where = fc_instance_dict_ptr(disp)
    if where is NULL or where[0] is NULL or <Py_ssize_t>where[0] != disp._cache_dict:
        return 0
    own = <object>where[0]
    if PyDict_GetItem(own, <object>PyTuple_GET_ITEM(_cached_names, slot)) != <PyObject *>value:
        return 0   # the old value's finaliser stored another since
    disp._cache[slot] = value
    cdef unsigned int bit = 1 << slot
    disp._cache_bits |= bit
    disp._cache_unbound &= ~bit
    disp._cache_in_dict |= bit
    disp._cache_dict_versions[slot] = fc_dict_version(own)
    return 0


cdef inline object kept_value(DispatcherBase disp, int slot):
    return <object>PyList_GET_ITEM(disp._cache, slot)


cdef inline object cached_attr(DispatcherBase disp, int slot):
    """getattr(disp, <slot's name>)."""
    if kept(disp, slot):
        return kept_value(disp, slot)
    return fill_cache(disp, slot)


cdef inline object call_cached(DispatcherBase disp, int slot):
    """getattr(disp, <slot's name>)()."""
    if kept(disp, slot):
        if disp._cache_unbound & (1 << slot):
            return kept_value(disp, slot)(disp)
        return kept_value(disp, slot)()
    return fill_cache(disp, slot)()


cdef object fill_cache(DispatcherBase disp, int slot):
    """Read the attribute with attr(); keep it if nothing can change it unseen."""
    cdef str name = <str><object>PyTuple_GET_ITEM(_cached_names, slot)
    value = disp.attr(name)
    cdef unsigned int version = fc_type_version(type(disp))
    if version == 0 or not disp.class_paths() & FAST_GENERIC_LOOKUP:
        return value
    cdef PyObject **where = fc_instance_dict_ptr(disp)
    if where is NULL or where[0] is NULL:
        return value
    own = <object>where[0]
    if disp._watched_dict and <Py_ssize_t><PyObject *>own != disp._watched_dict:
        return value   # a __dict__ replaced since registration: not watched yet
    cdef PyObject *descr = fc_type_lookup(Py_TYPE(disp), name)
    cdef PyObject *found
    cdef bint unbound = False
    if descr is not NULL and Py_TYPE(<object>descr).tp_descr_set is not NULL:
        return value   # a data descriptor (a property, say): its getter runs every time
    found = PyDict_GetItem(own, name)
    if found is not NULL:
        kept = <object>found
    elif descr is NULL:
        return value   # from __getattr__
    elif Py_TYPE(<object>descr).tp_descr_get is NULL:
        kept = <object>descr
    elif PyFunction_Check(descr) and (1 << slot) & CACHED_METHODS:
        kept = <object>descr
        unbound = True
    else:
        return value
    if not unbound and kept is not value:
        return value   # not what the lookup gave: leave it to attr()
    if disp._cache_version != version or disp._cache_dict != <Py_ssize_t><PyObject *>own:
        disp._cache_bits = 0
        disp._cache_version = version
        disp._cache_dict = <Py_ssize_t><PyObject *>own
    if disp._cache is None:
        disp._cache = [None] * CACHED_SLOTS
    disp._cache[slot] = kept
    cdef unsigned int bit = 1 << slot
    disp._cache_bits |= bit
    disp._cache_unbound = disp._cache_unbound | bit if unbound else disp._cache_unbound & ~bit
    disp._cache_in_dict = disp._cache_in_dict | bit if found is not NULL \
        else disp._cache_in_dict & ~bit
    disp._cache_dict_versions[slot] = fc_dict_version(own)
    return value
