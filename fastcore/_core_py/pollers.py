"""One poller class per backend, all with the same small interface.

Masks given to ``register``/``modify`` and flags returned by ``poll`` are the
poll(2) bits of ``fastcore._common`` (POLLIN, POLLPRI, POLLOUT, plus POLLERR,
POLLHUP and POLLNVAL in results), whatever the backend speaks. Timeouts are in
seconds (0 or more), None blocks. EINTR needs no handling here:
Python retries select/poll/epoll/kqueue itself (PEP 475).
"""

import os
import select
from errno import EBADF, ENOENT

from fastcore._common import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI

FD_SETSIZE = 1024
_READ = POLLIN | POLLPRI


def available_backends():
    """The backends this platform offers, best first."""
    names = [name for name in ("epoll", "kqueue", "poll") if hasattr(select, name)]
    names.append("select")
    return tuple(names)


def default_backend():
    return available_backends()[0]


def _refuse_own_fd(poller, fd):
    # The registered file was closed and its number reused for this poller.
    if fd == poller.fileno():
        raise OSError(
            EBADF, "fd %d is the poller's own: the file registered under it is closed" % fd
        )


def make_poller(backend):
    if backend not in available_backends():
        raise ValueError(
            "backend %r is not available here; available: %s"
            % (backend, ", ".join(available_backends()))
        )
    return _POLLERS[backend]()


class EpollPoller:
    """select.epoll, level-triggered. epoll's EPOLLIN/PRI/OUT/ERR/HUP bits are
    poll's own, so masks and results need no translation.

    epoll refuses regular files (EPERM) although poll() and select() call them
    always ready; such fds are kept aside and reported ready on every poll.
    """

    def __init__(self):
        self._epoll = select.epoll()
        self._registered = set()
        self._always_ready = {}  # fd -> mask

    def fileno(self):
        return self._epoll.fileno()

    def register(self, fd, mask):
        _refuse_own_fd(self, fd)
        try:
            self._epoll.register(fd, mask)
        except PermissionError:
            self._always_ready[fd] = mask
        else:
            self._registered.add(fd)

    def modify(self, fd, mask):
        if fd in self._always_ready:
            self._always_ready[fd] = mask
        else:
            self._epoll.modify(fd, mask)

    def unregister(self, fd):
        if self._always_ready.pop(fd, None) is not None:
            return
        self._registered.discard(fd)
        try:
            self._epoll.unregister(fd)
        except OSError as err:
            if err.errno not in (ENOENT, EBADF):
                raise

    def poll(self, timeout):
        always_ready = self._always_ready
        if always_ready:
            timeout = 0
        elif timeout is None:
            timeout = -1
        # Room for every registered fd: all that are ready are handled in
        # this iteration, as with select() and poll().
        events = self._epoll.poll(timeout, max(len(self._registered), 1))
        if always_ready:
            events.extend(
                (fd, mask & (POLLIN | POLLOUT))
                for fd, mask in always_ready.items()
                if mask & (POLLIN | POLLOUT)
            )
        return events

    def close(self):
        self._epoll.close()
        self._registered.clear()
        self._always_ready.clear()


