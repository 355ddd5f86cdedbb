# cython: language_level=3
"""fastcore's core, compiled: pollers, registries, dispatch, and the hot
halves of dispatcher, dispatcher_with_send and async_chat.

One compilation unit (as uvloop's loop.pyx): the parts below are included.
fastcore/_core_py/ is the pure-Python twin of the same design.
"""

cimport cython

import collections
import logging
import os
import sys
import threading
from heapq import heapify, heappop, heappush

cimport cython
from cpython.bytearray cimport (
    PyByteArray_AS_STRING, PyByteArray_FromStringAndSize, PyByteArray_GET_SIZE, PyByteArray_Resize,
)
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItem, PyDict_GetItemWithError
from cpython.list cimport PyList_GET_ITEM
from cpython.long cimport PyLong_AsUnsignedLongLongMask
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.exc cimport PyErr_CheckSignals, PyErr_Clear, PyErr_ExceptionMatches
from cpython.object cimport Py_SIZE, PyObject, PyObject_GenericSetAttr
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_DECREF
from cpython.unicode cimport PyUnicode_CheckExact
from libc.errno cimport EBADF, EEXIST, EINTR, EINVAL, ENOENT, ENOTCONN, EPERM
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memcpy

from system cimport (
    FASTCORE_DEBUG, FC_ERR, FC_HAVE_EPOLL, FC_HAVE_KQUEUE, FC_HUP, FC_IN, FC_NO_VERSION, FC_NVAL,
    FC_OUT, FC_PRI, FC_EPOLL_ADD, FC_EPOLL_DEL, FC_EPOLL_MOD, close, errno,
    FC_INTERNALS_NEWEST_CHECKED, FC_MAP_UNWATCHED, fc_dict_version, fc_internals_unchecked,
    fc_socket_layout_checkable, fc_map_unwatch, fc_map_version, fc_map_watch,
    fc_type_version, fc_epoll_create, fc_epoll_ctl, fc_epoll_wait, fc_event,
    fc_fd_setsize, fc_kqueue_create, fc_kqueue_set, fc_kqueue_wait, fc_monotonic,
    fc_poll_wait, fc_select_wait, fc_socket_fd, fc_socket_family, fc_socket_recv,
    fc_socket_send, fc_socket_sendv, fc_socket_timeout, pollfd,
)
from posix.fcntl cimport F_GETFD, fcntl

from errno import EWOULDBLOCK
from socket import AF_INET, SO_ERROR, SOCK_STREAM, SOL_SOCKET
from socket import socket as _socket_class

from fastcore._common import (
    _DISCONNECTED,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    POLLPRI,
    FIELD_NAMES,
    ProducerFifo,
    _reraised_exceptions,
    _strerror,
    check_backend,
    check_idle_timeout,
    check_limit_value,
    compact_traceback,
)
from fastcore import _signal_wakeup as signal_wakeup


cdef extern from "Python.h":
    # PyObject_GenericSetAttr with a NULL value deletes.
    int generic_delattr "PyObject_GenericSetAttr" (object o, object name, void *value) except -1
    int PyObject_GenericSetDict(object o, object value, void *context) except -1
    object PyObject_GenericGetDict(object o, void *context)
    # NULL with AttributeError set when the name is not found: no try block.
    PyObject *generic_getattr_or_null "PyObject_GenericGetAttr" (object o, object name)
    ctypedef struct PyTypeObject:
        Py_ssize_t tp_dictoffset
        void *tp_descr_get
        void *tp_descr_set
    PyTypeObject *Py_TYPE(object o)


cdef extern from "string.h" nogil:
    void *memmem(const void *haystack, size_t haystacklen,
                 const void *needle, size_t needlelen)


# The core's own readable()/writable() and event handlers: an object whose
# class still uses these is tracked in C instead of asked every iteration
# (assigned once the classes exist, below).
cdef object _base_readable, _base_writable, _with_send_writable
cdef object _chat_readable, _chat_writable, _chat_get_terminator
cdef object _base_handle_read_event, _base_handle_write_event
cdef object _dispatcher_send, _dispatcher_recv
cdef object _chat_handle_read, _chat_handle_write, _chat_initiate_send
cdef object _chat_push, _dispatcher_close

# Methods whose assignment to an instance the loop must hear of: readable and
# writable decide its kind, the others the core calls without a Python call.
cdef frozenset _WATCHED_METHODS = frozenset({
    "readable", "writable", "handle_read_event", "handle_write_event", "handle_read",
    "handle_write", "recv", "send", "initiate_send", "get_terminator",
    "push", "close", "refill_buffer",
})

