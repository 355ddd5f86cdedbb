"""Signals end the loop's wait at once: the core's waker as the wakeup fd.

A Python signal handler runs only when the main thread runs Python code, and
a wait in epoll_wait/poll is cut short only by a signal the kernel delivers to
that thread. Two cases left the handler waiting for the loop's timeout
(30 s by default):

- the signal came after the loop's last check for pending signals but before
  the wait began: the wait sees no EINTR;
- the kernel delivered it to another thread (any thread not blocking it may
  get a process-directed signal): the main thread's wait goes on.

With the write end of the core's waker pipe as ``signal.set_wakeup_fd``, the
signal's C handler writes a byte there whichever thread it runs on, and the
wait ends; the core then runs the handler before it waits again.

The fd is lent only inside a loop()/poll()/poll2() call on the main thread,
from the first wait that may block until the outermost such call returns,
and only when the process has no wakeup fd of its own (asyncio's
add_signal_handler and ``fastcore.workers`` set one they watch: it stays).
A loop that never blocks never touches it (lending and giving back cost
about 1.3 µs). A forked child gives up the parent's at once: its bytes would
wake the parent.

Both cores use this module; its state is the process's.
"""

import os
import signal
import threading

_OUTSIDE = 0  # no loop call on the main thread: nothing is lent
_UNPROBED = 1  # in a call, no wait has blocked yet
_LENT = 2  # the waker is the wakeup fd until the outermost call returns
_KEPT = 3  # the process has its own wakeup fd: left alone

_state = _OUTSIDE
_lent_fd = -1
_main_ident = threading.main_thread().ident


def enter():
    """At the start of a loop()/poll()/poll2() call. True for the outermost
    call on the main thread, which must then call ``leave()`` when it ends."""
    global _state
    if _state != _OUTSIDE or threading.get_ident() != _main_ident:
        return False
    _state = _UNPROBED
    return True


def before_blocking_wait(waker_write_fd):
    """Before a wait that may block. ``waker_write_fd()`` gives the write end
    of the core's waker (made on first use). True while the question is still
    open (asked on another thread): the extension asks again only then."""
    global _state, _lent_fd
    if _state != _UNPROBED:
        return False
    if threading.get_ident() != _main_ident:
        return True
    write_fd = waker_write_fd()
    try:
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        # Not the main interpreter, or an fd this platform refuses
        # (Windows takes only sockets): the loop waits as before.
        _state = _KEPT
        return False
    if previous in (-1, write_fd):
        _state = _LENT
        _lent_fd = write_fd
    else:
        signal.set_wakeup_fd(previous, warn_on_full_buffer=False)
        _state = _KEPT
    return False


def leave():
    """The outermost call returns: give the wakeup fd back."""
    global _state, _lent_fd
    if _state == _LENT:
        _give_back()
    _state = _OUTSIDE
    _lent_fd = -1


def _give_back():
    previous = signal.set_wakeup_fd(-1)
    if previous != _lent_fd:
        # Replaced while the loop ran (a handler called asyncio's
        # add_signal_handler, say): the new owner keeps it.
        signal.set_wakeup_fd(previous)


def _after_fork_in_child():
    global _state, _lent_fd, _main_ident
    forked_by_main = threading.main_thread().ident == _main_ident
    _main_ident = threading.main_thread().ident
    if _state == _LENT:
        _give_back()
    if _state != _OUTSIDE:
        # Forked inside a loop call: the child makes a waker of its own, which
        # the pure core's next blocking wait lends (the extension's, from its
        # next loop call). Forked by another thread: no loop call runs.
        _state = _UNPROBED if forked_by_main else _OUTSIDE
    _lent_fd = -1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
