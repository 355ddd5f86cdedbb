"""Build script for fastcore's optional Cython extension, ``fastcore._core_c``.

The project's metadata lives in pyproject.toml; this file only adds the extension.

Environment switches (value ``1`` turns one on):

  FASTCORE_NO_EXTENSIONS       build no extension: a pure-Python install (always the
                               case on PyPy and other non-CPython interpreters, on
                               Windows and on free-threaded CPython: see below)
  FASTCORE_REQUIRE_EXTENSIONS  fail the build if the extension does not compile,
                               instead of falling back to the pure-Python core
  FASTCORE_DEBUG_BUILD         -O0 -g3 with assertions, FASTCORE_DEBUG and Cython
                               line tracing
  FASTCORE_OPT_CFLAGS          optimisation flags of a release build (default: -O2)
  FASTCORE_ANNOTATE            write Cython's annotation HTML to src/ (as does
                               ``build_ext --annotate``)
"""

import glob
import os
import platform
import re
import shlex
import shutil
import sys
import sysconfig

import setuptools
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

MIN_CYTHON = (3, 1)   # older Cython cannot build for CPython 3.14


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# The extension is POSIX C (compat.h includes poll.h, unistd.h and sys/select.h; the core
# cimports posix.fcntl and uses fds as small ints): MSVC cannot build it, and Winsock's
# select() takes SOCKET handles, not fd numbers. Windows installs the pure-Python core.
WINDOWS = sys.platform == "win32"
CPYTHON = platform.python_implementation() == "CPython"
# The extension relies on the GIL (its dict watcher, the socket layout reads, module
# state shared by every thread) and has not been run on a free-threaded build, which
# cannot be had here: such an interpreter installs the pure-Python core.
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
NO_EXTENSIONS = _flag("FASTCORE_NO_EXTENSIONS") or not CPYTHON or WINDOWS or FREE_THREADED
REQUIRE_EXTENSIONS = _flag("FASTCORE_REQUIRE_EXTENSIONS")

if WINDOWS:
    _WITHOUT_EXTENSION = "Windows"
elif FREE_THREADED:
    _WITHOUT_EXTENSION = "free-threaded CPython (Py_GIL_DISABLED)"
else:
    _WITHOUT_EXTENSION = platform.python_implementation()

if REQUIRE_EXTENSIONS and NO_EXTENSIONS and not _flag("FASTCORE_NO_EXTENSIONS"):
    raise SystemExit(
        "error: FASTCORE_REQUIRE_EXTENSIONS=1, but fastcore's extension is not built on "
        + _WITHOUT_EXTENSION
        + ": the pure-Python core is the implementation there."
    )
if FREE_THREADED and not _flag("FASTCORE_NO_EXTENSIONS"):
    print(
        "fastcore: free-threaded CPython (Py_GIL_DISABLED): building no extension; "
        "the pure-Python core is installed.",
        file=sys.stderr,
    )

DEBUG_BUILD = _flag("FASTCORE_DEBUG_BUILD")

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "embedsignature": True,
    # The cdef classes' methods are method descriptors (binding=False in
    # core.pyx): "clinic" gives them the __text_signature__ inspect reads.
    "embedsignature.format": "clinic",
}

