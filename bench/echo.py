"""The end-to-end echo benchmark: servers (bench/echo_server.py, and the C floor
bench/c_echo_server.c) under bench/loadgen.c."""

import json
import os
import signal
import subprocess
import sys
import time

import impls

HERE = os.path.dirname(os.path.abspath(__file__))
# The repository's build/ (ignored by git, pruned from the sdist).
BUILD = os.path.join(os.path.dirname(HERE), "build", "bench")
LOADGEN = os.path.join(BUILD, "loadgen")
LOADGEN_SOURCE = os.path.join(HERE, "loadgen.c")
# The C epoll server: the floor, what a line echo costs without Python.
C_SERVER = os.path.join(BUILD, "c_echo_server")
C_SERVER_SOURCE = os.path.join(HERE, "c_echo_server.c")

# (name, label, echo_server.py arguments; or [C_SERVER]: that binary, not echo_server.py)
SERVERS = [
    ("ext", "fastcore (extension)", ["ext"]),
    ("pure", "fastcore (pure Python)", ["pure"]),
    ("ref", "reference asyncore", ["ref"]),
    ("asyncio", "asyncio Protocol", ["asyncio"]),
    ("uvloop", "uvloop Protocol", ["uvloop"]),
    ("ext-raw", "fastcore (extension), raw dispatcher", ["ext", "--raw"]),
    ("ref-raw", "reference asyncore, raw dispatcher", ["ref", "--raw"]),
    ("ext-doc", "fastcore (extension), documentation's dispatcher", ["ext", "--doc"]),
    ("ref-doc", "reference asyncore, documentation's dispatcher", ["ref", "--doc"]),
    ("c-epoll", "C epoll server", [C_SERVER]),
]


def loads(full):
    """The loads: name -> (description, loadgen arguments)."""
    idle = 10000 if full else 2000
    storm = 10000 if full else 2000
    result = {
        "ping-pong": ("100 connections, one 64 B line in flight each",
                      {"conns": 100, "size": 64, "batch": 1}),
        "pipelined": ("100 connections, 16 x 64 B lines per write",
                      {"conns": 100, "size": 64, "batch": 16}),
        "bulk": ("10 connections, one 16 KiB line in flight each",
                 {"conns": 10, "size": 16384, "batch": 1}),
        "idle": ("ping-pong on 100 connections with %d more idle" % idle,
                 {"conns": 100, "size": 64, "batch": 1, "idle": idle}),
        "accept": ("accept storm: %d connections, each answered once, kept open" % storm,
                   {"mode": "accept", "conns": storm, "size": 64}),
    }
    if full:
        # One active connection: every message pays a whole iteration over the idle ones.
        result["idle-1"] = ("ping-pong on 1 connection with %d more idle" % idle,
                            {"conns": 1, "size": 64, "batch": 1, "idle": idle})
    return result


def compile_c(source, target, what):
    """Compile one C program of the bench into build/bench if needed (gcc -O2, or $CC);
    returns None, or why it cannot run."""
    if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(source):
        return None
    os.makedirs(BUILD, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    cmd = [cc, "-O2", "-Wall", "-o", target, source]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        return "no C compiler (%s)" % cc
    except subprocess.CalledProcessError as exc:
        return "%s did not compile: %s" % (what, exc.stderr.strip()[-500:])
    return None


def build_loadgen():
    """Compile the load generator if needed; returns None, or why it cannot run."""
    return compile_c(LOADGEN_SOURCE, LOADGEN, "the load generator")


def cpu_plan():
    """(server CPU, client CPU) to pin to, or (None, None) with one CPU."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def server_available(name):
    """None when this server can run here, else why not."""
    if name == "c-epoll":
        return compile_c(C_SERVER_SOURCE, C_SERVER, "the C server")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "not installed"
    if name.startswith("ref"):
        probe = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", "import asyncore, asynchat"],
            capture_output=True,
        )
        if probe.returncode:
            return "not installed (pip install pyasyncore pyasynchat)"
    if name.startswith("ext"):
        # From bench/: "-c" puts the current directory first on sys.path, and a
        # checkout's fastcore/ (no extension built in it) would hide the installed one.
        probe = subprocess.run(
            [sys.executable, "-c", "import fastcore, sys; sys.exit(not fastcore.EXTENSION)"],
            capture_output=True, env=impls.environment("ext"), cwd=HERE,
        )
        if probe.returncode:
            return "extension not built"
    return None


def start_server(args, impl, cpu, wrapper=()):
    """Start a server; returns (process, port)."""
    if args[0] == C_SERVER:
        cmd = list(wrapper) + args   # the compiled server runs as itself
    else:
        cmd = list(wrapper) + [sys.executable, os.path.join(HERE, "echo_server.py")] + args
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=impls.environment(impl), preexec_fn=pin(cpu),
    )
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError("server did not start: %s" % err.strip()[-500:])
    return proc, int(line.split()[1])


def stop_server(proc):
    """Stop a server; returns its stderr, or raises if it had died on its own."""
    died = proc.poll()
    if died is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if died is not None:
        raise RuntimeError("the server exited (%s) during the run: %s" % (died, err[-500:]))
    return err


def pin(cpu):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_loadgen(port, pid, params, cpu, timeout):
    args = [LOADGEN, "port=%d" % port, "pid=%d" % pid, "timeout=%g" % timeout]
    args += ["%s=%s" % item for item in params.items()]
    done = subprocess.run(
        args, capture_output=True, text=True, preexec_fn=pin(cpu), timeout=timeout * 3 + 60
    )
    if done.returncode:
        raise RuntimeError(done.stderr.strip()[-500:] or "loadgen exited %d" % done.returncode)
    return json.loads(done.stdout)


def run_one(server, impl, load_params, window, cpus, timeout):
    """One server process, one load: the loadgen's figures."""
    params = dict(load_params)
    if params.get("mode") != "accept":
        params.update(warmup=window[0], duration=window[1])
    proc, port = start_server(server, impl, cpus[0])
    try:
        result = run_loadgen(port, proc.pid, params, cpus[1], timeout)
    except Exception:
        proc.kill()
        proc.communicate()
        raise
    stop_server(proc)
    return result


def fd_need(params):
    return params.get("conns", 0) + params.get("idle", 0) + 64


def run_load(name, description, params, full, repeats, log, only=None):
    """Every server (or those named in only) under one load; returns the load's JSON record."""
    fd_limit = impls.raise_fd_limit()
    cpus = cpu_plan()
    window = (1.0, 3.0) if full else (0.3, 1.0)
    timeout = 600 if full else 120
    record = {"load": name, "description": description, "params": params,
              "pinned": cpus[0] is not None, "rows": []}
    servers = []   # (row, args) of the servers that can run
    for server, label, args in SERVERS:
        if only is not None and server not in only:
            continue
        row = {"server": server, "label": label, "runs": []}
        record["rows"].append(row)
        why = server_available(server)
        if why is None and fd_need(params) > fd_limit:
            why = "needs %d fds, the limit is %d" % (fd_need(params), fd_limit)
        if why:
            row["skipped"] = why
            log("  %-40s %s" % (label, why))
        else:
            servers.append((row, args))
    # Repeats go round the servers (a, b, c, a, b, c, ...): a drift in the
    # machine's load then touches every server alike.
    for _ in range(repeats):
        for row, args in servers:
            if "error" in row:
                continue
            t = time.time()
            try:
                row["runs"].append(run_one(args, args[0], params, window, cpus, timeout))
            except Exception as exc:  # a failed run is reported in its row, the rest go on
                row["error"] = str(exc)
                log("  %-40s FAILED: %s" % (row["label"], row["error"]))
                continue
            log("  %-40s %.1f s" % (row["label"], time.time() - t))
    return record


CALLGRIND_LOADS = ("ping-pong", "pipelined", "bulk")


def callgrind_loads(messages, names, log, servers=None):
    """{load: rows} of callgrind_pingpong for each of the named loads
    (ping-pong, pipelined, bulk: the loads' parameters, fewer messages for bulk)."""
    defined = loads(False)
    result = {}
    for name in names:
        params = {k: v for k, v in defined[name][1].items() if k in ("conns", "size", "batch")}
        count = messages // 4 if name == "bulk" else messages
        log("callgrind, %s, %d messages" % (name, count))
        result[name] = callgrind_pingpong(count, log, params, servers)
    return result


def callgrind_pingpong(messages, log, params=None, servers=None):
    """User-space instructions per message of each asyncore server, by callgrind
    (ping-pong unless params give another load).

    The server runs under valgrind; after a warm-up session its counters are
    zeroed, one session of ``messages`` lines runs, and the dump's total is divided
    by the lines. Instruction counts do not depend on the machine's load.
    """
    out_dir = os.path.join(BUILD, "callgrind")
    os.makedirs(out_dir, exist_ok=True)
    base_params = dict(params or {"conns": 100, "size": 64, "batch": 1}, warmup=0.5)
    rows = []
    for server, label, args in SERVERS:
        if servers is not None and server not in servers:
            continue
        why = server_available(server)
        if why:
            rows.append({"server": server, "label": label, "skipped": why})
            continue
        out = os.path.join(out_dir, "%s.out" % server)
        for stale in os.listdir(out_dir):
            if stale.startswith(server + ".out"):
                os.unlink(os.path.join(out_dir, stale))
        wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
        proc, port = start_server(args, args[0], None, wrapper)
        try:
            params = base_params
            run_loadgen(port, proc.pid, dict(params, messages=2000), None, 600)
            subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                           capture_output=True)
            result = run_loadgen(port, proc.pid, dict(params, warmup=0, messages=messages),
                                 None, 600)
            subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True,
                           capture_output=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
        dumps = sorted(f for f in os.listdir(out_dir) if f.startswith(server + ".out."))
        instructions = read_callgrind_total(os.path.join(out_dir, dumps[0]))
        per = instructions / result["messages"]
        rows.append({"server": server, "label": label, "messages": result["messages"],
                     "instructions": instructions, "per_message": per})
        log("  %-40s %.0f instructions per message" % (label, per))
    return rows


def read_callgrind_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no total in %s" % path)
