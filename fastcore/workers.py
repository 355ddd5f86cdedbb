"""Many cores: pre-forked worker processes, each with its own loop.

    from fastcore import asynchat, serve_forever
    from fastcore.workers import Listener

    class Echo(asynchat.async_chat): ...

    class Server(Listener):
        def handle_accepted(self, sock, addr):
            Echo(sock)

    serve_forever(Server, ("0.0.0.0", 8007), workers=4)

``serve_forever(make_server, address, workers)`` makes the listening socket,
forks ``workers`` processes and supervises them; each worker calls
``make_server(sock)`` with a listening, non-blocking ``socket.socket``, then
runs ``fastcore.asyncore.loop()``. It returns when the server is stopped.

The design, for a server author:

- The parent holds no dispatcher, no map entry and no poller: everything a
  connection needs is made in the worker, after the fork (``make_server``,
  ``on_worker_start``). The loop's map must be empty when ``serve_forever``
  is called (``RuntimeError`` otherwise); a map the parent used earlier is
  fine: the core gives a forked child its own epoll/kqueue instance. No
  fastcore timer may be pending either (each worker would run a copy).
- With SO_REUSEPORT (Linux; FreeBSD's SO_REUSEPORT_LB on Python 3.12+)
  every worker binds its own listening socket to the same address and the
  kernel spreads incoming connections over them. The parent binds one more
  socket there but never listens on it: it surfaces bind errors at the call
  and reserves the port (port 0 is resolved once, for every worker).
  Connections waiting in the accept queue of a worker that dies are reset
  (Linux 5.14+ can migrate them: sysctl net.ipv4.tcp_migrate_req=1).
- Elsewhere (macOS and the other BSDs, where SO_REUSEPORT does not balance),
  with ``reuse_port=False``, with ``workers=1``, or when ``address`` is a
  listening socket (e.g. from systemd), the parent binds and listens once
  and every worker inherits that socket: the kernel queues connections while
  workers restart, and every idle worker is woken for each (the accept that
  loses gets EAGAIN, which asyncore's ``accept()`` ignores).
- A worker stops on SIGTERM or SIGINT: the signal wakes its loop through a
  socket (``signal.set_wakeup_fd``), the loop ends between two handlers
  (never inside one), ``close_all()`` closes its dispatchers and the process
  exits 0 without running the parent's ``atexit`` handlers. It also stops
  when the parent disappears, even by SIGKILL (it watches a socket whose
  other end only the parent holds). Other signal handlers the program set
  are inherited as they are.
- The parent restarts a worker that exits unexpectedly, keeping its index.
  A worker whose ``make_server`` or ``on_worker_start`` raises, when none
  has served yet, makes ``serve_forever`` stop the others and raise
  ``WorkerError`` with that exception (a bug there fails fast). Any other
  unexpected exit is restarted at once, then with a growing delay (0.1 s
  doubling, at most 5 s) while they keep coming; more than ``max_restarts``
  within ``restart_window`` seconds stops everything with ``WorkerError``.
- The parent flushes stdout and stderr before each fork (a worker would
  write the parent's buffered output again) and a worker leaves with
  ``os._exit()``: never back into the caller's code.
- On SIGTERM or SIGINT the parent sends SIGTERM to every worker, waits up to
  ``stop_timeout`` seconds for them (a second signal cuts the wait short),
  SIGKILLs those left, reaps them all, restores its signal handlers and
  returns. No worker outlives ``serve_forever``.
- ``workers=0`` serves in the calling process: no fork, no supervision,
  exceptions propagate; SIGTERM/SIGINT stop it and it returns. For
  debuggers and profilers.

``serve_forever`` must be called from the main thread (signals), before
the program starts threads (a forked child has only the forking thread).
Events are logged on the ``fastcore.workers`` logger. Going past one
machine is the job of an L4 load balancer in front of several hosts each
running ``serve_forever`` (README.md, "Many cores").
"""

import collections
import errno
import inspect
import logging
import os
import select
import signal
import socket
import sys
import threading
import time

