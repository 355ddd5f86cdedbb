# One poller class per backend behind one interface (pyftpdlib's shape):
#   set_mask(fd, old_mask, new_mask)   the kernel hears only of changes
#   wait(timeout_ms) -> count          results in self.events[0:count]
# Masks and results use the poll(2) bits FC_IN, FC_PRI, FC_OUT (+ FC_ERR,
# FC_HUP, FC_NVAL in results), whatever the backend.

cdef enum:
    MAX_EVENTS = 256


cdef inline int raise_errno(int err) except -1:
    raise OSError(err, os.strerror(err))


@cython.binding(False)
cdef class Poller:
    cdef readonly str name
    cdef fc_event *events      # results of the last wait
    cdef int events_cap

    def __cinit__(self):
        self.events = <fc_event *>PyMem_Malloc(MAX_EVENTS * sizeof(fc_event))
        if self.events == NULL:
            raise MemoryError()
        self.events_cap = MAX_EVENTS

    def __dealloc__(self):
        PyMem_Free(self.events)

    cdef int set_mask(self, int fd, int old_mask, int new_mask) except -1:
        raise NotImplementedError

    cdef int _wait(self, int timeout_ms) noexcept nogil:
        return 0

    cdef int close(self) except -1:
        return 0

    cdef int fileno(self):
        """An fd that is readable while events wait (epoll, kqueue), else -1."""
        return -1

    cdef int wait(self, int timeout_ms) except -1:
        """Wait for events; EINTR is retried with the time left, after the
        signal handlers ran (a KeyboardInterrupt propagates)."""
        cdef int n, err
        cdef double deadline = 0.0
        if timeout_ms != 0:
            # A signal that came while the core ran C code after the last
            # handler has set no EINTR for this wait: its Python handler
            # (the CLI's SIGTERM one, say) runs now, not after the timeout.
            PyErr_CheckSignals()
        if timeout_ms > 0:
            deadline = fc_monotonic() + timeout_ms / 1000.0
        while True:
            with nogil:
                n = self._wait(timeout_ms)
                err = errno
            if n >= 0:
                return n
            if err != EINTR:
                return self.wait_failed(err)
            PyErr_CheckSignals()
            if timeout_ms > 0:
                timeout_ms = <int>((deadline - fc_monotonic()) * 1000.0 + 0.999)
                if timeout_ms < 0:
                    timeout_ms = 0

    cdef int wait_failed(self, int err) except -1:
        return raise_errno(err)


@cython.binding(False)
cdef class EpollPoller(Poller):
    cdef int epfd

    def __cinit__(self):
        self.epfd = -1

    def __init__(self):
        self.name = "epoll"
        self.epfd = fc_epoll_create()
        if self.epfd < 0:
            raise_errno(errno)

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)

    cdef int set_mask(self, int fd, int old_mask, int new_mask) except -1:
        cdef int rc
        if new_mask == 0:
            # epoll reports HUP/ERR even for an empty mask: no interest means
            # no registration. ENOENT: gone already; EBADF: closed while
            # registered (reported as 1: a dup may keep the registration).
            if old_mask != 0 and fc_epoll_ctl(self.epfd, FC_EPOLL_DEL, fd, 0) < 0:
                if errno == EBADF:
                    return 1
            return 0
        if old_mask == 0:
            rc = fc_epoll_ctl(self.epfd, FC_EPOLL_ADD, fd, new_mask)
            if rc < 0 and errno == EEXIST:
                rc = fc_epoll_ctl(self.epfd, FC_EPOLL_MOD, fd, new_mask)
        else:
            rc = fc_epoll_ctl(self.epfd, FC_EPOLL_MOD, fd, new_mask)
            if rc < 0 and errno == ENOENT:
                rc = fc_epoll_ctl(self.epfd, FC_EPOLL_ADD, fd, new_mask)
        if rc < 0:
            raise_errno(errno)
        return 0

    cdef int _wait(self, int timeout_ms) noexcept nogil:
        return fc_epoll_wait(self.epfd, self.events, MAX_EVENTS, timeout_ms)

    cdef int fileno(self):
        return self.epfd

    cdef int close(self) except -1:
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
        return 0


@cython.binding(False)
cdef class KqueuePoller(Poller):
    cdef int kq

    def __cinit__(self):
        self.kq = -1

    def __init__(self):
        self.name = "kqueue"
        self.kq = fc_kqueue_create()
        if self.kq < 0:
            raise_errno(errno)

    def __dealloc__(self):
        if self.kq >= 0:
            close(self.kq)

    cdef int set_mask(self, int fd, int old_mask, int new_mask) except -1:
        if fc_kqueue_set(self.kq, fd, old_mask, new_mask) < 0:
            if new_mask == 0 and (errno == ENOENT or errno == EBADF):
                return 0
            raise_errno(errno)
        return 0

    cdef int _wait(self, int timeout_ms) noexcept nogil:
        cdef int n = fc_kqueue_wait(self.kq, self.events, MAX_EVENTS, timeout_ms)
        cdef int i, j, count = 0
        # The read and write filters of one fd come as two kevents: merge.
        for i in range(n):
            for j in range(count):
                if self.events[j].fd == self.events[i].fd:
                    self.events[j].flags |= self.events[i].flags
                    break
            else:
                self.events[count] = self.events[i]
                count += 1
        return count if n >= 0 else n

    cdef int fileno(self):
        return self.kq

    cdef int close(self) except -1:
        if self.kq >= 0:
            close(self.kq)
            self.kq = -1
        return 0


