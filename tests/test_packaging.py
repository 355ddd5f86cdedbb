"""What the installed distribution ships: version, type information, changelog entry."""

import ast
import os
import re
from importlib import metadata

import pytest

import fastcore
from fastcore import _core_py

DIST = "fastcore-asyncore"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = os.path.join(os.path.dirname(fastcore.__file__), "_core_c.pyi")


def _distribution():
    try:
        return metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        pytest.skip("%s is not installed (the suite runs against a checkout)" % DIST)


def _installed_from_distribution(dist):
    """True if the fastcore imported here is the one the distribution installed."""
    init = dist.locate_file("fastcore/__init__.py")
    return os.path.realpath(str(init)) == os.path.realpath(fastcore.__file__)


def test_version_is_the_distributions():
    dist = _distribution()
    if not _installed_from_distribution(dist):
        pytest.skip("fastcore is imported from %s, not from the installed distribution"
                    % os.path.dirname(fastcore.__file__))
    assert fastcore.__version__ == dist.version


def test_version_is_pep440():
    # the release versions this project makes: N.N.N with an optional pre/post/dev part
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?",
                        fastcore.__version__), fastcore.__version__


def test_type_information_ships():
    dist = _distribution()
    if not _installed_from_distribution(dist):
        pytest.skip("fastcore is not imported from the installed distribution")
    shipped = {str(path).replace(os.sep, "/") for path in dist.files or ()}
    assert "fastcore/py.typed" in shipped
    assert "fastcore/_core_c.pyi" in shipped
    assert os.path.isfile(STUB)


def _stub_tree():
    if not os.path.isfile(STUB):
        pytest.fail("fastcore/_core_c.pyi is missing next to %s" % fastcore.__file__)
    with open(STUB, encoding="utf-8") as f:
        return ast.parse(f.read(), STUB)


def _declared(tree):
    """{module-level name: set of member names (None for functions and
    variables)}"""
    declared = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            declared[node.name] = None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared[node.target.id] = None
        elif isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            declared[node.name] = members
    return declared


def _core_modules():
    modules = [_core_py]
    try:
        from fastcore import _core_c
    except ImportError:
        pass  # a pure-Python install: the stub is checked against the twin only
    else:
        modules.append(_core_c)
    return modules


def test_stub_covers_the_core_interface():
    declared = _declared(_stub_tree())
    assert set(_core_py.__all__) <= set(declared), sorted(set(_core_py.__all__) - set(declared))


@pytest.mark.parametrize("module", _core_modules(), ids=lambda m: m.__name__)
def test_stub_declares_only_what_exists(module):
    missing = []
    for name, members in _declared(_stub_tree()).items():
        obj = getattr(module, name, None)
        if obj is None:
            missing.append(name)
            continue
        missing.extend("%s.%s" % (name, member) for member in sorted(members or ())
                       if not hasattr(obj, member))
    assert not missing, "declared in _core_c.pyi, absent from %s: %s" % (module.__name__, missing)


def test_changelog_has_this_version():
    path = os.path.join(ROOT, "CHANGELOG.md")
    if not os.path.isfile(path):
        pytest.skip("no CHANGELOG.md beside tests/ (tests copied without it)")
    with open(path, encoding="utf-8") as f:
        headings = re.findall(r"^## \[?v?([^\]\s]+)\]?", f.read(), re.MULTILINE)
    assert fastcore.__version__ in headings, headings