from fastcore import asyncore
from fastcore._impl import core as _core

__all__ = ["Listener", "WorkerError", "reuse_port_balances", "serve_forever", "usable_cpus"]

log = logging.getLogger("fastcore.workers")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# An unexpected exit is restarted after min(_FIRST_DELAY * 2 ** (k - 2),
# _MAX_DELAY) seconds, k being the exits within restart_window (the first: at once).
_FIRST_DELAY = 0.1
_MAX_DELAY = 5.0
_NOT_SERVING = "worker %d (pid %d) failed before it was serving (it %s)%s"


class WorkerError(RuntimeError):
    """The workers could not be kept running: ``serve_forever`` gave up."""


class Listener(asyncore.dispatcher):
    """A dispatcher over a socket that is already listening.

    ``asyncore.dispatcher(sock)`` takes the socket for a connection: it sets
    ``connected`` from ``getpeername()`` (False here) and leaves
    ``accepting`` False, so the loop would call ``handle_read()`` (which
    logs "unhandled read event") instead of ``handle_accept()``. The right
    way by hand is ``self.set_socket(sock); self.accepting = True``, which
    this class does. Subclass it and define ``handle_accepted(sock, addr)``.
    """

    def __init__(self, sock, map=None):
        asyncore.dispatcher.__init__(self, map=map)
        sock.setblocking(False)
        self.set_socket(sock)
        self.accepting = True
        self.addr = sock.getsockname()


def usable_cpus():
    """The CPUs this process may run on (its affinity mask, a container's
    cpuset), not all the machine's: the default number of workers."""
    if hasattr(os, "process_cpu_count"):  # 3.13
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def reuse_port_balances():
    """True when this platform spreads connections over sockets bound with
    SO_REUSEPORT (SO_REUSEPORT_LB) to one address: what ``reuse_port=None``
    chooses for two workers or more."""
    return _balancing_option() is not None


def _balancing_option():
    if hasattr(socket, "SO_REUSEPORT_LB"):  # FreeBSD 12+, Python 3.12+
        return socket.SO_REUSEPORT_LB
    if sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT"):
        return socket.SO_REUSEPORT
    return None


def serve_forever(
    make_server,
    address,
    workers=None,
    *,
    backlog=1024,
    reuse_port=None,
    loop_kwargs=None,
    on_worker_start=None,
    stop_timeout=10.0,
    max_restarts=10,
    restart_window=60.0,
):
    """Serve ``address`` with ``workers`` processes (by default one per CPU
    this process may run on; 0: in this process) until SIGTERM or SIGINT; then return None.

    ``make_server(sock)`` is called in each worker with the listening socket
    and makes its dispatcher(s) (``Listener`` subclasses, typically) in the
    map the loop runs: ``loop_kwargs["map"]``, else ``asyncore.socket_map``.
    ``address`` is ``(host, port)`` (host ``''``: every IPv4 interface) or a
    socket already listening, which the workers inherit (the caller keeps
    ownership). ``reuse_port``: None chooses SO_REUSEPORT where the kernel
    balances it and workers >= 2; True requires it; False inherits one socket.
    ``loop_kwargs`` go to ``fastcore.asyncore.loop()`` (not ``count``).
    ``on_worker_start(index)`` runs in the worker after ``make_server``,
    just before its loop; ``index`` (0 to workers - 1) is kept by a
    restarted worker. Raises ``WorkerError`` when workers keep failing
    (see the module's docstring), ``OSError`` when the address cannot be bound.
    """
    workers, loop_kwargs = _check_arguments(
        make_server,
        workers,
        loop_kwargs,
        on_worker_start,
        backlog,
        stop_timeout,
        max_restarts,
        restart_window,
    )

    given_socket = isinstance(address, socket.socket)
    if given_socket:
        _check_listening(address)
        if reuse_port:
            raise ValueError("reuse_port=True needs an address to bind, not a socket")
    else:
        address = _checked_address(address)
    option = _balancing_option()
    if reuse_port is None:
        reuse_port = option is not None and workers >= 2 and not given_socket
    elif reuse_port and option is None:
        raise ValueError(
            "reuse_port=True: this platform has no SO_REUSEPORT that balances "
            "connections between sockets; use reuse_port=False or None"
        )
    reuse_port = bool(reuse_port) and workers >= 1

    worker = _Worker(make_server, loop_kwargs, on_worker_start)
    if workers == 0:
        # A dup: close_all() closes this process's socket, the caller keeps theirs.
        sock = address.dup() if given_socket else _listening_socket(_resolve(address), backlog)
        try:
            worker.serve_here(sock)
        finally:
            sock.close()
        return None
    if reuse_port:
        reservation = _bound_socket(_resolve(address), option)
        endpoint = None
    else:
        reservation = None
        endpoint = address if given_socket else _listening_socket(_resolve(address), backlog)
    try:
        _Supervisor(
            worker,
            workers,
            endpoint,
            reservation,
            option,
            backlog,
            stop_timeout,
            max_restarts,
            restart_window,
        ).run()
    finally:
        if reservation is not None:
            reservation.close()
        if endpoint is not None and not given_socket:
            endpoint.close()
    return None


