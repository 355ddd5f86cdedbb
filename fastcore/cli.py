"""``python -m fastcore``: example servers and facts about this installation.

    python -m fastcore echo --port P [--host H] [--workers N] [--debug] [--metrics-port M]
    python -m fastcore chat --port P [--host H] [--workers N] [--debug] [--metrics-port M]
    python -m fastcore info

The servers print ``<name> listening on HOST:PORT`` once they listen (port 0
picks a free one) and stop cleanly on SIGINT or SIGTERM. With ``--workers N``
N pre-forked worker processes share the listening socket
(fastcore.serve_forever); each has its own chat room, and with
``--metrics-port M`` worker i serves its own metrics on port M + i (printed
as ``metrics<i> listening on HOST:PORT``; M = 0 picks free ports).
"""

import argparse
import os
import platform
import signal
import sys
import sysconfig

import fastcore
from fastcore._common import BACKENDS


def serve(command, host, port, metrics_port=None, debug=False, backend="auto", workers=None):
    """Run the ``command`` ('echo' or 'chat') server until SIGINT/SIGTERM."""
    import fastcore.debug
    from fastcore import asyncore

    if debug:
        fastcore.debug.enable()
    from fastcore import servers

    map = {}
    if command == "echo":
        make_handler = servers.EchoHandler
    else:
        room = set()

        def make_handler(sock, map):
            return servers.ChatMember(sock, map, room)

    if workers is not None:
        return _serve_workers(
            command, host, port, make_handler, metrics_port, debug, backend, workers
        )
    server = servers.Server(host, port, make_handler, map)
    print("%s listening on %s:%d" % ((command,) + server.address[:2]), flush=True)
    if metrics_port is not None:
        from fastcore import metrics

        scraper = metrics.serve(host, metrics_port, map=map)
        print("metrics listening on %s:%d" % scraper.address[:2], flush=True)
    _startup_line(debug, backend)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        asyncore.loop(timeout=1.0, map=map, backend=backend)
    except KeyboardInterrupt:
        pass
    finally:
        asyncore.close_all(map, ignore_all=True)
    return 0


def _serve_workers(command, host, port, make_handler, metrics_port, debug, backend, workers):
    from fastcore import servers
    from fastcore.workers import Listener, serve_forever

    class Accepting(Listener):
        def handle_accepted(self, sock, addr):
            make_handler(sock, self._map)

    def with_metrics(index):
        from fastcore import metrics

        scraper = metrics.serve(host, metrics_port + index if metrics_port else 0)
        # One write: the workers share stdout, and it may be unbuffered.
        sys.stdout.write("metrics%d listening on %s:%d\n" % ((index,) + scraper.address[:2]))
        sys.stdout.flush()

    # Bound here, inherited by the workers: the address is known before they start.
    listening = servers.listening_socket(host, port)
    print("%s listening on %s:%d" % ((command,) + listening.getsockname()[:2]), flush=True)
    _startup_line(debug, backend, workers)
    try:
        serve_forever(
            Accepting,
            listening,
            workers,
            loop_kwargs={"timeout": 1.0, "backend": backend},
            on_worker_start=with_metrics if metrics_port is not None else None,
        )
    finally:
        listening.close()
    return 0


def _startup_line(debug, backend, workers=None):
    import fastcore.debug

    print(
        "fastcore %s (%s, %s backend)%s%s"
        % (
            fastcore.__version__,
            "extension" if fastcore.EXTENSION else "pure Python",
            fastcore.default_backend() if backend == "auto" else backend,
            ", %d workers" % workers if workers is not None else "",
            ", debug mode on" if debug or fastcore.debug.enabled() else "",
        ),
        file=sys.stderr,
        flush=True,
    )


def _exit_on_signal(signum, frame):
    raise SystemExit(0)


def info():
    """What ``python -m fastcore info`` prints, as (label, value) pairs."""
    from fastcore import debug

    rows = [
        ("fastcore", fastcore.__version__),
        ("implementation", "extension" if fastcore.EXTENSION else "pure Python"),
        ("core module", fastcore._impl.core.__name__),
        ("default backend", fastcore.default_backend()),
        ("available backends", ", ".join(fastcore.available_backends())),
        ("python", "%s %s" % (platform.python_implementation(), platform.python_version())),
        ("platform", platform.platform()),
        ("debug mode", "on" if debug.enabled() else "off"),
    ]
    rows.extend(_fast_path_rows())
    try:
        import resource
    except ImportError:  # not on Windows
        rows.append(("RLIMIT_NOFILE", "unknown (no resource module)"))
    else:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        rows.append(("RLIMIT_NOFILE", "soft %s, hard %s" % (_limit(soft), _limit(hard))))
    somaxconn = "/proc/sys/net/core/somaxconn"
    if os.path.exists(somaxconn):
        with open(somaxconn) as f:
            rows.append(("somaxconn", f.read().strip()))
    return rows


def _fast_path_rows():
    """("fast path: NAME", "on: how" or "off: why") of the extension's fast paths
    that rest on CPython internals; one row when the pure-Python core runs."""
    if fastcore.EXTENSION:
        return [("fast path: " + name, state) for name, state in fastcore._impl.core._fast_paths()]
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        why = "free-threaded CPython (Py_GIL_DISABLED): the extension is not built there"
    elif platform.python_implementation() != "CPython":
        why = "%s: the extension is CPython's" % platform.python_implementation()
    elif os.environ.get("FASTCORE_NO_EXTENSIONS", "") not in ("", "0"):
        why = "FASTCORE_NO_EXTENSIONS is set"
    else:
        why = "the extension is not installed or does not import"
    return [("fast paths", "off: the pure-Python core runs (%s)" % why)]


def _limit(value):
    import resource

    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _parser():
    parser = argparse.ArgumentParser(prog="python -m fastcore", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.required = True
    for name, text in (
        ("echo", "an echo server: every byte back to its sender"),
        ("chat", "a chat server: each line to every other client"),
    ):
        server = commands.add_parser(name, help=text, description=text)
        server.add_argument("--port", type=int, required=True, help="0 picks a free port")
        server.add_argument("--host", default="127.0.0.1")
        server.add_argument(
            "--workers", type=int, help="pre-fork this many worker processes (0: serve here)"
        )
        server.add_argument("--debug", action="store_true", help="debug mode (fastcore.debug)")
        server.add_argument(
            "--metrics-port", type=int, help="serve Prometheus metrics on this port too"
        )
        server.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS)
    commands.add_parser("info", help="version, implementation, backend, platform limits")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command == "info":
        for label, value in info():
            print("%s: %s" % (label, value))
        return 0
    try:
        return serve(
            args.command,
            args.host,
            args.port,
            args.metrics_port,
            args.debug,
            args.backend,
            args.workers,
        )
    except OSError as err:
        print("python -m fastcore %s: %s" % (args.command, err), file=sys.stderr)
        return 1