cdef enum:
    FAST_READ_EVENT = 1
    FAST_WRITE_EVENT = 2
    FAST_HANDLE_READ = 4
    FAST_HANDLE_WRITE = 8
    FAST_RECV = 16
    FAST_SEND = 32
    FAST_INITIATE_SEND = 64
    FAST_GET_TERMINATOR = 128
    FAST_GENERIC_LOOKUP = 256   # the class keeps object's __getattribute__
    FAST_GETATTR_HOOK = 512     # the class has a __getattr__
    FAST_PUSH = 1024
    FAST_CLOSE = 2048
    FAST_CHAT_WRITABLE = 4096
    FAST_NO_REFILL = 8192       # the class has no refill_buffer (pre-3.0 async_chat's)
    # async_chat's output path is the core's: pushes may be coalesced.
    COALESCE_PATHS = (FAST_PUSH | FAST_INITIATE_SEND | FAST_SEND | FAST_CLOSE
                      | FAST_CHAT_WRITABLE | FAST_NO_REFILL)


# The slots of the values attribute_cache.pxi keeps per dispatcher.
cdef enum:
    CACHED_SOCKET = 0
    CACHED_TERMINATOR = 1
    CACHED_IN_SIZE = 2
    CACHED_OUT_SIZE = 3
    CACHED_COLLECT = 4
    CACHED_FOUND = 5
    CACHED_CONNECTED = 6
    CACHED_ACCEPTING = 7
    CACHED_OUT_BUFFER = 8
    CACHED_FIFO = 9
    CACHED_SLOTS = 10
    # The slots whose names decide a tracked dispatcher's interest.
    CACHED_INTEREST = (1 << CACHED_CONNECTED) | (1 << CACHED_ACCEPTING) | \
        (1 << CACHED_OUT_BUFFER) | (1 << CACHED_FIFO)
    CACHED_METHODS = (1 << CACHED_COLLECT) | (1 << CACHED_FOUND)


cdef tuple _fast_path_table   # (FAST_* bit, method name, the core's function, its class)


cdef object _object_getattribute = object.__getattribute__


cdef int fast_paths_of(object cls) except -1:
    """FAST_* bits of the core's methods that cls has not overridden. A bit
    needs the method's own class among cls's bases as well: C calls it on
    the instance as that C type (a method grafted onto another class is
    called as Python would call it)."""
    cdef int bits = 0
    for bit, name, builtin, owner in _fast_path_table:
        if getattr(cls, name, None) is builtin and issubclass(cls, owner):
            bits |= bit
    if getattr(cls, "__getattribute__", None) is _object_getattribute:
        bits |= FAST_GENERIC_LOOKUP
    if class_getattr_hook(cls) is not None:
        bits |= FAST_GETATTR_HOOK
    if getattr(cls, "refill_buffer", None) is None:
        bits |= FAST_NO_REFILL
    return bits


cdef object class_getattr_hook(object cls):
    """The __getattr__ the interpreter would find for cls (in the class
    dicts along its MRO, not on its metaclass), or None."""
    for klass in cls.__mro__:
        descr = klass.__dict__.get("__getattr__")
        if descr is not None:
            return descr
    return None


cdef object getattr_hook_result(object obj, str name):
    """What the interpreter does when the generic lookup of name on obj
    raised AttributeError and obj's class has a __getattr__: call it."""
    descr = class_getattr_hook(type(obj))
    bind = getattr(type(descr), "__get__", None)
    hook = bind(descr, obj, type(obj)) if bind is not None else descr
    return hook(name)


cdef inline object steal(PyObject *ref):
    """The object of a new reference, which it takes over."""
    obj = <object>ref
    Py_DECREF(obj)
    return obj


cdef int raise_pending() except -1:
    """Propagates the exception already set."""
    return -1


# Every cdef class is declared @cython.binding(False): its def methods are
# then the interpreter's method descriptors, which refuse an instance of
# another class (TypeError) wherever the method is grafted; Cython's own
# binding functions would hand any object to code that reads it as the C type.

# Forward declarations: the parts refer to each other.
cdef class Registry
cdef class DispatcherBase
cdef class WithSendBase
cdef class ChatBase
cdef class Timer
cdef class IdleTimer
cdef class TLSLayer