# -- checks and sockets ------------------------------------------------------


def _check_arguments(
    make_server,
    workers,
    loop_kwargs,
    on_worker_start,
    backlog,
    stop_timeout,
    max_restarts,
    restart_window,
):
    """Raise at the call for anything a worker would trip on; returns
    (workers, loop_kwargs), defaults applied."""
    if not callable(make_server):
        raise TypeError("make_server must be callable, not %r" % (make_server,))
    if on_worker_start is not None and not callable(on_worker_start):
        raise TypeError("on_worker_start must be callable or None, not %r" % (on_worker_start,))
    if workers is None:
        workers = usable_cpus()
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError("workers must be an int, not %r" % (workers,))
    if workers < 0:
        raise ValueError("workers must be >= 0, not %d" % workers)
    if workers and not hasattr(os, "fork"):
        raise RuntimeError(
            "serve_forever(workers=%d) needs os.fork(), which this platform "
            "lacks; workers=0 serves in this process" % workers
        )
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "serve_forever() must be called from the main thread (it handles SIGTERM and SIGINT)"
        )
    loop_kwargs = _checked_loop_kwargs(loop_kwargs)
    socket_map = loop_kwargs.get("map")
    if socket_map is None:
        socket_map = asyncore.socket_map
    if socket_map:
        raise RuntimeError(
            "the loop's map already holds %d dispatcher(s): every worker would "
            "share them; make dispatchers in make_server, in the worker" % len(socket_map)
        )
    if _core.next_timer_delay() is not None:
        raise RuntimeError(
            "fastcore timers or handed-over callbacks are pending: every worker "
            "would run its own copy; make them in make_server, in the worker"
        )
    if not (isinstance(backlog, int) and backlog >= 0):
        raise ValueError("backlog must be an int >= 0, not %r" % (backlog,))
    for name, value in (("stop_timeout", stop_timeout), ("restart_window", restart_window)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError("%s must be a number >= 0, not %r" % (name, value))
    if not (isinstance(max_restarts, int) and max_restarts >= 0):
        raise ValueError("max_restarts must be an int >= 0, not %r" % (max_restarts,))
    return workers, loop_kwargs


def _checked_loop_kwargs(loop_kwargs):
    loop_kwargs = dict(loop_kwargs or {})
    if "count" in loop_kwargs:
        raise ValueError(
            "loop_kwargs: 'count' would end a worker's loop; workers serve until stopped"
        )
    try:
        signature = inspect.signature(asyncore.loop)
    except (TypeError, ValueError):  # not introspectable: the worker's loop() will tell
        return loop_kwargs
    try:
        signature.bind(**loop_kwargs)
    except TypeError as e:
        raise TypeError("loop_kwargs: %s" % e) from None
    return loop_kwargs


def _checked_address(address):
    if not (
        isinstance(address, tuple)
        and len(address) in (2, 4)
        and isinstance(address[0], str)
        and isinstance(address[1], int)
    ):
        raise TypeError("address must be (host, port) or a listening socket, not %r" % (address,))
    return address


def _check_listening(sock):
    if sock.type != socket.SOCK_STREAM:
        raise ValueError("address: %r is not a SOCK_STREAM socket" % (sock,))
    if hasattr(socket, "SO_ACCEPTCONN") and not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        raise ValueError("address: %r is not listening (call listen() first)" % (sock,))


def _resolve(address):
    """(family, sockaddr) for a passive TCP socket; host '' is INADDR_ANY, as
    for socket.bind()."""
    host, port = address[0], address[1]
    if host == "":
        return socket.AF_INET, ("0.0.0.0", port)
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )[0]
    if len(address) == 4 and family == socket.AF_INET6:
        sockaddr = sockaddr[:2] + tuple(address[2:])
    return family, sockaddr


