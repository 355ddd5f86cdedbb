"""tools/third_party_suites.py's verdicts: which differences from the reference count.

The runs themselves (pyftpdlib's suite, from PyPI) are CI's (.ci/third-party);
here the comparison gets each run's attempts as its outcome logs would give them.
"""

import importlib.util
import os

import pytest

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tools",
                    "third_party_suites.py")
if not os.path.exists(TOOL):
    pytest.skip("tools/ is not beside tests/ (tests copied without it)",
                allow_module_level=True)

spec = importlib.util.spec_from_file_location("third_party_suites", TOOL)
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)

P, F, E, C, S = tool.PASSED, tool.FAILED, tool.ERROR, tool.CRASHED, tool.SKIPPED


def results_of(cases, broken=()):
    """The runs' results from {test: (reference, extension, pure-Python attempts)}."""
    results = {}
    for index, run in enumerate(tool.RUNS):
        rounds = [{} for _ in range(1 + tool.EXTRA_RERUNS + 1)]
        for test, attempts in cases.items():
            for k, outcome in enumerate(attempts[index]):
                rounds[k][test] = outcome
        results[run.label] = dict(
            outcomes=rounds[0], reruns=[r for r in rounds[1:] if r],
            status="timed out" if run.label in broken else None)
    return results


def flagged(rows):
    return sorted({(label, test) for label, test, _ in rows})


def test_counted_only_what_passes_on_the_reference_and_always_fails_on_fastcore():
    found = tool.compare(results_of({
        "regression": ([P], [F, F], [E, C]),
        "once": ([P, F, P, P, P, P, P], [F] * 7, [F] * 7),
        "twice": ([P, F, P, P, P, P, F], [F] * 7, [F] * 7),
        "once_in_six": ([P, F, P, P, P, P], [F] * 6, [F] * 6),
        "flaky_fastcore": ([P, P], [F, P], [P]),
        "both": ([F, F], [F, C], [C, C]),
        "reference_only": ([F, F], [P, P], [P, F]),
        "skipped_there": ([S], [P], [P]),
        "fine": ([P], [P], [P]),
    }))
    assert flagged(found.regressions) == [
        ("extension", "once"), ("extension", "regression"),
        ("pure-Python", "once"), ("pure-Python", "regression")]
    assert flagged(found.flaky_reference) == [("reference", "once_in_six"),
                                              ("reference", "twice")]
    assert flagged(found.flaky_fastcore) == [("extension", "flaky_fastcore")]
    assert flagged(found.both) == [("extension", "both"), ("pure-Python", "both")]
    assert flagged(found.reference_only) == [
        ("extension", "reference_only"), ("pure-Python", "reference_only")]
    assert flagged(found.other) == [
        ("extension", "skipped_there"), ("pure-Python", "skipped_there")]
    # passed at least once: fine, flaky_fastcore, reference_only, skipped_there on
    # both fastcore runs
    assert found.passed == 8


def test_a_test_missing_from_a_fastcore_run_counts_unless_the_run_broke():
    cases = {"ran": ([P], [P], [P]), "missing": ([P], [], []), "skipped": ([S], [], [])}
    found = tool.compare(results_of(cases))
    assert flagged(found.regressions) == [("extension", "missing"), ("pure-Python", "missing")]
    assert flagged(found.other) == [("extension", "skipped"), ("pure-Python", "skipped")]
    found = tool.compare(results_of(cases, broken=("extension",)))
    assert flagged(found.regressions) == [("pure-Python", "missing")]
    assert flagged(found.other) == [("pure-Python", "skipped")]
    assert found.not_run["extension"] == 1


def test_more_attempts_while_fastcore_always_fails_and_the_reference_all_but_once():
    results = results_of({
        "undecided": ([P, F, P], [F, F, F], [F, P, F]),
        "two_each": ([P, P], [F, F], [F, F]),
        "failed_twice": ([P, F, F], [F, F, F], [F, F, F]),
        "seven_attempts": ([P, F, P, P, P, P, P], [F] * 7, [F] * 7),
        "fastcore_passed_once": ([P, F], [F, P], [P, F]),
        "reference_never_passed": ([F], [F, F], [F, F]),
        "skipped": ([S], [F], [F]),
    })
    assert [t for t in sorted(results["reference"]["outcomes"])
            if tool.is_disputed(results, t)] == ["two_each", "undecided"]


def test_phases_and_crashes_give_one_outcome():
    assert tool.outcome_of({"setup": "passed", "call": "failed", "teardown": "failed"}) == F
    assert tool.outcome_of({"setup": "passed", "call": "passed", "teardown": "failed"}) == E
    assert tool.outcome_of({"setup": "passed", "crash": "failed"}) == C
    assert tool.outcome_of({"setup": "skipped"}) == S
    assert tool.outcome_of({"setup": "passed", "call": "xfailed", "teardown": "passed"}) == S
    assert tool.outcome_of({"setup": "passed", "call": "passed", "teardown": "passed"}) == P
    # the run stopped in its midst: not reached, so run again if the run is resumed
    assert tool.outcome_of({"setup": "passed", "call": "passed"}) is None
    assert tool.outcome_of({"setup": "passed"}) is None
