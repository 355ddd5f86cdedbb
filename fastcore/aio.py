"""Dispatchers and coroutines in one thread: a map's dispatchers on a running
asyncio loop (uvloop included).

``attach(map)`` hands the map's poller fd (epoll or kqueue: readable whenever
one of the map's sockets is ready) to the asyncio loop's ``add_reader``. When
it is ready, or the next fastcore timer is due, the bridge runs one
non-blocking fastcore iteration (``poll(0)``: the same dispatch, timers and
handed-over callbacks as ``loop()``), then brings the kernel's registrations
up to date before asyncio sleeps again. Changes made from coroutines
(``push()``, new dispatchers, ``call_later``) reach the bridge through the
core's change hook, which schedules that update with ``call_soon``.
Dispatchers whose own ``readable()``/``writable()`` must be asked every
iteration are asked again every ``poll_interval`` seconds as well.
"""

import asyncio

from fastcore._common import ExitNow
from fastcore._impl import core

__all__ = ["Bridge", "attach", "spawn"]

_bridges = []  # attached, in attach order


def _changed():
    for bridge in list(_bridges):  # a bridge whose loop closed leaves the list
        bridge._schedule_update()


def _forget_closed_loops():
    for bridge in list(_bridges):
        if bridge.loop.is_closed():
            bridge._stop(None)


class Bridge:
    """A map attached to an asyncio loop; ``detach()`` ends it, and so does
    the loop's closing (seen at the next change to the map, or ``attach``)."""

    def __init__(self, map, loop, use_poll, poll_interval, backend):
        self.map = map
        self.loop = loop
        self.use_poll = use_poll
        self.poll_interval = poll_interval
        self._backend = backend
        self._fd = None
        self._update_handle = None
        self._timer_handle = None
        self._timer_when = None
        self._poll_handle = None
        self._empty = loop.create_future()
        self._attached = True
        self._watch(core.bridge_fd(map, backend))
        _bridges.append(self)
        core.set_change_hook(_changed)
        self._update()

    @property
    def attached(self):
        if self._attached and self.loop.is_closed():
            self._stop(None)
        return self._attached

    def detach(self):
        """Stop running the map on the asyncio loop (its dispatchers stay open)."""
        self._stop(None)

    def _stop(self, exc):
        if not self._attached:
            return
        self._attached = False
        _bridges.remove(self)
        if not _bridges:
            core.set_change_hook(None)
        for handle in (self._update_handle, self._timer_handle, self._poll_handle):
            if handle is not None:
                handle.cancel()
        self._update_handle = self._timer_handle = self._poll_handle = None
        if self.loop.is_closed():
            return  # its reader went with it, and no one can wait any more
        self.loop.remove_reader(self._fd)
        if not self._empty.done():
            if exc is None:
                self._empty.set_result(None)
            else:
                self._empty.set_exception(exc)

    async def wait_empty(self):
        """Wait until the map is empty (every dispatcher closed) or the bridge
        is detached. An ExitNow raised by a handler or timer detaches the
        bridge and is raised here."""
        await asyncio.shield(self._empty)

    def _watch(self, fd):
        if fd != self._fd:
            if self._fd is not None:
                self.loop.remove_reader(self._fd)
            self._fd = fd
            self.loop.add_reader(fd, self._run_once)

    def _run_once(self):
        if not self._attached:
            return
        core.set_change_hook(None)  # the update below covers what handlers change
        try:
            if self.use_poll:
                core.poll2(0.0, self.map)
            else:
                core.poll(0.0, self.map)
        except ExitNow as exc:
            self._stop(exc)
            return
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: asyncio ends too
            self._stop(exc)
            raise
        finally:
            if _bridges:
                core.set_change_hook(_changed)
        self._update()

    def _schedule_update(self):
        if self.loop.is_closed():
            # asyncio.run() returned, say: the bridge ends with its loop.
            self._stop(None)
        elif self._attached and self._update_handle is None:
            self._update_handle = self.loop.call_soon(self._update)

    def _update(self):
        self._update_handle = None
        if not self._attached:
            return
        core.set_change_hook(None)
        try:
            always_ready = core.flush(self.map, self.use_poll)
        finally:
            core.set_change_hook(_changed)
        # A rebuilt poller (fork, stale registration) has a new fd.
        self._watch(core.bridge_fd(self.map, self._backend))
        if always_ready:
            self._schedule_run(0.0)
        else:
            delay = core.next_timer_delay()
            if delay is None:
                self._cancel_timer()
            else:
                self._schedule_run(delay)
        if self.poll_interval is not None and self._poll_handle is None and self.map:
            self._poll_handle = self.loop.call_later(self.poll_interval, self._periodic)
        if not self.map and not self._empty.done():
            self._empty.set_result(None)

    def _periodic(self):
        self._poll_handle = None
        self._update()

    def _schedule_run(self, delay):
        when = self.loop.time() + delay
        if self._timer_handle is not None:
            if abs(self._timer_when - when) < 0.001:
                return
            self._timer_handle.cancel()
        self._timer_when = when
        self._timer_handle = self.loop.call_at(when, self._timer_due)

    def _cancel_timer(self):
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None

    def _timer_due(self):
        self._timer_handle = None
        self._run_once()


def attach(map=None, loop=None, *, use_poll=False, poll_interval=0.1, backend="auto"):
    """Run the dispatchers of ``map`` (default: asyncore.socket_map) on an
    asyncio loop (default: the running one) until ``detach()``.

    ``use_poll`` picks poll()-style dispatch as in ``loop()``;
    ``poll_interval`` is how often dispatchers with their own
    readable()/writable() are asked again without an event (None: only
    after events). Only one process-wide scheduler exists: fastcore's timers
    run on the loop that runs them, so attach a map to one asyncio loop and
    do not run ``asyncore.loop()`` at the same time.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "fastcore.aio.attach() needs a running asyncio loop, or loop= one"
            ) from None
    if map is None:
        from fastcore import asyncore

        map = asyncore.socket_map
    if poll_interval is not None and not poll_interval > 0:
        raise ValueError("poll_interval must be None or more than 0 seconds")
    _forget_closed_loops()
    for bridge in _bridges:
        if bridge.map is map:
            raise RuntimeError("this map is attached already")
    return Bridge(map, loop, use_poll, poll_interval, backend)


def spawn(coro, callback=None):
    """Start a coroutine on the running asyncio loop from a handler (or any
    code on that loop); ``callback(task)`` runs on the loop when it ends:
    ``task.result()`` gives its value or raises its exception. Returns the
    task."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if hasattr(coro, "close"):
            coro.close()
        raise RuntimeError(
            "fastcore.aio.spawn() needs a running asyncio loop: attach() the map to one"
        ) from None
    if callback is not None and not callable(callback):
        coro.close()
        raise TypeError("callback must be callable, not %r" % (callback,))
    task = loop.create_task(coro)
    if callback is not None:
        task.add_done_callback(callback)
    return task
