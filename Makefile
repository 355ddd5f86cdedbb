PYTHON ?= python
# Tests must import the *installed* package, not the checkout: -I keeps the current
# directory off sys.path (as running the `pytest` script does) and runs the pytest
# of $(PYTHON), the interpreter the package was installed into.
PYTEST ?= $(PYTHON) -I -m pytest
CYTHON_SOURCES = $(wildcard src/*.pyx src/*.pxi src/*.pxd)

.PHONY: build debug annotate test asan bench lint clean

# The in-place targets exist to build the extension: a compile error fails them
# instead of falling back to the pure-Python core.
build:
	FASTCORE_REQUIRE_EXTENSIONS=1 $(PYTHON) setup.py build_ext --inplace

debug:
	FASTCORE_REQUIRE_EXTENSIONS=1 FASTCORE_DEBUG_BUILD=1 $(PYTHON) setup.py build_ext --inplace --force

annotate:
	FASTCORE_REQUIRE_EXTENSIONS=1 FASTCORE_ANNOTATE=1 $(PYTHON) setup.py build_ext --inplace

# The README's test command: both implementations, against the installed package.
test:
	$(PYTHON) -m pip install -q '.[test]'
	$(PYTEST)
	FASTCORE_NO_EXTENSIONS=1 $(PYTEST)

# The suite against the extension built with AddressSanitizer (build/asan; see .ci/asan).
asan:
	PYTHON=$(PYTHON) .ci/asan

# The benchmarks against the in-place build (quick; BENCH_ARGS=--full for the long run).
bench: build
	PYTHONPATH=$(CURDIR) $(PYTHON) bench/run.py $(BENCH_ARGS)

lint:
	ruff check .
	cython-lint $(CYTHON_SOURCES)

clean:
	rm -rf build dist *.egg-info .pytest_cache
	rm -f src/*.c src/*.html fastcore/*.so fastcore/*.pyd
	find . -name __pycache__ -type d -prune -not -path './.venv*' -exec rm -rf {} +

# Release checks (tools/check_dist.py): the tools live in their own venv.
DIST_TOOLS ?= build/dist-tools
DIST_PY = $(DIST_TOOLS)/bin/python
CHECK_DIST = $(DIST_PY) tools/check_dist.py

.PHONY: dist-tools dist check-dist check-wheels check-wheels-cibw check-workflows release-check

$(DIST_PY): tools/dist-requirements.txt
	$(PYTHON) -m venv $(DIST_TOOLS)
	$(DIST_PY) -m pip install -q -r tools/dist-requirements.txt
	touch $(DIST_PY)

dist-tools: $(DIST_PY)

# dist/: the sdist, the binary wheel built from it and the pure-Python wheel, checked.
dist: $(DIST_PY)
	$(CHECK_DIST) build

# The sdist installs in a clean venv; cibuildwheel's matrix is the intended one.
check-dist: dist
	$(CHECK_DIST) sdist identifiers

# Every CPython 3.9-3.15 under pyenv: wheel from the sdist, auditwheel repair, fresh
# venv, both implementations (PYTHONS=3.9,3.12 for fewer).
check-wheels: dist
	$(CHECK_DIST) wheels $(if $(PYTHONS),--pythons $(PYTHONS))

# The same with cibuildwheel's test-command, as the wheels workflow runs it.
check-wheels-cibw: dist
	$(CHECK_DIST) wheels --layout cibw $(if $(PYTHONS),--pythons $(PYTHONS))

check-workflows: $(DIST_PY)
	$(CHECK_DIST) workflows

release-check: check-dist check-wheels check-workflows