def _bound_socket(resolved, reuse_option):
    family, sockaddr = resolved
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_option is not None:
            sock.setsockopt(socket.SOL_SOCKET, reuse_option, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _listening_socket(resolved, backlog, reuse_option=None):
    sock = _bound_socket(resolved, reuse_option)
    try:
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _exit_description(status):
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return "was killed by %s" % signal.Signals(number).name
        except ValueError:
            return "was killed by signal %d" % number
    return "exited with code %d" % os.WEXITSTATUS(status)


# -- the worker --------------------------------------------------------------


class _Stop(asyncore.ExitNow):
    """Ends a worker's loop: ExitNow goes through the loop's handler calls."""


class _StopWatcher(asyncore.dispatcher_with_send):
    """Ends the loop when its socket turns readable: a signal's wakeup byte,
    or EOF on the lifeline once the parent is gone. (dispatcher_with_send:
    no write interest while its buffer is empty, no per-iteration cost.)"""

    def handle_read(self):
        raise _Stop

    def handle_close(self):
        raise _Stop


class _StopSignals:
    """SIGTERM and SIGINT wake the loop through a socket instead of raising
    in whatever code runs; ``restore()`` puts the previous handlers back.

    The wakeup fd is written at once, even when the signal lands just before
    the loop's wait; the handler writes too, in case code in the worker
    (asyncio, say) takes the process's one wakeup fd for itself."""

    def __init__(self):
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.previous = {number: signal.signal(number, self.handler) for number in _STOP_SIGNALS}
        self.previous_wakeup = signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)

    def handler(self, number, frame):
        try:
            self.wake_w.send(b"\0")
        except OSError:  # full (a wakeup is pending anyway) or closed (stopping)
            pass

    def restore(self):
        signal.set_wakeup_fd(self.previous_wakeup)
        _restore_handlers(self.previous)
        self.wake_r.close()
        self.wake_w.close()


def _ignore_signal(number, frame):
    # The wakeup fd carries the signal; a Python handler is what makes it written.
    pass


def _restore_handlers(previous):
    for number, handler in previous.items():
        # None: a handler not set from Python, which cannot be put back; the default is.
        signal.signal(number, signal.SIG_DFL if handler is None else handler)


class _Worker:
    """What runs in each worker (or in the caller, with workers=0)."""

    def __init__(self, make_server, loop_kwargs, on_worker_start):
        self.make_server = make_server
        self.loop_kwargs = loop_kwargs
        self.on_worker_start = on_worker_start

    def serve_here(self, sock):
        stop_signals = _StopSignals()
        try:
            self.serve(0, sock, stop_signals, lifeline=None, report=None)
        finally:
            stop_signals.restore()

    def serve(self, index, sock, stop_signals, lifeline, report):
        """Make the servers, report ready, loop until stopped; close_all() at the end."""
        socket_map = self.loop_kwargs.get("map")
        if socket_map is None:
            socket_map = asyncore.socket_map
        watchers = [_StopWatcher(stop_signals.wake_r, socket_map)]
        if lifeline is not None:
            watchers.append(_StopWatcher(lifeline, socket_map))
        try:
            self.make_server(sock)
            if all(any(obj is w for w in watchers) for obj in socket_map.values()):
                raise RuntimeError(
                    "make_server(sock) made no dispatcher in the map the loop "
                    "runs (loop_kwargs['map'], else asyncore.socket_map)"
                )
            if self.on_worker_start is not None:
                self.on_worker_start(index)
            if report is not None:
                report("ready")
            asyncore.loop(**self.loop_kwargs)
        except _Stop:
            pass
        finally:
            asyncore.close_all(socket_map, ignore_all=True)


