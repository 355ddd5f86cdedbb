"""The implementations the bench compares, and how to load each in a fresh process.

``ext`` and ``pure`` are fastcore's compiled and pure-Python cores (the choice is
made at import, from the environment ``environment(name)`` gives); ``ref`` is the
reference asyncore/asynchat: the standard library up to 3.11, pyasyncore and
pyasynchat from 3.12.
"""

import os
import resource

ASYNCORE_IMPLS = ("ext", "pure", "ref")

LABELS = {
    "ext": "fastcore (extension)",
    "pure": "fastcore (pure Python)",
    "ref": "reference asyncore",
    "asyncio": "asyncio Protocol",
    "uvloop": "uvloop Protocol",
}


def environment(name):
    """The environment a subprocess running implementation ``name`` needs."""
    env = dict(os.environ)
    env.pop("FASTCORE_NO_EXTENSIONS", None)
    if name == "pure":
        env["FASTCORE_NO_EXTENSIONS"] = "1"
    return env


def load(name):
    """(asyncore, asynchat) modules of implementation ``name``.

    Raises RuntimeError when that implementation cannot be had in this process.
    """
    if name == "ref":
        import warnings

        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import asynchat
            import asyncore
        except ImportError as exc:
            raise RuntimeError(
                "the reference asyncore is not installed (pip install pyasyncore pyasynchat)"
            ) from exc
        return asyncore, asynchat
    import fastcore
    from fastcore import asynchat, asyncore

    if fastcore.EXTENSION != (name == "ext"):
        raise RuntimeError(
            "asked for fastcore %s but fastcore.EXTENSION is %s (FASTCORE_NO_EXTENSIONS=%r)"
            % (name, fastcore.EXTENSION, os.environ.get("FASTCORE_NO_EXTENSIONS"))
        )
    return asyncore, asynchat


def raise_fd_limit():
    """Raise RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft
