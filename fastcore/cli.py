"""``python -m fastcore``: example servers and facts about this installation.

    python -m fastcore echo --port P [--host H] [--debug] [--metrics-port M]
    python -m fastcore chat --port P [--host H] [--debug] [--metrics-port M]
    python -m fastcore info

The servers print ``<name> listening on HOST:PORT`` once they listen (port 0
picks a free one) and stop cleanly on SIGINT or SIGTERM.
"""

import argparse
import os
import platform
import signal
import sys

import fastcore
from fastcore._common import BACKENDS


def serve(command, host, port, metrics_port=None, debug=False, backend="auto"):
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

    server = servers.Server(host, port, make_handler, map)
    print("%s listening on %s:%d" % ((command,) + server.address[:2]), flush=True)
    if metrics_port is not None:
        from fastcore import metrics

        scraper = metrics.serve(host, metrics_port, map=map)
        print("metrics listening on %s:%d" % scraper.address[:2], flush=True)
    print(
        "fastcore %s (%s, %s backend)%s"
        % (
            fastcore.__version__,
            "extension" if fastcore.EXTENSION else "pure Python",
            fastcore.default_backend() if backend == "auto" else backend,
            ", debug mode on" if debug or fastcore.debug.enabled() else "",
        ),
        file=sys.stderr,
        flush=True,
    )
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        asyncore.loop(timeout=1.0, map=map, backend=backend)
    except KeyboardInterrupt:
        pass
    finally:
        asyncore.close_all(map, ignore_all=True)
    return 0


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
            args.command, args.host, args.port, args.metrics_port, args.debug, args.backend
        )
    except OSError as err:
        print("python -m fastcore %s: %s" % (args.command, err), file=sys.stderr)
        return 1
