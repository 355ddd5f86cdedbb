"""fastcore: CPython 3.11's asyncore and asynchat on a Cython event loop.

``from fastcore import asyncore, asynchat`` gives drop-in modules;
``fastcore.install()`` makes ``import asyncore``/``import asynchat`` load them.
"""

import sys
import warnings

from fastcore._impl import EXTENSION, core

__version__ = "0.1.0"

__all__ = ["EXTENSION", "available_backends", "default_backend", "install", "serve_forever",
           "__version__"]


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


def __getattr__(name):
    # fastcore.workers (and logging) load on first use: `import fastcore` stays cheap.
    if name == "serve_forever":
        from fastcore.workers import serve_forever

        return serve_forever
    raise AttributeError("module 'fastcore' has no attribute %r" % (name,))
