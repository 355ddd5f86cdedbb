"""Third-party asyncore programs' own test suites, unmodified, on fastcore.

    python tools/third_party_suites.py --python /path/to/venv/bin/python
    python tools/third_party_suites.py --base-python ~/.pyenv/versions/3.13.0/bin/python

For each suite (today pyftpdlib 2.2.0): its sdist is fetched from PyPI with pip and
checked against the sha256 below, installed with its test extra into the
environment, unpacked, and its complete test suite is run with that Python three
times, each in a fresh copy of the tree, as its Makefile runs it (`python -m
pytest` from the tree, with its own pytest configuration and environment):

  reference    the reference modules: 3.11's own asyncore/asynchat, on 3.12+ the
               PyPI copies pyasyncore/pyasynchat (the suite's own dependency)
  extension    fastcore's compiled core, through fastcore.install()
  pure-Python  fastcore's pure-Python core (FASTCORE_NO_EXTENSIONS=1)

fastcore stands in through tools/plugins/asyncore_standin.py, a pytest plugin
loaded from outside the suite's tree (PYTHONPATH + PYTEST_PLUGINS), which also
logs every test's outcome and which asyncore/asynchat each process used; a run
whose modules are not the intended ones is broken. The tests run in one
pytest-xdist worker (see PYTEST_ARGS), so that a test that kills the
interpreter is reported as crashed and the rest still run; a run that pytest
itself gives up (an internal error) goes on once with the tests it did not
reach. Every test that
fails, errors or crashes in a run is run once more on all three, and is then
pass (passed every time), fail (failed every time) or flaky on each; one that
fastcore failed every time and the reference all times but once at most is
run up to five times more on all three while that holds: it counts when it
still holds over seven attempts.

--python takes the interpreter of a venv where fastcore is already installed
(the suite's test dependencies are added to it); --base-python makes a venv
from an interpreter in the work directory and installs this checkout into it
(the extension must compile).

The exit status is non-zero when a test that passes on the reference (every
time, or but once in seven) fails on fastcore (every time, or does not run there),
or when a run is broken (timed out, pytest could not run, wrong modules).
Listed and not counted: tests that are flaky on the reference (they say nothing
of fastcore), flaky on fastcore only, failing on both, or failing on the
reference only. The closing line, for CI's summary, counts the tests of both
fastcore runs together: "third-party: N passed, N failed", where failed is the
tests counted above plus one per broken run.
"""

import argparse
import collections
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_DIR = os.path.join(ROOT, "tools", "plugins")
PLUGIN = "asyncore_standin"

# name and version on PyPI, the sdist's sha256, the extra that has its test
# dependencies, and the top-level packages of its code and of its tests
Suite = collections.namedtuple("Suite", "name version sha256 extra packages")
SUITES = (
    Suite("pyftpdlib", "2.2.0",
          "4ba0642078792df63dd3b2e9c8f838f2a3ecf428c7518d5921c0530d53512acf",
          "test", ("pyftpdlib", "tests")),
)

Run = collections.namedtuple("Run", "label env extension")
RUNS = (
    Run("reference", {"ASYNCORE_STANDIN": "reference"}, None),
    Run("extension", {"ASYNCORE_STANDIN": "fastcore"}, True),
    Run("pure-Python", {"ASYNCORE_STANDIN": "fastcore", "FASTCORE_NO_EXTENSIONS": "1"}, False),
)
REFERENCE = RUNS[0].label
FASTCORE_RUNS = tuple(run.label for run in RUNS[1:])