@cython.binding(False)
cdef class ArrayPoller(Poller):
    """Keeps (fd, mask) pairs in C arrays for the poll and select backends."""
    cdef int *fds
    cdef int *masks
    cdef pollfd *pfds
    cdef int count
    cdef int capacity
    cdef dict position   # fd -> index in the arrays

    def __cinit__(self):
        self.position = {}

    def __dealloc__(self):
        PyMem_Free(self.fds)
        PyMem_Free(self.masks)
        PyMem_Free(self.pfds)

    cdef int grow(self) except -1:
        cdef fc_event *events
        cdef int cap = self.capacity * 2 if self.capacity else 64
        cdef int *fds = <int *>PyMem_Realloc(self.fds, cap * sizeof(int))
        if fds == NULL:
            raise MemoryError()
        self.fds = fds
        cdef int *masks = <int *>PyMem_Realloc(self.masks, cap * sizeof(int))
        if masks == NULL:
            raise MemoryError()
        self.masks = masks
        cdef pollfd *pfds = <pollfd *>PyMem_Realloc(self.pfds, cap * sizeof(pollfd))
        if pfds == NULL:
            raise MemoryError()
        self.pfds = pfds
        # Every registered fd may be ready at once: results need as much room.
        if cap > self.events_cap:
            events = <fc_event *>PyMem_Realloc(self.events, cap * sizeof(fc_event))
            if events == NULL:
                raise MemoryError()
            self.events = events
            self.events_cap = cap
        self.capacity = cap
        return 0

    cdef int set_mask(self, int fd, int old_mask, int new_mask) except -1:
        cdef object where = self.position.get(fd)
        cdef int i, last
        if new_mask == 0:
            if where is not None:
                i = where
                last = self.count - 1
                if i != last:
                    self.fds[i] = self.fds[last]
                    self.masks[i] = self.masks[last]
                    self.pfds[i] = self.pfds[last]
                    self.position[self.fds[i]] = i
                del self.position[fd]
                self.count = last
            return 0
        if where is None:
            if self.count == self.capacity:
                self.grow()
            i = self.count
            self.count += 1
            self.position[fd] = i
        else:
            i = where
        self.fds[i] = fd
        self.masks[i] = new_mask
        self.pfds[i].fd = fd
        self.pfds[i].events = <short>new_mask
        self.pfds[i].revents = 0
        return 0


@cython.binding(False)
cdef class PollPoller(ArrayPoller):
    def __init__(self):
        self.name = "poll"

    cdef int _wait(self, int timeout_ms) noexcept nogil:
        return fc_poll_wait(self.pfds, self.count, self.events, timeout_ms)


@cython.binding(False)
cdef class SelectPoller(ArrayPoller):
    def __init__(self):
        self.name = "select"

    cdef int set_mask(self, int fd, int old_mask, int new_mask) except -1:
        if new_mask and fd >= fc_fd_setsize():
            raise ValueError(
                "fd %d is out of range for the select backend (FD_SETSIZE is %d); "
                "use backend='auto'" % (fd, fc_fd_setsize()))
        return ArrayPoller.set_mask(self, fd, old_mask, new_mask)

    cdef int _wait(self, int timeout_ms) noexcept nogil:
        return fc_select_wait(self.fds, self.masks, self.count, self.events, timeout_ms)

    cdef int wait_failed(self, int err) except -1:
        # select() fails as a whole for one closed fd: report those fds as
        # invalid (as poll() would) instead of failing the loop.
        cdef int i, n = 0
        if err != EBADF:
            return raise_errno(err)
        for i in range(self.count):
            if fcntl(self.fds[i], F_GETFD) < 0:
                self.events[n].fd = self.fds[i]
                self.events[n].flags = FC_NVAL
                n += 1
        if n == 0:
            return raise_errno(err)
        return n


cdef Poller new_poller(str name):
    if name == "epoll":
        return EpollPoller()
    if name == "kqueue":
        return KqueuePoller()
    if name == "poll":
        return PollPoller()
    return SelectPoller()


cdef tuple probe_backends():
    cdef list names = []
    if FC_HAVE_EPOLL:
        names.append("epoll")
    if FC_HAVE_KQUEUE:
        names.append("kqueue")
    names.append("poll")
    names.append("select")
    return tuple(names)


cdef tuple _available_backends = probe_backends()


def available_backends():
    """The backends this build can use here, best first."""
    return _available_backends


def default_backend():
    return _available_backends[0]