class KqueuePoller:
    """select.kqueue: one read and/or one write filter per fd."""

    def __init__(self):
        self._kqueue = select.kqueue()
        self._masks = {}  # fd -> mask as registered

    def fileno(self):
        return self._kqueue.fileno()

    def _change(self, fd, kq_filter, kq_flags):
        self._kqueue.control([select.kevent(fd, kq_filter, kq_flags)], 0, 0)

    def _delete(self, fd, kq_filter):
        try:
            self._change(fd, kq_filter, select.KQ_EV_DELETE)
        except OSError as err:
            if err.errno not in (ENOENT, EBADF):
                raise

    def _update(self, fd, old, mask):
        for bits, kq_filter in ((_READ, select.KQ_FILTER_READ), (POLLOUT, select.KQ_FILTER_WRITE)):
            if mask & bits and not old & bits:
                self._change(fd, kq_filter, select.KQ_EV_ADD)
            elif old & bits and not mask & bits:
                self._delete(fd, kq_filter)
        self._masks[fd] = mask

    def register(self, fd, mask):
        _refuse_own_fd(self, fd)
        self._update(fd, 0, mask)

    def modify(self, fd, mask):
        self._update(fd, self._masks.get(fd, 0), mask)

    def unregister(self, fd):
        old = self._masks.pop(fd, 0)
        if old & _READ:
            self._delete(fd, select.KQ_FILTER_READ)
        if old & POLLOUT:
            self._delete(fd, select.KQ_FILTER_WRITE)

    def poll(self, timeout):
        kevents = self._kqueue.control(None, max(2 * len(self._masks), 1), timeout)
        flags_by_fd = {}
        for kevent in kevents:
            flags = POLLIN if kevent.filter == select.KQ_FILTER_READ else POLLOUT
            if kevent.flags & select.KQ_EV_EOF:
                flags |= POLLHUP
                if kevent.fflags:  # the socket's pending error
                    flags |= POLLERR
            flags_by_fd[kevent.ident] = flags_by_fd.get(kevent.ident, 0) | flags
        return list(flags_by_fd.items())

    def close(self):
        self._kqueue.close()
        self._masks.clear()


class PollPoller:
    """select.poll."""

    def __init__(self):
        self._poll = select.poll()

    def register(self, fd, mask):
        self._poll.register(fd, mask)

    def modify(self, fd, mask):
        self._poll.modify(fd, mask)

    def unregister(self, fd):
        try:
            self._poll.unregister(fd)
        except KeyError:
            pass

    def poll(self, timeout):
        return self._poll.poll(None if timeout is None else timeout * 1000.0)

    def close(self):
        self._poll = None  # nothing to release in the kernel


class SelectPoller:
    """select.select over the registered masks (fds below FD_SETSIZE only)."""

    def __init__(self):
        self._masks = {}  # fd -> mask

    def register(self, fd, mask):
        if fd >= FD_SETSIZE:
            others = [name for name in available_backends() if name != "select"]
            raise ValueError(
                "fd %d is out of range for the select backend (FD_SETSIZE is %d); "
                "use another backend (%s)" % (fd, FD_SETSIZE, ", ".join(others) or "none here")
            )
        self._masks[fd] = mask

    def modify(self, fd, mask):
        self._masks[fd] = mask

    def unregister(self, fd):
        self._masks.pop(fd, None)

    def poll(self, timeout):
        masks = self._masks
        readers = [fd for fd, mask in masks.items() if mask & POLLIN]
        writers = [fd for fd, mask in masks.items() if mask & POLLOUT]
        exceptional = [fd for fd, mask in masks.items() if mask & POLLPRI]
        try:
            readers, writers, exceptional = select.select(readers, writers, exceptional, timeout)
        except OSError as err:
            if err.errno != EBADF:
                raise
            # One closed fd fails the whole select(): report the closed ones
            # as invalid, as poll() would.
            closed = [(fd, POLLNVAL) for fd in masks if not _is_open(fd)]
            if not closed:
                raise
            return closed
        flags_by_fd = dict.fromkeys(readers, POLLIN)
        for fd in writers:
            flags_by_fd[fd] = flags_by_fd.get(fd, 0) | POLLOUT
        for fd in exceptional:
            flags_by_fd[fd] = flags_by_fd.get(fd, 0) | POLLPRI
        return list(flags_by_fd.items())

    def close(self):
        self._masks.clear()


def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError as err:
        return err.errno != EBADF
    return True


_POLLERS = {
    "epoll": EpollPoller,
    "kqueue": KqueuePoller,
    "poll": PollPoller,
    "select": SelectPoller,
}
