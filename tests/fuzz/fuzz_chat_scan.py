"""Fuzz target: fastcore's async_chat input scanner against the reference.

    pip install atheris      # wheels for CPython <= 3.11
    python tests/fuzz/fuzz_chat_scan.py -max_total_time=600 [corpus_dir]

Runs fastcore (the extension unless FASTCORE_NO_EXTENSIONS=1) and the
reference asynchat (the standard library's on 3.11, pyasynchat on 3.12+) on
the same chunks and terminator sequence, and stops at the first difference
in what collect_incoming_data/found_terminator received.  Without a clang
build of the extension atheris sees the Python side's coverage only; run it
on the AddressSanitizer build (docs/reliability.md) to catch memory errors
in the C scanner.  tests/test_reliability_properties.py runs the same
comparison, bounded, under hypothesis in every test run.
"""

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import atheris  # noqa: E402

with atheris.instrument_imports():
    import chat_scan

    from fastcore import asynchat as fc_asynchat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat as ref_asynchat


def test_one_input(data):
    chunks, terms, in_size = chat_scan.decode(data)
    expected = chat_scan.run_scan(ref_asynchat, chunks, terms, in_size)
    actual = chat_scan.run_scan(fc_asynchat, chunks, terms, in_size)
    if actual != expected:
        raise AssertionError("fastcore %r\nreference %r\ncase %r"
                             % (actual, expected, (chunks, terms, in_size)))


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