# The environment of the suite's own `make test` (its Makefile's PYTHON_ENV_VARS);
# the caller's FASTCORE_*, PYTEST_* and PYTHONPATH would change what runs.
SUITE_ENV = {"PYTHONWARNINGS": "always", "PYTHONUNBUFFERED": "1",
             "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
DROPPED_ENV_PREFIXES = ("FASTCORE_", "PYTEST_", "PYTHONPATH", "ASYNCORE_STANDIN")
# A traceback of every thread when one test runs this long (a hang shows where
# it is in the log; the run's own timeout then stops it).
FAULTHANDLER_TIMEOUT = 60

# One pytest-xdist worker: the tests still run one at a time in the suite's
# order, and a test that kills its process (the suite's TLS tests can, on the
# reference too) is reported as crashed while a new worker runs the rest.
PYTEST_ARGS = ("-n", "1", "-p", "no:cacheprovider",
               "-o", "faulthandler_timeout=%d" % FAULTHANDLER_TIMEOUT)

# outcome of a test in one attempt, from its phases' reports
PASSED, FAILED, ERROR, CRASHED, SKIPPED = "passed", "failed", "error", "crashed", "skipped"
BAD = (FAILED, ERROR, CRASHED)
# Reruns beyond the first, of tests that fastcore failed every time and the
# reference failed at most once: a test counts when it stays so over seven
# attempts on each side. (pyftpdlib's flaky TLS test passes about 40% of the time
# everywhere: two passes on the reference against two failures on fastcore is
# common, seven against seven about once in 2000 runs. A test the reference
# passes 90% of the time and fastcore never counts 85% of the time.)
EXTRA_RERUNS = 5
DECIDING_ATTEMPTS = 1 + 1 + EXTRA_RERUNS


# pytest stopped before the end on its own (an internal error, an interruption):
# a run so broken goes on once with the tests it did not reach. Seen: on 3.11, a
# worker's "SystemError: AST constructor recursion depth mismatch" (CPython's
# gh-106905, ast.parse racing another thread) while it formatted a failure.
GAVE_UP = "pytest exit status"


class SetupFailed(Exception):
    pass


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV_PREFIXES)}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.update(extra or {})
    return env


def check_call(cmd, cwd=None, env=None):
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    if subprocess.call([str(c) for c in cmd], cwd=cwd, env=env or clean_env()) != 0:
        raise SetupFailed("command failed: %s" % " ".join(str(c) for c in cmd))