# -- the parent --------------------------------------------------------------


class _Child:
    __slots__ = ("index", "pid", "serving", "error")

    def __init__(self, index, pid):
        self.index = index
        self.pid = pid
        self.serving = False
        self.error = None


class _Supervisor:
    """Forks the workers, restarts those that exit, stops them all at the end."""

    def __init__(
        self,
        worker,
        workers,
        endpoint,
        reservation,
        reuse_option,
        backlog,
        stop_timeout,
        max_restarts,
        restart_window,
    ):
        self.worker = worker
        self.workers = workers
        self.endpoint = endpoint  # the inherited listening socket, or None
        self.reservation = reservation  # reuse_port: bound, never listening
        if reservation is not None:  # what each worker binds (port 0 resolved)
            self.resolved = (reservation.family, reservation.getsockname())
        self.reuse_option = reuse_option
        self.backlog = backlog
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.children = {}  # pid -> _Child
        self.due = {}  # index -> monotonic time of its restart
        self.exits = collections.deque()  # monotonic times of unexpected exits
        self.any_served = False
        self.stop_signal = None
        self.stop_requests = 0

    def run(self):
        self.wake_r, self.wake_w = socket.socketpair()
        self.status_r, self.status_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        # The workers watch lifeline_r: it reads EOF once this process (the
        # only holder of lifeline_w) is gone, however it went.
        self.lifeline_r, self.lifeline_w = socket.socketpair()
        own = (
            self.wake_r,
            self.wake_w,
            self.status_r,
            self.status_w,
            self.lifeline_r,
            self.lifeline_w,
        )
        for sock in own:
            sock.setblocking(False)
        self.signals = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        self.previous = {number: signal.signal(number, _ignore_signal) for number in self.signals}
        self.previous_wakeup = signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        self.poller = select.poll()
        self.poller.register(self.wake_r, select.POLLIN)
        self.poller.register(self.status_r, select.POLLIN)
        try:
            where = self.reservation or self.endpoint
            log.info(
                "%d workers on %s (%s)",
                self.workers,
                where.getsockname(),
                "SO_REUSEPORT" if self.reservation is not None else "inherited socket",
            )
            for index in range(self.workers):
                self.spawn(index)
            self.supervise()
        finally:
            try:
                self.stop_all()
            finally:
                signal.set_wakeup_fd(self.previous_wakeup)
                _restore_handlers(self.previous)
                for sock in own:
                    sock.close()

    # -- forking -------------------------------------------------------------

    def spawn(self, index):
        _flush_std_streams()  # else every worker would write the parent's buffered output
        # Blocked across fork, the signals reach the child only once it has
        # its own handlers, never the parent's (which would wake the parent).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        try:
            pid = os.fork()
            if pid == 0:
                self.child_main(index, mask)  # never returns
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.children[pid] = _Child(index, pid)

    def child_main(self, index, mask):
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            _restore_handlers({signal.SIGCHLD: self.previous[signal.SIGCHLD]})
            for sock in (self.wake_r, self.wake_w, self.status_r, self.lifeline_w):
                sock.close()
            # Datagrams queue only so deep (net.unix.max_dgram_qlen): with many
            # workers starting at once, wait for the parent to read rather than lose one.
            self.status_w.settimeout(5.0)
            stop_signals = _StopSignals()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            code = self.child_serve(index, stop_signals)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:
            self.report(index, "error %s: %s" % (type(e).__name__, e))
            log.error("worker %d (pid %d) failed", index, os.getpid(), exc_info=True)
        finally:
            _flush_std_streams()
            os._exit(code)

    def child_serve(self, index, stop_signals):
        if self.reservation is not None:
            self.reservation.close()
            sock = _listening_socket(self.resolved, self.backlog, self.reuse_option)
        else:
            sock = self.endpoint
        self.worker.serve(
            index, sock, stop_signals, self.lifeline_r, lambda what: self.report(index, what)
        )
        return 0

    def report(self, index, what):
        try:
            self.status_w.send(("%d %d %s" % (index, os.getpid(), what)).encode()[:4096])
        except OSError:  # the parent is gone or not listening: nothing to tell
            pass

    # -- supervising ---------------------------------------------------------

    def supervise(self):
        while True:
            self.wait(self.next_due())
            if self.stop_signal is not None:
                log.info(
                    "%s: stopping %d workers",
                    signal.Signals(self.stop_signal).name,
                    len(self.children),
                )
                return
            for child, status in self.reap():
                self.exited(child, status)
            now = time.monotonic()
            for index, when in list(self.due.items()):
                if when <= now:
                    del self.due[index]
                    self.spawn(index)

    def next_due(self):
        if not self.due:
            return None
        return max(0.0, min(self.due.values()) - time.monotonic())

    def wait(self, timeout):
        """Wait for a signal or a status message; read both."""
        self.poller.poll(None if timeout is None else max(1, int(timeout * 1000 + 0.5)))
        while True:
            try:
                data = self.wake_r.recv(512)
            except (BlockingIOError, InterruptedError):
                break
            for number in data:
                if number in _STOP_SIGNALS:
                    self.stop_signal = number
                    self.stop_requests += 1
        while True:
            try:
                message = self.status_r.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            index, pid, what = message.decode(errors="replace").split(" ", 2)
            child = self.children.get(int(pid))
            if child is None:
                continue
            if what == "ready":
                child.serving = True
                self.any_served = True
            elif what.startswith("error "):
                child.error = what[len("error ") :]

    def reap(self):
        for pid, child in list(self.children.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: status unknown
                done, status = pid, None
            if done:
                del self.children[pid]
                yield child, status

    def exited(self, child, status):
        how = "exited" if status is None else _exit_description(status)
        because = ": %s" % child.error if child.error else ""
        if child.error and not child.serving and not self.any_served:
            raise WorkerError(_NOT_SERVING % (child.index, child.pid, how, because))
        now = time.monotonic()
        self.exits.append(now)
        while self.exits[0] < now - self.restart_window:
            self.exits.popleft()
        recent = len(self.exits)
        if recent > self.max_restarts:
            raise WorkerError(
                "%d unexpected worker exits within %g s (the last: worker %d "
                "(pid %d) %s%s); giving up"
                % (recent, self.restart_window, child.index, child.pid, how, because)
            )
        delay = 0.0 if recent == 1 else min(_FIRST_DELAY * 2 ** (recent - 2), _MAX_DELAY)
        log.warning(
            "worker %d (pid %d) %s%s; restarting it%s",
            child.index,
            child.pid,
            how,
            because,
            " in %.1f s" % delay if delay else "",
        )
        self.due[child.index] = now + delay

    # -- stopping ------------------------------------------------------------

    def stop_all(self):
        self.due.clear()
        if not self.children:
            return
        for pid in self.children:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        requests = self.stop_requests
        while self.children:
            left = deadline - time.monotonic()
            if left <= 0 or self.stop_requests > requests:
                break
            self.wait(left)
            for _ in self.reap():
                pass
        if self.children:
            log.warning(
                "killing %d workers still running (%s)",
                len(self.children),
                "second signal"
                if self.stop_requests > requests
                else "stop_timeout=%g s" % self.stop_timeout,
            )
            for pid in self.children:
                _kill(pid, signal.SIGKILL)
            for pid in list(self.children):
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                del self.children[pid]


def _flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # None, broken or closed: nothing to do
            pass


def _kill(pid, number):
    try:
        os.kill(pid, number)
    except OSError as e:  # only an unreaped child gets here: it exists, at worst a zombie
        if e.errno != errno.ESRCH:
            raise
