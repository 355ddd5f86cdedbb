# The attributes the core reads for every message (socket, terminator, the
# buffer sizes, max_line_length, collect_incoming_data, found_terminator),
# kept per dispatcher between reads where nothing can change them unseen.
#
# A value is kept only where a dict watcher reports every change to the
# instance dict (CPython 3.12+, assignments.pxi) and it comes from:
#   - the instance dict: a watched assignment or deletion forgets it;
#   - the class, as a plain value or a Python function (kept unbound and
#     called with the instance): a change to the class or a base gives the
#     class a new version tag, which forgets every kept value.
# Anything else (a property or other descriptor, a __getattr__ result, a
# class with its own __getattribute__, an instance without a watched dict,
# or a class without a version tag) is read with attr() every time, as
# before. Each read costs a bit test and a version compare instead of the
# interpreter's lookup; a method call also makes no bound method.

cdef enum:
    CACHED_SOCKET = 0
    CACHED_TERMINATOR = 1
    CACHED_IN_SIZE = 2
    CACHED_OUT_SIZE = 3
    CACHED_MAX_LINE = 4
    CACHED_COLLECT = 5
    CACHED_FOUND = 6
    CACHED_SLOTS = 7
    CACHED_METHODS = (1 << CACHED_COLLECT) | (1 << CACHED_FOUND)

# Interned: attribute names are, and the watcher compares them by address.
cdef tuple _cached_names = tuple(sys.intern(name) for name in (
    "socket", "terminator", "ac_in_buffer_size", "ac_out_buffer_size", "max_line_length",
    "collect_incoming_data", "found_terminator"))


cdef extern from "Python.h":
    PyObject *_PyType_Lookup(PyTypeObject *type, object name)   # borrowed, no error set
    bint PyFunction_Check(PyObject *o)


cdef inline bint kept(DispatcherBase disp, int slot) noexcept:
    """The slot's value is kept and still good."""
    return disp._cache_bits & (1 << slot) and \
        disp._cache_version == fc_type_version(type(disp))


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
    if not disp._watched_dict:
        return value   # no dict watcher (before 3.12): nothing is kept
    cdef unsigned int version = fc_type_version(type(disp))
    if version == 0 or not disp.class_paths() & FAST_GENERIC_LOOKUP:
        return value
    own = PyObject_GenericGetDict(disp, NULL)
    if <Py_ssize_t><PyObject *>own != disp._watched_dict:
        return value   # a __dict__ replaced since registration: not watched yet
    cdef PyObject *descr = _PyType_Lookup(Py_TYPE(disp), name)
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
    if disp._cache_version != version:
        disp._cache_bits = 0
        disp._cache_version = version
    if disp._cache is None:
        disp._cache = [None] * CACHED_SLOTS
    disp._cache[slot] = kept
    disp._cache_bits |= 1 << slot
    if unbound:
        disp._cache_unbound |= 1 << slot
    else:
        disp._cache_unbound &= ~(1 << slot)
    return value
