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

/* ---- the maps' change counts ---------------------------------------------
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

#endif
