"""Reliability: property tests of async_chat's input scanner.

For any byte stream, chunking, read size and sequence of terminators (bytes
of any length, counts, None, b''; the next one set at every
found_terminator), fastcore's async_chat hands collect_incoming_data and
found_terminator exactly what the reference async_chat hands them, and
leaves the same input buffered.  test_differential.py covers well-formed
protocol streams through the loop; this covers arbitrary ones, driving
handle_read directly.

The fuzz test decodes raw bytes the way the atheris target
(tests/fuzz/fuzz_chat_scan.py) does.  Budgets: FASTCORE_PROPERTY_EXAMPLES
(default 150 per property) and FASTCORE_FUZZ_EXAMPLES (default 400).
"""

import os

import pytest
from fuzz import chat_scan

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROPERTY_EXAMPLES = int(os.environ.get("FASTCORE_PROPERTY_EXAMPLES", 150))
FUZZ_EXAMPLES = int(os.environ.get("FASTCORE_FUZZ_EXAMPLES", 400))

_settings = dict(deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])

small_bytes = st.lists(st.sampled_from(chat_scan.ALPHABET), max_size=40).map(bytes)
terminator = st.one_of(
    st.lists(st.sampled_from(chat_scan.ALPHABET), min_size=1, max_size=6).map(bytes),
    st.integers(0, 30),
    st.none(),
    st.just(b""),
    st.lists(st.sampled_from(b"\r\n"), min_size=1, max_size=4).map(bytearray),
)
read_size = st.one_of(st.integers(1, 9), st.just(65536))


@settings(max_examples=PROPERTY_EXAMPLES, **_settings)
@given(chunks=st.lists(small_bytes, min_size=1, max_size=12),
       terms=st.lists(terminator, min_size=1, max_size=5),
       in_size=read_size)
def test_scanner_matches_reference(asynchat, ref_asynchat, chunks, terms, in_size):
    expected = chat_scan.run_scan(ref_asynchat, chunks, terms, in_size)
    assert chat_scan.run_scan(asynchat, chunks, terms, in_size) == expected


@settings(max_examples=PROPERTY_EXAMPLES, **_settings)
@given(data=st.binary(max_size=300), term=st.binary(min_size=1, max_size=12),
       cuts=st.lists(st.integers(0, 300), max_size=20))
def test_scanner_with_any_bytes_and_terminator(asynchat, ref_asynchat, data, term, cuts):
    """Any bytes at all (not just a small alphabet), a fixed terminator that
    often occurs: the stream interleaves the data with it."""
    stream = term.join([data[i::3] for i in range(3)]) + term[:-1]
    bounds = sorted(set(c % (len(stream) + 1) for c in cuts)) + [len(stream)]
    chunks = [stream[i:j] for i, j in zip([0] + bounds, bounds)]
    expected = chat_scan.run_scan(ref_asynchat, chunks, [term])
    assert chat_scan.run_scan(asynchat, chunks, [term]) == expected


@settings(max_examples=FUZZ_EXAMPLES, **_settings)
@given(data=st.binary(max_size=400))
def test_fuzz_input_matches_reference(asynchat, ref_asynchat, data):
    chunks, terms, in_size = chat_scan.decode(data)
    expected = chat_scan.run_scan(ref_asynchat, chunks, terms, in_size)
    assert chat_scan.run_scan(asynchat, chunks, terms, in_size) == expected


def test_harness_sees_a_difference(asynchat, ref_asynchat):
    """The comparison is not vacuous: a scanner that loses a held-back
    terminator prefix is told apart from the reference."""
    class Forgetful(asynchat.async_chat):
        def handle_read(self):
            asynchat.async_chat.handle_read(self)
            if self.ac_in_buffer:
                self.ac_in_buffer = b""

    class Module:
        async_chat = Forgetful

    case = ([b"ab\r", b"\ncd"], [b"\r\n"], 65536)
    assert chat_scan.run_scan(Module, *case) != chat_scan.run_scan(ref_asynchat, *case)