include "stats.pxi"
include "pollers.pxi"
include "registry.pxi"
include "interest_proof.pxi"
include "dispatcher.pxi"
include "attribute_cache.pxi"
include "assignments.pxi"
include "chat.pxi"
include "tls.pxi"
include "dispatch.pxi"
include "scheduler.pxi"

_base_readable = DispatcherBase.readable
_base_writable = DispatcherBase.writable
_with_send_writable = WithSendBase.writable
_chat_readable = ChatBase.readable
_chat_writable = ChatBase.writable
_chat_get_terminator = ChatBase.get_terminator
_base_handle_read_event = DispatcherBase.handle_read_event
_base_handle_write_event = DispatcherBase.handle_write_event
_dispatcher_send = DispatcherBase.send
_dispatcher_recv = DispatcherBase.recv
_chat_handle_read = ChatBase.handle_read
_chat_handle_write = ChatBase.handle_write
_chat_initiate_send = ChatBase.initiate_send
_chat_push = ChatBase.push
_dispatcher_close = DispatcherBase.close
_fast_path_table = (
    (FAST_READ_EVENT, "handle_read_event", _base_handle_read_event, DispatcherBase),
    (FAST_WRITE_EVENT, "handle_write_event", _base_handle_write_event, DispatcherBase),
    (FAST_HANDLE_READ, "handle_read", _chat_handle_read, ChatBase),
    (FAST_HANDLE_WRITE, "handle_write", _chat_handle_write, ChatBase),
    (FAST_RECV, "recv", _dispatcher_recv, DispatcherBase),
    (FAST_SEND, "send", _dispatcher_send, DispatcherBase),
    (FAST_INITIATE_SEND, "initiate_send", _chat_initiate_send, ChatBase),
    (FAST_GET_TERMINATOR, "get_terminator", _chat_get_terminator, ChatBase),
    (FAST_PUSH, "push", _chat_push, ChatBase),
    (FAST_CLOSE, "close", _dispatcher_close, DispatcherBase),
    (FAST_CHAT_WRITABLE, "writable", _chat_writable, ChatBase),
)


def _fast_paths():
    """For `python -m fastcore info`: (fast path, "on: how" or "off: why") of
    each fast path that rests on CPython internals (cpython_internals.h)."""
    newest = "%d.%d" % (FC_INTERNALS_NEWEST_CHECKED >> 24,
                        (FC_INTERNALS_NEWEST_CHECKED >> 16) & 0xFF)
    unchecked = "off: CPython %d.%d is newer than the newest checked (%s)" % (
        sys.version_info[0], sys.version_info[1], newest)
    probe = {}
    slot = fc_map_watch(probe)
    fc_map_unwatch(slot)
    if slot != FC_MAP_UNWATCHED:
        unchanged_map = "on: a dict watcher counts each map's changes"
    elif fc_dict_version(probe) != FC_NO_VERSION:
        unchanged_map = "on: the map's version tag (PEP 509)"
    else:
        unchanged_map = ("off: no dict watcher to be had and no version tag: the map is "
                         "compared with the registrations every iteration")
    getattr(DispatcherBase, "readable")   # gives the class a version tag if it has none
    if fc_type_version(DispatcherBase) != 0:
        interest = "on: class version tags tell that readable/writable were not replaced"
    else:
        interest = unchecked if fc_internals_unchecked() else \
            "off: no class version tags: every dispatcher is asked readable()/writable()"
    if DISPATCHER_BASE is DispatcherBase:
        stores = "on: dict watchers on the instance dicts (stores stay specialised)"
        cache = "on: dict watchers on the instance dicts"
    else:
        if FC_DICT_WATCHERS:
            stores = "off: every dict watcher slot is taken: a __setattr__ hears them"
        else:
            stores = "on: a __setattr__ hears them (no dict watchers before 3.12)"
        if fc_internals_unchecked():
            cache = unchecked
        elif fc_dict_version(probe) != FC_NO_VERSION:
            cache = "on: the instance dicts' version tags (PEP 509)"
        else:
            cache = "off: no dict watcher and no version tag: looked up on every read"
    if _socket_layout_known:
        sockets = "on: recv(2)/send(2) straight on the descriptor"
    elif fc_internals_unchecked():
        sockets = unchecked
    else:
        sockets = "off: socket.socket's layout is not the one checked: its methods are called"
    return [
        ("unchanged map skipped", unchanged_map),
        ("interest tracked in C", interest),
        ("instance attribute stores", stores),
        ("attribute cache", cache),
        ("socket I/O", sockets),
    ]
