/* Dict watchers (CPython 3.12+): how the core hears of assignments to a
 * dispatcher's instance dict without a tp_setattro of its own, which would
 * keep the interpreter from specialising STORE_ATTR on the facade's classes.
 * Before 3.12, FC_DICT_WATCHERS is 0: the stand-ins below fail cleanly and the
 * core uses its AssignmentHook class instead (assignments.pxi). */
#ifndef FC_DICT_WATCH_H
#define FC_DICT_WATCH_H

#include <Python.h>

#if PY_VERSION_HEX >= 0x030C0000 && !defined(PYPY_VERSION) && !defined(Py_GIL_DISABLED)
#define FC_DICT_WATCHERS 1

typedef PyDict_WatchEvent fc_dict_event;
#define FC_DICT_ADDED PyDict_EVENT_ADDED
#define FC_DICT_MODIFIED PyDict_EVENT_MODIFIED
#define FC_DICT_DELETED PyDict_EVENT_DELETED
#define FC_DICT_CLONED PyDict_EVENT_CLONED
#define FC_DICT_CLEARED PyDict_EVENT_CLEARED
#define FC_DICT_DEALLOCATED PyDict_EVENT_DEALLOCATED
#define fc_dict_add_watcher PyDict_AddWatcher
#define fc_dict_watch PyDict_Watch
#define fc_str_interned(o) PyUnicode_CHECK_INTERNED(o)

#else
#define FC_DICT_WATCHERS 0

typedef enum {
    FC_DICT_ADDED, FC_DICT_MODIFIED, FC_DICT_DELETED,
    FC_DICT_CLONED, FC_DICT_CLEARED, FC_DICT_DEALLOCATED
} fc_dict_event;

static inline int
fc_dict_add_watcher(int (*callback)(fc_dict_event, PyObject *, PyObject *, PyObject *))
{
    (void)callback;
    PyErr_SetString(PyExc_RuntimeError, "dict watchers need CPython 3.12");
    return -1;
}

static inline int
fc_dict_watch(int watcher_id, PyObject *dict)
{
    (void)watcher_id;
    (void)dict;
    PyErr_SetString(PyExc_RuntimeError, "dict watchers need CPython 3.12");
    return -1;
}

#define fc_str_interned(o) 0
#endif

#endif
