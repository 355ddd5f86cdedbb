# Declarations only: what core.pyx uses from compat.h, cpython_internals.h,
# socket_io.h and libc.
from libc.stdint cimport uint64_t


cdef extern from "compat.h" nogil:
    int FASTCORE_DEBUG
    int FC_HAVE_EPOLL
    int FC_HAVE_KQUEUE
    int FC_IN, FC_PRI, FC_OUT, FC_ERR, FC_HUP, FC_NVAL

    ctypedef struct fc_event:
        int fd
        int flags

    struct pollfd:
        int fd
        short events
        short revents

    int fc_epoll_create()
    int fc_epoll_ctl(int ep, int op, int fd, int mask)
    int fc_epoll_wait(int ep, fc_event *out, int maxevents, int timeout_ms)
    int FC_EPOLL_ADD, FC_EPOLL_MOD, FC_EPOLL_DEL

    int fc_kqueue_create()
    int fc_kqueue_set(int kq, int fd, int old_mask, int new_mask)
    int fc_kqueue_wait(int kq, fc_event *out, int maxevents, int timeout_ms)

    int fc_fd_setsize()
    int fc_select_wait(const int *fds, const int *masks, int n, fc_event *out, int timeout_ms)
    int fc_poll_wait(pollfd *pfds, int n, fc_event *out, int timeout_ms)

    double fc_monotonic()
    int close(int fd)
    int errno


cdef extern from "cpython_internals.h":
    int FC_INTERNALS_NEWEST_CHECKED
    bint fc_internals_unchecked() noexcept
    uint64_t FC_NO_VERSION
    uint64_t fc_dict_version(object d) noexcept
    unsigned int fc_type_version(object cls) noexcept
    bint fc_socket_layout_checkable() noexcept
    int fc_socket_fd(object sock) noexcept
    int fc_socket_family(object sock) noexcept
    long long fc_socket_timeout(object sock) noexcept
    int FC_MAP_UNWATCHED
    int fc_map_watch(object map) noexcept
    void fc_map_unwatch(int slot) noexcept
    uint64_t fc_map_version(int slot) noexcept


cdef extern from "socket_io.h":
    object fc_socket_recv(object sock, Py_ssize_t size, int *large)
    object fc_socket_send(object sock, const char *buf, Py_ssize_t length)
    Py_ssize_t fc_socket_sendv(object sock, list items) except -1
