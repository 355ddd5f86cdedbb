"""Pick the implementation of the core, once, at import.

``FASTCORE_NO_EXTENSIONS=1`` forces the pure-Python twin; otherwise the
compiled extension is used when it was built, and the twin when it was not
(PyPy, no compiler).
"""

import os
import platform

NO_EXTENSIONS = os.environ.get("FASTCORE_NO_EXTENSIONS", "") not in ("", "0") or (
    platform.python_implementation() != "CPython"
)

if NO_EXTENSIONS:
    from fastcore import _core_py as core
else:
    try:
        from fastcore import _core_c as core
    except ImportError:
        from fastcore import _core_py as core

EXTENSION = core.__name__ == "fastcore._core_c"