if DEBUG_BUILD:
    CYTHON_DIRECTIVES["linetrace"] = True
    DEFINE_MACROS = [("FASTCORE_DEBUG", "1"), ("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    # -UNDEBUG comes after Python's own CFLAGS (which carry -DNDEBUG): assert() is live.
    COMPILE_ARGS = ["-O0", "-g3", "-UNDEBUG"]
else:
    DEFINE_MACROS = [("NDEBUG", None)]
    COMPILE_ARGS = shlex.split(os.environ.get("FASTCORE_OPT_CFLAGS", "-O2"))


def _import_cythonize():
    """Cython's cythonize and CompileError, or a readable error when Cython is unusable."""
    hint = (
        "fastcore: building the C extension needs Cython>=3.1,<4 "
        "(pip install 'Cython>=3.1,<4'); set FASTCORE_NO_EXTENSIONS=1 for a "
        "pure-Python install without it."
    )
    try:
        import Cython
        from Cython.Build import cythonize
        from Cython.Compiler.Errors import CompileError
    except ImportError:
        raise SystemExit("error: Cython is not installed.\n" + hint) from None
    match = re.match(r"(\d+)\.(\d+)", Cython.__version__)
    if not match or tuple(map(int, match.groups())) < MIN_CYTHON:
        raise SystemExit(f"error: Cython {Cython.__version__} is too old.\n" + hint)
    return cythonize, CompileError


class BuildExt(_build_ext):
    user_options = _build_ext.user_options + [
        ("annotate", None, "write Cython's annotation HTML next to the .pyx sources"),
    ]
    boolean_options = _build_ext.boolean_options + ["annotate"]

    def initialize_options(self):
        super().initialize_options()
        self.annotate = None

    def finalize_options(self):
        super().finalize_options()
        self.annotate = bool(self.annotate) or _flag("FASTCORE_ANNOTATE")

    def run(self):
        self._failed = []
        if self.extensions:
            # Outside the fallback below: a missing Cython is an error, not a reason
            # to install silently without the extension.
            self._cythonize, self._cython_error = _import_cythonize()
        super().run()

    def build_extensions(self):
        super().build_extensions()
        # so that --inplace does not try to copy what was not built
        self.extensions = [ext for ext in self.extensions if ext not in self._failed]

    def build_extension(self, ext):
        errors = (CCompilerError, ExecError, PlatformError, ValueError, self._cython_error)
        try:
            self._cythonize_sources(ext)
            super().build_extension(ext)
        except errors as exc:
            if REQUIRE_EXTENSIONS:
                raise
            self._failed.append(ext)
            # a module left by an earlier build in the same tree must not be packaged
            stale = self.get_ext_fullpath(ext.name)
            if os.path.exists(stale):
                os.remove(stale)
            print(
                f"\nWARNING: fastcore: could not compile the extension {ext.name} "
                f"({type(exc).__name__}: {exc});\n"
                "WARNING: building the pure-Python implementation only.\n"
                "WARNING: set FASTCORE_REQUIRE_EXTENSIONS=1 to make this an error.\n",
                file=sys.stderr,
            )

    def _cythonize_sources(self, ext):
        # The generated C goes to the build directory, never into src/. A stamp of the
        # configuration forces a full rebuild when it changes (release <-> debug), which
        # the timestamp checks of Cython and setuptools alone would not notice.
        build_dir = os.path.join(self.build_temp, "cython")
        os.makedirs(build_dir, exist_ok=True)
        config = repr((CYTHON_DIRECTIVES, DEFINE_MACROS, COMPILE_ARGS, self._cython_version()))
        stamp = os.path.join(build_dir, ext.name + ".config")
        if _read(stamp) != config:
            self.force = True
        # Annotation HTML is written only when the C is regenerated.
        force = self.force or self.annotate
        (cythonized,) = self._cythonize(
            [ext],
            build_dir=build_dir,
            include_path=["src"],
            compiler_directives=CYTHON_DIRECTIVES,
            annotate=self.annotate,
            force=force,
            quiet=not self.verbose,
        )
        ext.sources = cythonized.sources
        with open(stamp, "w") as f:
            f.write(config)
        if self.annotate:
            for html in glob.glob(os.path.join(build_dir, "src", "*.html")):
                shutil.copy(html, "src")
                print(f"fastcore: annotation written to src/{os.path.basename(html)}")

    @staticmethod
    def _cython_version():
        import Cython

        return Cython.__version__


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def extensions():
    if NO_EXTENSIONS:
        return []
    depends = sorted(glob.glob("src/*.pxi") + glob.glob("src/*.pxd") + glob.glob("src/*.h"))
    return [
        Extension(
            "fastcore._core_c",
            ["src/core.pyx"],
            include_dirs=["src"],
            depends=depends,
            define_macros=DEFINE_MACROS,
            extra_compile_args=COMPILE_ARGS,
        )
    ]


def license_metadata():
    # pyproject.toml cannot say this for every setuptools: a `license = "MIT"` string
    # needs setuptools >= 77, and the older table form is deprecated from 77 on.
    major = int(re.match(r"\d+", setuptools.__version__).group())
    return {"license_expression": "MIT"} if major >= 77 else {"license": "MIT"}


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt}, **license_metadata())
