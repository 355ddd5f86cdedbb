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
