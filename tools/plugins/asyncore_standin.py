"""pytest plugin of tools/third_party_suites.py: the asyncore a third-party suite runs on.

Loaded from outside the suite's tree (PYTHONPATH=tools/plugins,
PYTEST_PLUGINS=asyncore_standin), so the suite itself stays unmodified. The
environment says what to do, so pytest-xdist's workers do the same (the
suite's forked server processes inherit the modules already installed):

  ASYNCORE_STANDIN      "fastcore": fastcore.install() as this module is imported,
                        which is before pytest loads the suite's conftest.py (the
                        first import of asyncore); "reference": leave the modules
                        alone (3.11's own, or pyasyncore/pyasynchat on 3.12+)
  ASYNCORE_STANDIN_LOG  a file to which one JSON line per test phase report, and one
                        per process with the modules it used, are appended

Under pytest-xdist only the controller writes the reports (the workers send it
theirs, and it reports a test whose worker died as failed in the phase "crash");
every process that ran tests writes its own modules line.
"""

import json
import os
import sys
import types

MODE = os.environ.get("ASYNCORE_STANDIN")
if MODE not in ("fastcore", "reference"):
    raise RuntimeError(
        "asyncore_standin: ASYNCORE_STANDIN must be 'fastcore' or 'reference', not %r" % (MODE,)
    )
LOG_PATH = os.environ["ASYNCORE_STANDIN_LOG"]

if MODE == "fastcore":
    import fastcore

    # sitecustomize.py (beside this file) installed fastcore at start-up.
    for _name in ("asyncore", "asynchat"):
        if sys.modules.get(_name) is not getattr(fastcore, _name, None):
            raise RuntimeError(
                "asyncore_standin: %s is not fastcore's (sitecustomize.py did not run)" % _name
            )

_config = None


def _append(record):
    # One write per line on an O_APPEND descriptor: lines of concurrent writers
    # (the xdist controller and workers) do not interleave.
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(LOG_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _module_file(module):
    return None if module is None else getattr(module, "__file__", repr(module))


def _modules_record():
    """Which asyncore/asynchat this process used: sys.modules' entries, the module
    each loaded module holds under those names (and where that module lives), and
    fastcore's state if it is loaded."""
    record = {
        "kind": "modules",
        "pid": os.getpid(),
        "mode": MODE,
        "python": sys.version.split()[0],
        "asyncore": _module_file(sys.modules.get("asyncore")),
        "asynchat": _module_file(sys.modules.get("asynchat")),
    }
    held, holders = {}, {}
    for name, module in list(sys.modules.items()):
        # vars(), not getattr(): a module's __getattr__ could import or warn.
        namespace = getattr(module, "__dict__", {})
        for attr in ("asyncore", "asynchat"):
            value = namespace.get(attr)
            if isinstance(value, types.ModuleType):
                held["%s.%s" % (name, attr)] = _module_file(value)
                holders[name] = _module_file(module)
    record["held"] = held
    record["holders"] = holders
    fastcore_pkg = sys.modules.get("fastcore")
    if fastcore_pkg is not None:
        record["fastcore"] = fastcore_pkg.__file__
        record["fastcore_extension"] = fastcore_pkg.EXTENSION
    return record


def pytest_configure(config):
    global _config
    _config = config


def pytest_runtest_logreport(report):
    if hasattr(_config, "workerinput"):
        return
    outcome = report.outcome
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    # xdist reports a test whose worker died under it with the phase "???"
    when = "crash" if report.when == "???" else report.when
    _append({"kind": "report", "nodeid": report.nodeid, "when": when, "outcome": outcome})


def pytest_collectreport(report):
    if report.failed and not hasattr(_config, "workerinput"):
        _append({"kind": "report", "nodeid": report.nodeid, "when": "collect",
                 "outcome": "failed"})


def pytest_sessionfinish(session):
    _append(_modules_record())
