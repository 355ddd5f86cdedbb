"""fastcore: CPython 3.11's asyncore and asynchat on a Cython event loop.

``from fastcore import asyncore, asynchat`` gives drop-in modules;
``fastcore.install()`` makes ``import asyncore``/``import asynchat`` load them.
"""

import os
import sys
import warnings

from fastcore._impl import EXTENSION, core
from fastcore.executor import run_in_executor

__version__ = "0.1.0"

__all__ = [
    "EXTENSION",
    "Timer",
    "available_backends",
    "call_every",
    "call_later",
    "call_soon_threadsafe",
    "default_backend",
    "get_connection_limit",
    "get_idle_timeout",
    "get_line_length_limit",
    "install",
    "limit_connections",
    "limit_line_length",
    "run_in_executor",
    "serve_forever",
    "set_idle_timeout",
    "__version__",
]

# Timers and thread hand-off: one scheduler per process, run by loop().
Timer = core.Timer
call_later = core.call_later
call_every = core.call_every
call_soon_threadsafe = core.call_soon_threadsafe

# Idle timeouts and limits: fastcore's own functions, so that no attribute
# name a subclass of dispatcher/async_chat may use gets a meaning.
set_idle_timeout = core.set_idle_timeout
get_idle_timeout = core.get_idle_timeout
limit_connections = core.limit_connections
get_connection_limit = core.get_connection_limit
limit_line_length = core.limit_line_length
get_line_length_limit = core.get_line_length_limit


def default_backend():
    """The poller ``loop(backend='auto')`` uses here: 'epoll', 'kqueue', 'poll' or 'select'."""
    return core.default_backend()


def available_backends():
    """Every backend this platform and implementation can use, best first."""
    return core.available_backends()


def install():
    """Make ``import asyncore`` and ``import asynchat`` give fastcore's modules.

    Call it before the program (or a library it uses) imports them.
    """
    from fastcore import asynchat, asyncore

    for name, module in (("asyncore", asyncore), ("asynchat", asynchat)):
        previous = sys.modules.get(name)
        if previous is not None and previous is not module:
            warnings.warn(
                "fastcore.install(): %r was already imported; modules that imported it "
                "before keep the old one" % name,
                RuntimeWarning,
                stacklevel=2,
            )
        sys.modules[name] = module


# Observability (issue 6): fastcore.stats is a callable module; the others
# load their modules (and logging) only when called.
from fastcore import stats  # noqa: E402

__all__ += ["stats", "trace", "use_logging"]


def use_logging(logger=None):
    """Dispatchers' log()/log_info() and the loop's warnings through ``logging``
    (see fastcore.log.use_logging)."""
    from fastcore.log import use_logging

    return use_logging(logger)


def trace(dispatcher):
    """The dispatcher's last events recorded in debug mode (see fastcore.debug)."""
    from fastcore.debug import trace

    return trace(dispatcher)


if os.environ.get("FASTCORE_DEBUG", "") not in ("", "0"):
    from fastcore import debug as _debug

    _debug.enable()


def __getattr__(name):
    # fastcore.workers (and logging) load on first use: `import fastcore` stays cheap.
    if name == "serve_forever":
        from fastcore.workers import serve_forever

        return serve_forever
    raise AttributeError("module 'fastcore' has no attribute %r" % (name,))