def python_info(python, cwd):
    """Version and fastcore facts of the target interpreter, seen from outside the
    checkout (cwd), as the suite's runs will see them."""
    probe = (
        "import json, platform, fastcore\n"
        "try:\n"
        "    import fastcore._core_c\n"
        "    ext = None\n"
        "except ImportError as exc:\n"
        "    ext = str(exc)\n"
        "print(json.dumps({'version': platform.python_version(), 'fastcore': fastcore.__file__,"
        " 'fastcore_version': fastcore.__version__, 'extension_error': ext}))\n"
    )
    result = subprocess.run([python, "-c", probe], cwd=cwd, env=clean_env(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupFailed("%s cannot import fastcore:\n%s" % (python, result.stderr))
    info = json.loads(result.stdout.strip().splitlines()[-1])
    if info["extension_error"] is not None:
        raise SetupFailed("fastcore's extension does not import in %s: %s"
                          % (python, info["extension_error"]))
    return info


def make_venv(base_python, work):
    venv = os.path.join(work, "venv")
    check_call([base_python, "-m", "venv", venv])
    python = os.path.join(venv, "bin", "python")
    check_call([python, "-m", "pip", "install", "-q", ROOT],
               env=clean_env({"FASTCORE_REQUIRE_EXTENSIONS": "1"}))
    return python


def fetch_sdist(python, suite, work):
    downloads = os.path.join(work, "downloads")
    check_call([python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                "-d", downloads, "%s==%s" % (suite.name, suite.version)])
    path = os.path.join(downloads, "%s-%s.tar.gz" % (suite.name, suite.version))
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != suite.sha256:
        raise SetupFailed("%s: sha256 %s, expected %s" % (path, digest, suite.sha256))
    return path


def unpack(sdist, dest):
    """The sdist's tree under dest; returns its root directory."""
    os.makedirs(dest)
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python < 3.12 without the backported filters
            tar.extractall(dest)
    (top,) = os.listdir(dest)
    return os.path.join(dest, top)


def run_pytest(python, tree, run, log_dir, name, timeout, nodeids=()):
    """One pytest run of the suite in tree; returns (status, seconds, outcome log path).

    status is None when pytest finished (all passed or some failed), else why the
    run is broken: it timed out, was killed, or pytest gave up (GAVE_UP ...)."""
    outcomes = os.path.join(log_dir, name + ".jsonl")
    output = os.path.join(log_dir, name + ".log")
    env = clean_env(dict(SUITE_ENV, PYTHONPATH=PLUGIN_DIR, PYTEST_PLUGINS=PLUGIN,
                         ASYNCORE_STANDIN_LOG=outcomes, **run.env))
    cmd = [python, "-m", "pytest"] + list(PYTEST_ARGS) + list(nodeids)
    start = time.monotonic()
    with open(output, "w") as out:
        # its own session: the suite's forked servers are stopped with it on a timeout
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_session(proc)
            rc = None
    seconds = time.monotonic() - start
    if rc is None:
        status = "timed out after %ds" % timeout
    elif rc < 0:
        status = "killed by signal %s" % signal.Signals(-rc).name
    elif rc not in (0, 1):
        status = "%s %d" % (GAVE_UP, rc)
    else:
        status = None
    return status, seconds, outcomes


def stop_session(proc):
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass


def read_outcomes(path):
    """({nodeid: outcome}, [modules records]) from the plugin's log."""
    phases = collections.defaultdict(dict)
    modules = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if record["kind"] == "modules":
                    modules.append(record)
                else:
                    phases[record["nodeid"]][record["when"]] = record["outcome"]
    outcomes = {nodeid: outcome_of(p) for nodeid, p in phases.items()}
    return {t: o for t, o in outcomes.items() if o is not None}, modules


def outcome_of(phases):
    """A test's outcome from its phases' reports; None for a test pytest left
    unfinished (the run stopped in its midst): it was not reached."""
    if "crash" in phases:
        return CRASHED
    if phases.get("call") == "failed":
        return FAILED
    if "failed" in (phases.get("setup"), phases.get("teardown"), phases.get("collect")):
        return ERROR
    if "skipped" in phases.values() or "xfailed" in phases.values():
        return SKIPPED
    return PASSED if "teardown" in phases else None


def check_modules(suite, run, records, info, tree):
    """Why the run did not use the intended modules, or None."""
    if not records:
        return "the plugin recorded no modules (did it load?)"
    fastcore_dir = os.path.dirname(info["fastcore"])
    for record in records:
        files = [record["asyncore"], record["asynchat"]] + list(record["held"].values())
        if None in files[:2]:
            return "asyncore/asynchat were never imported"
        in_fastcore = [os.path.dirname(f) == fastcore_dir for f in files]
        if run.extension is None and any(in_fastcore):
            return "fastcore's modules were used on the reference run"
        if run.extension is not None:
            if not all(in_fastcore):
                return "not all modules used are fastcore's: %s" % record["held"]
            if record.get("fastcore_extension") is not run.extension:
                return "fastcore.EXTENSION is %s" % record.get("fastcore_extension")
        stray = [m for m, f in record["holders"].items()
                 if m.split(".")[0] in suite.packages
                 and not os.path.realpath(f).startswith(os.path.realpath(tree) + os.sep)]
        if stray:
            return "modules loaded from outside the unpacked tree: %s" % stray
    return None


def describe_modules(run, records):
    record = records[0]
    text = "asyncore %s" % record["asyncore"]
    if run.extension is not None:
        text += ", fastcore.EXTENSION=%s" % record.get("fastcore_extension")
    return text


def failing(outcomes):
    return {t for t, o in outcomes.items() if o in BAD}


def attempts(result, test):
    """A test's outcomes in one run: the full run's, then each rerun's that ran it."""
    rounds = [result["outcomes"]] + result["reruns"]
    return [outcomes[test] for outcomes in rounds if test in outcomes]


def passes_all_but_once(tried):
    """The reference's attempts: at least DECIDING_ATTEMPTS, all passed but one."""
    return len(tried) >= DECIDING_ATTEMPTS and sum(o != PASSED for o in tried) <= 1


def is_disputed(results, test):
    """Some fastcore run has failed it every time and the reference passed it in all
    its attempts but one, fewer than DECIDING_ATTEMPTS: more attempts decide."""
    ref = attempts(results[REFERENCE], test)
    return (len(ref) < DECIDING_ATTEMPTS and PASSED in ref
            and sum(o != PASSED for o in ref) <= 1
            and any(final_status(attempts(results[label], test)) == "fail"
                    for label in FASTCORE_RUNS))


def final_status(attempts):
    """One test in one run, from its attempts: pass / fail (every attempt failed,
    errored or crashed) / flaky (some of each) / skip / absent (never ran)."""
    if not attempts:
        return "absent"
    if attempts[0] == SKIPPED:
        return "skip"
    if all(outcome == PASSED for outcome in attempts):
        return "pass"
    if all(outcome in BAD for outcome in attempts):
        return "fail"
    return "flaky"


def short_summary(log_path, limit=60):
    """pytest's "short test summary info" block, or the log's tail."""
    with open(log_path, errors="replace") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if "short test summary info" in line:
            return lines[i:i + limit]
    return lines[-limit:]


def run_suite(python, info, suite, work, timeout, keep):
    """Runs the suite three times, and its failures again; prints the table and the
    differences; returns (fastcore tests passed, counted failures)."""
    print("\n== %s %s on Python %s" % (suite.name, suite.version, info["version"]), flush=True)
    sdist = fetch_sdist(python, suite, work)
    check_call([python, "-m", "pip", "install", "-q",
                "%s[%s] @ file://%s" % (suite.name, suite.extra, sdist)])
    log_dir = os.path.join(work, suite.name + "-logs")
    os.makedirs(log_dir, exist_ok=True)

    results = {}
    for index, run in enumerate(RUNS):
        tree = unpack(sdist, os.path.join(work, "%s-%d" % (suite.name, index)))
        name = "%d-%s" % (index, run.label)
        status, seconds, outcome_log = run_pytest(python, tree, run, log_dir, name, timeout)
        outcomes, modules = read_outcomes(outcome_log)
        status = (status or check_modules(suite, run, modules, info, tree)
                  or (None if outcomes else "no test outcomes recorded"))
        results[run.label] = dict(run=run, tree=tree, status=status, seconds=seconds,
                                  outcomes=outcomes, modules=modules,
                                  log=os.path.join(log_dir, name + ".log"), reruns=[])
        print("-- %-11s %5.1fs  %s  %s" % (
            run.label, seconds, status or "ok",
            describe_modules(run, modules) if modules else ""), flush=True)

    # A run pytest gave up on goes on once, in the same tree, with the tests the
    # other runs reached and it did not.
    everywhere = set().union(*(r["outcomes"] for r in results.values()))
    for index, run in enumerate(RUNS):
        r = results[run.label]
        unreached = sorted(everywhere - set(r["outcomes"]))
        if not (r["status"] or "").startswith(GAVE_UP) or not unreached:
            continue
        print("-- %-11s %s: goes on with the %d test(s) it did not reach"
              % (run.label, r["status"], len(unreached)), flush=True)
        status, seconds, outcome_log = run_pytest(
            python, r["tree"], run, log_dir, "%d-%s-resumed" % (index, run.label),
            timeout, unreached)
        outcomes, modules = read_outcomes(outcome_log)
        r["outcomes"].update((t, o) for t, o in outcomes.items() if t in unreached)
        r["seconds"] += seconds
        r["resumed"] = "resumed after " + r["status"]
        r["status"] = status or check_modules(suite, run, modules, info, r["tree"])
        print("-- %-11s resumed %5.1fs  %s" % (run.label, seconds, r["status"] or "ok"),
              flush=True)

    def rerun(tests, why):
        print("-- %d test(s) %s: each run runs them once more" % (len(tests), why), flush=True)
        for index, run in enumerate(RUNS):
            r = results[run.label]
            name = "%d-%s-rerun%d" % (index, run.label, len(r["reruns"]) + 1)
            status, seconds, outcome_log = run_pytest(python, r["tree"], run, log_dir, name,
                                                      timeout, tests)
            r["reruns"].append(read_outcomes(outcome_log)[0])
            print("-- %-11s rerun %5.1fs  %s" % (run.label, seconds, status or "ok"),
                  flush=True)

    to_rerun = sorted(set().union(*(failing(r["outcomes"]) for r in results.values())))
    if to_rerun:
        rerun(to_rerun, "failed, errored or crashed in a run")
    for _ in range(EXTRA_RERUNS):
        disputed = [t for t in to_rerun if is_disputed(results, t)]
        if not disputed:
            break
        rerun(disputed, "failing every time on fastcore, all but once on the reference")
    return report(suite, results, keep)


# compare()'s answer: lists of (run label, test, its attempts shown), and counts
Comparison = collections.namedtuple(
    "Comparison", "regressions flaky_fastcore flaky_reference both reference_only other "
                  "not_run passed")


def compare(results):
    """The fastcore runs' tests against the reference's, from every attempt."""
    tests = sorted(set().union(*(r["outcomes"] for r in results.values())))

    def shown(label, test):
        return "%s: %s" % (label, ", then ".join(attempts(results[label], test)) or "not run")

    status = {label: {t: final_status(attempts(r, t)) for t in tests}
              for label, r in results.items()}
    for t in tests:
        if status[REFERENCE][t] == "flaky" and passes_all_but_once(
                attempts(results[REFERENCE], t)):
            status[REFERENCE][t] = "pass"
    ref = status[REFERENCE]
    # A test counts when fastcore failed it every time and the reference passed it
    # every time, or all but once in DECIDING_ATTEMPTS (the reruns made as many of
    # either while the test might count). Otherwise a test that is
    # flaky on the reference says nothing of fastcore; it is listed with every
    # attempt on each side.
    regressions, flaky_fastcore, both, reference_only, other = [], [], [], [], []
    not_run = collections.Counter()  # tests a broken run never reached
    for label in FASTCORE_RUNS:
        fc = status[label]
        for t in tests:
            row = (label, t, "%s; %s" % (shown(REFERENCE, t), shown(label, t)))
            if fc[t] == "absent" and results[label]["status"]:
                not_run[label] += ref[t] == "pass"
            elif ref[t] == "pass" and fc[t] in ("fail", "absent"):
                regressions.append(row)
            elif ref[t] == "pass" and fc[t] == "flaky":
                flaky_fastcore.append(row)
            elif ref[t] == "fail" == fc[t]:
                both.append(row)
            elif ref[t] == "fail":
                reference_only.append(row)
            elif ref[t] != fc[t] and ref[t] != "flaky":
                other.append(row)
    flaky_reference = [(REFERENCE, t, "; ".join(shown(label, t) for label in results))
                       for t in tests if ref[t] == "flaky"]
    passed = sum(1 for label in FASTCORE_RUNS for t in tests
                 if status[label][t] in ("pass", "flaky"))
    return Comparison(regressions, flaky_fastcore, flaky_reference, both, reference_only,
                      other, not_run, passed)


def report(suite, results, keep):
    print("\n%-12s %7s %7s %7s %7s %7s %8s  %s" % (
        "run", "passed", "failed", "errors", "crashed", "skipped", "seconds", "status"))
    for run in RUNS:
        r = results[run.label]
        counts = collections.Counter(r["outcomes"].values())
        print("%-12s %7d %7d %7d %7d %7d %8.1f  %s" % (
            run.label, counts[PASSED], counts[FAILED], counts[ERROR], counts[CRASHED],
            counts[SKIPPED], r["seconds"], r["status"] or r.get("resumed", "ok")))

    found = compare(results)

    def listing(title, rows):
        if rows:
            print("\n%s (%d):" % (title, len(rows)))
            for label, test, outcomes in rows:
                print("  %-11s %s\n  %11s   %s" % (label, test, "", outcomes))

    listing("Pass on the reference, fail on fastcore (counted)", found.regressions)
    listing("Flaky on fastcore, passing on the reference (not counted)",
            found.flaky_fastcore)
    listing("Flaky on the reference (not counted)", found.flaky_reference)
    listing("Fail on both (not counted)", found.both)
    listing("Fail on the reference only", found.reference_only)
    listing("Other differences (not counted)", found.other)

    def log_name(label):
        return results[label]["log"] if keep else "(kept with --work DIR)"

    broken = [label for label, r in results.items() if r["status"]]
    for label in broken:
        print("\n%s run broken: %s; %d test(s) passing on the reference did not run; "
              "its log %s ends:" % (label, results[label]["status"], found.not_run[label],
                                   log_name(label)))
        print("\n".join(short_summary(results[label]["log"])))
    failed_runs = {row[0] for row in found.regressions}
    for label in sorted(failed_runs - set(broken)):
        print("\n%s run, log %s:" % (label, log_name(label)))
        print("\n".join(short_summary(results[label]["log"])))

    failed = len(found.regressions) + len(broken)
    print("\n%s %s: fastcore runs %d passed, %d failed"
          % (suite.name, suite.version, found.passed, failed), flush=True)
    return found.passed, failed


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--python", help="interpreter of a venv where fastcore is installed")
    target.add_argument("--base-python",
                        help="make a venv from this interpreter and install this checkout")
    parser.add_argument("--work", help="work directory (default: a temporary one, removed)")
    parser.add_argument("--timeout", type=int, default=300,
                        help="seconds one pytest run may take (default 300)")
    args = parser.parse_args(argv)

    work = os.path.abspath(args.work) if args.work else tempfile.mkdtemp(prefix="third-party.")
    os.makedirs(work, exist_ok=True)
    start = time.monotonic()
    passed = failed = 0
    try:
        python = (os.path.abspath(args.python) if args.python
                  else make_venv(args.base_python, work))
        info = python_info(python, work)
        print("-- Python %s (%s), fastcore %s from %s"
              % (info["version"], python, info["fastcore_version"], info["fastcore"]))
        for suite in SUITES:
            suite_passed, suite_failed = run_suite(python, info, suite, work, args.timeout,
                                                   keep=bool(args.work))
            passed += suite_passed
            failed += suite_failed
    except SetupFailed as exc:
        print("third-party setup failed: %s" % exc, flush=True)
        failed += 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print("-- %.0fs in all" % (time.monotonic() - start))
    print("third-party: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
