"""pytest configuration for the fastcore suite.

Modules under test:
  * default: ``from fastcore import asyncore, asynchat`` (the extension, or
    the pure-Python twin when FASTCORE_NO_EXTENSIONS=1);
  * ``--reference``: the reference modules instead -- the standard library's
    asyncore/asynchat on Python <= 3.11, the PyPI copies pyasyncore and
    pyasynchat (which install modules named ``asyncore``/``asynchat``) on
    3.12+.  Tests marked ``fastcore_only`` (fixes and extensions) are
    skipped then.  This checks the suite's own expectations.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    # lets the test modules ``import support`` under --import-mode=importlib
    sys.path.insert(0, HERE)

pytest.register_assert_rewrite("support")
import support  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--reference", action="store_true", default=False,
        help="run the suite against the reference asyncore/asynchat "
             "(stdlib <= 3.11, pyasyncore/pyasynchat on 3.12+) instead of fastcore")
    parser.addoption(
        "--no-skip-fastcore-only", action="store_true", default=False,
        help="with --reference, run the fastcore_only tests too (they are expected to "
             "fail there: shows what fastcore's fixes change)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fastcore_only: tests a fastcore fix or extension; skipped with --reference")
    config.addinivalue_line(
        "markers", "slow: a long test (thousands of connections, large transfers)")
    config.addinivalue_line(
        "markers", "reference_only: documents a reference behaviour that fastcore deliberately "
                   "changes; runs only with --reference")


def _reference_option(config):
    return bool(config.getoption("--reference"))


def pytest_collection_modifyitems(config, items):
    reference = _reference_option(config)
    skip_fc = pytest.mark.skip(
        reason="fastcore fix/extension: not applicable to the reference modules")
    skip_ref = pytest.mark.skip(reason="documents a reference behaviour fastcore deliberately "
                                       "changes: only with --reference")
    for item in items:
        if reference:
            if (item.get_closest_marker("fastcore_only") is not None
                    and not config.getoption("--no-skip-fastcore-only")):
                item.add_marker(skip_fc)
        elif item.get_closest_marker("reference_only") is not None:
            item.add_marker(skip_ref)


# ---------------------------------------------------------------------------
# loading the modules
# ---------------------------------------------------------------------------

load_reference = support.load_reference
load_fastcore = support.load_fastcore


def _reference_or_skip():
    try:
        return load_reference()
    except ImportError as e:
        pytest.skip("reference modules not importable (%s): on Python 3.12+ install "
                    "pyasyncore and pyasynchat" % (e,))


def _modules(config):
    if _reference_option(config):
        try:
            return load_reference()
        except ImportError as e:
            raise pytest.UsageError(
                "--reference: cannot import the reference modules: %s" % e) from e
    _, asyncore, asynchat = load_fastcore()
    return asyncore, asynchat


def pytest_report_header(config):
    if _reference_option(config):
        try:
            ac, ch = load_reference()
        except ImportError as e:
            return "modules under test: reference (NOT IMPORTABLE: %s)" % e
        return "modules under test: reference %s, %s" % (ac.__file__, ch.__file__)
    try:
        fastcore, _, _ = load_fastcore()
    except Exception as e:  # reported, the fixtures will error out
        return "modules under test: fastcore (IMPORT FAILED: %r)" % (e,)
    impl = "extension" if fastcore.EXTENSION else "pure-python"
    try:
        backend = fastcore.default_backend()
        backends = ", ".join(fastcore.available_backends())
    except Exception as e:
        backend = backends = "? (%r)" % (e,)
    env = ", ".join("%s=%s" % (k, os.environ[k]) for k in
                    ("FASTCORE_NO_EXTENSIONS", "FASTCORE_EXPECT_EXTENSION") if k in os.environ)
    return ("modules under test: fastcore %s from %s; implementation: %s; default backend: %s "
            "(available: %s)%s" % (getattr(fastcore, "__version__", "?"),
                                   os.path.dirname(fastcore.__file__), impl, backend, backends,
                                   "; " + env if env else ""))


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def reference_mode(pytestconfig):
    return _reference_option(pytestconfig)


@pytest.fixture(scope="session")
def modules(pytestconfig):
    """(asyncore, asynchat) under test."""
    return _modules(pytestconfig)


@pytest.fixture(scope="session")
def asyncore(modules):
    return modules[0]


@pytest.fixture(scope="session")
def asynchat(modules):
    return modules[1]


@pytest.fixture(scope="session")
def ref_modules():
    """(asyncore, asynchat) of the reference, whatever is under test."""
    return _reference_or_skip()


@pytest.fixture(scope="session")
def ref_asyncore(ref_modules):
    return ref_modules[0]


@pytest.fixture(scope="session")
def ref_asynchat(ref_modules):
    return ref_modules[1]


@pytest.fixture(scope="session")
def fastcore_pkg(pytestconfig):
    """The fastcore package itself (only for fastcore_only tests)."""
    fastcore, _, _ = load_fastcore()
    return fastcore


@pytest.fixture(scope="session")
def kit(modules):
    return support.kit(*modules)


@pytest.fixture(scope="session")
def ref_kit(ref_modules):
    return support.kit(*ref_modules)


@pytest.fixture
def sockmap(asyncore):
    """A fresh map, close_all-ed (ignore_all=True) at teardown."""
    m = {}
    yield m
    asyncore.close_all(map=m, ignore_all=True)


@pytest.fixture
def global_map(asyncore, monkeypatch):
    """Replaces ``asyncore.socket_map`` by a fresh dict for the test."""
    m = {}
    monkeypatch.setattr(asyncore, "socket_map", m)
    yield m
    asyncore.close_all(map=m, ignore_all=True)


@pytest.fixture(autouse=True)
def _no_leak_in_socket_map(request):
    """Whatever a test leaves in the module's socket_map is closed afterwards."""
    yield
    if "asyncore" not in request.fixturenames:
        return
    mod = request.getfixturevalue("asyncore")
    if mod.socket_map:
        mod.close_all(ignore_all=True)


@pytest.fixture(scope="session")
def haproxy():
    """The haproxy program's path; missing, the test fails under CI (CI=true)
    and is skipped elsewhere (support.system_program)."""
    return support.system_program("haproxy")
