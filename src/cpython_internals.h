/* Every access of the core to CPython's internals, in one place.
 *
 * Each is valid for the versions said beside it and checked on them (3.9 to
 * 3.15; .ci/run). Each answers "unknown" where it cannot be sure, and every
 * caller takes "unknown" to mean "changed": the slow path, which is always
 * correct. A CPython past the newest one checked (FC_INTERNALS_CHECKED is 0)
 * gets "unknown" from every private one, so it runs correctly, only slower;
 * fc_internals_unchecked() says so to `python -m fastcore info`.
 *
 *   fc_dict_version       PEP 509's ma_version_tag       3.9-3.13 (gone in 3.14)
 *   fc_type_version       a class's tp_version_tag       3.9-3.15
 *   fc_type_lookup        _PyType_Lookup                 3.9-3.15
 *   fc_instance_dict_ptr  _PyObject_GetDictPtr           3.9-3.15
 *   fc_socket_head        socket.socket's first fields   3.9-3.15, and checked
 *                         against a real socket at import (dispatcher.pxi)
 *   dict watchers         PyDict_AddWatcher/PyDict_Watch 3.12+ (public API):
 *                         dict_watch.h for the instance dicts, fc_map_* below
 *                         for the maps
 */
#ifndef FASTCORE_CPYTHON_INTERNALS_H
#define FASTCORE_CPYTHON_INTERNALS_H

#include <Python.h>
#include <stdint.h>

#include "dict_watch.h"

/* The newest CPython whose internals the core was checked against. */
#define FC_INTERNALS_NEWEST_CHECKED 0x030F0000   /* 3.15 */
#if PY_VERSION_HEX < 0x03100000
#define FC_INTERNALS_CHECKED 1
#else
#define FC_INTERNALS_CHECKED 0
#endif

static int fc_internals_unchecked(void) { return !FC_INTERNALS_CHECKED; }

/* ---- the dict version tag ---------------------------------------------- */
/* PEP 509's ma_version_tag changes on every mutation of a dict (3.6-3.13):
 * an unchanged tag means nobody touched the dict. FC_NO_VERSION: unknown
 * (not a dict, 3.14+). */
#define FC_NO_VERSION ((uint64_t)0)
static uint64_t fc_dict_version(PyObject *d)
{
#if PY_VERSION_HEX < 0x030E0000
    if (!PyDict_Check(d))
        return FC_NO_VERSION;
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    return ((PyDictObject *)d)->ma_version_tag;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#else
    (void)d;
    return FC_NO_VERSION;
#endif
}

/* ---- class version tags -------------------------------------------------- */
/* CPython gives a class a version tag for its method cache and drops it when
 * the class or one of its bases is modified: a tag still equal to the one
 * recorded means readable/writable were not replaced. 0: no valid tag, or
 * unknown. From 3.13 a tag is valid when not 0 (Py_TPFLAGS_VALID_VERSION_TAG
 * is no longer set); before, only that flag says so. */
static unsigned int fc_type_version(PyObject *cls)
{
#if FC_INTERNALS_CHECKED
    PyTypeObject *t = (PyTypeObject *)cls;
#if PY_VERSION_HEX < 0x030D0000
    if (!PyType_HasFeature(t, Py_TPFLAGS_VALID_VERSION_TAG))
        return 0;
#endif
    return t->tp_version_tag;
#else
    (void)cls;
    return 0;
#endif
}

/* ---- attribute lookup ------------------------------------------------------ */
/* name through the class's MRO, borrowed, no error set; NULL: not found, or
 * unknown. Only called once fc_type_version gave a tag, so "unknown" is never
 * taken for "not found" on a CPython not checked. */
static PyObject *fc_type_lookup(PyTypeObject *type, PyObject *name)
{
#if FC_INTERNALS_CHECKED
    return _PyType_Lookup(type, name);
#else
    (void)type;
    (void)name;
    return NULL;
#endif
}

/* Where the instance dict is (made if the object has none yet), or NULL: no
 * dict, or unknown. */
static PyObject **fc_instance_dict_ptr(PyObject *o)
{
#if FC_INTERNALS_CHECKED
    return _PyObject_GetDictPtr(o);
#else
    (void)o;
    return NULL;
#endif
}

/* ---- the layout of socket.socket ------------------------------------------ */
/* Modules/socketmodule.h: PySocketSockObject starts so from 3.8 to 3.15. */
typedef struct {
    PyObject_HEAD
    int sock_fd;            /* -1 once closed */
    int sock_family;
    int sock_type;
    int sock_proto;
    PyObject *(*errorhandler)(void);
    int64_t sock_timeout;   /* nanoseconds; 0 non-blocking, negative blocking */
} fc_socket_head;

/* 0: do not read these fields at all (the check at import is not even made). */
static int fc_socket_layout_checkable(void) { return FC_INTERNALS_CHECKED; }

static int fc_socket_fd(PyObject *sock) { return ((fc_socket_head *)sock)->sock_fd; }
static int fc_socket_family(PyObject *sock) { return ((fc_socket_head *)sock)->sock_family; }
static int64_t fc_socket_timeout(PyObject *sock) { return ((fc_socket_head *)sock)->sock_timeout; }

/* ---- the maps' change counts ----------------------------------------------
 * A registry must hear of every change made to its map behind the core's
 * back (map[fd] = obj, del map[fd], map.clear(), map.update(), ...). Before
 * 3.14 PEP 509's ma_version_tag says so; it is gone from 3.14 (deprecated from
 * 3.12), so on 3.12+ a dict watcher of its own counts each map's changes, in C:
 * the callback runs no Python code and cannot fail. A registry watches its map
 * (fc_map_watch) for as long as it lives and reads the count with
 * fc_map_version(slot); FC_MAP_UNWATCHED (no watcher slot left, no table slot
 * left, not a dict) sends it back to fc_dict_version. */
#define FC_MAX_WATCHED_MAPS 128
#define FC_MAP_UNWATCHED (-1)

#if FC_DICT_WATCHERS
static PyObject *fc_watched_maps[FC_MAX_WATCHED_MAPS];
/* Start at 1: 0 is FC_NO_VERSION, "unknown". Never reset, so that a slot
 * taken by another map cannot give a count an old registry saw. */
static uint64_t fc_map_changes[FC_MAX_WATCHED_MAPS];
static int fc_watched_map_end;   /* slots in use are below this */
static int fc_map_watcher = -1;

static int fc_on_map_event(PyDict_WatchEvent event, PyObject *d, PyObject *key,
                           PyObject *new_value)
{
    int i;
    (void)key;
    (void)new_value;
    for (i = 0; i < fc_watched_map_end; i++) {
        if (fc_watched_maps[i] == d) {
            fc_map_changes[i]++;
            if (event == PyDict_EVENT_DEALLOCATED)
                fc_watched_maps[i] = NULL;
        }
    }
    return 0;
}

/* The map's slot, or FC_MAP_UNWATCHED (no exception set either way). */
static int fc_map_watch(PyObject *map)
{
    int i, slot = -1;
    if (!PyDict_Check(map))
        return FC_MAP_UNWATCHED;
    if (fc_map_watcher < 0) {
        fc_map_watcher = PyDict_AddWatcher(fc_on_map_event);
        if (fc_map_watcher < 0) {
            PyErr_Clear();   /* every watcher slot of the interpreter is taken */
            fc_map_watcher = -2;
        }
    }
    if (fc_map_watcher < 0)
        return FC_MAP_UNWATCHED;
    for (i = 0; i < FC_MAX_WATCHED_MAPS; i++) {
        if (fc_watched_maps[i] == NULL) {
            slot = i;
            break;
        }
    }
    if (slot < 0 || PyDict_Watch(fc_map_watcher, map) < 0) {
        PyErr_Clear();
        return FC_MAP_UNWATCHED;
    }
    fc_watched_maps[slot] = map;
    if (fc_map_changes[slot] == 0)
        fc_map_changes[slot] = 1;
    else
        fc_map_changes[slot]++;
    if (slot >= fc_watched_map_end)
        fc_watched_map_end = slot + 1;
    return slot;
}

/* Stops watching the slot's map (if it is still alive); never fails. Another
 * registry of the same map has its own slot: the map stays watched until the
 * last one lets go. */
static void fc_map_unwatch(int slot)
{
    int i;
    PyObject *map;
    if (slot < 0 || slot >= FC_MAX_WATCHED_MAPS || fc_watched_maps[slot] == NULL)
        return;
    map = fc_watched_maps[slot];
    fc_watched_maps[slot] = NULL;
    for (i = 0; i < fc_watched_map_end; i++) {
        if (fc_watched_maps[i] == map)
            return;
    }
    if (PyDict_Unwatch(fc_map_watcher, map) < 0)
        PyErr_Clear();
    while (fc_watched_map_end > 0 && fc_watched_maps[fc_watched_map_end - 1] == NULL)
        fc_watched_map_end--;
}

static inline uint64_t fc_map_version(int slot) { return fc_map_changes[slot]; }

#else
static inline int fc_map_watch(PyObject *map)
{
    (void)map;
    return FC_MAP_UNWATCHED;
}
static inline void fc_map_unwatch(int slot) { (void)slot; }
static inline uint64_t fc_map_version(int slot)
{
    (void)slot;
    return 0;
}
#endif

#endif /* FASTCORE_CPYTHON_INTERNALS_H */
