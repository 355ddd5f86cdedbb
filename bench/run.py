"""fastcore side by side with the reference asyncore, asyncio and uvloop.

    python bench/run.py                 # quick: every benchmark, small, < 2 minutes
    python bench/run.py --full          # longer windows, more repeats, 10,000 connections
    python bench/run.py --only echo --loads ping-pong,idle
    python bench/run.py --callgrind     # also ping-pong under callgrind (instructions/msg)
    python bench/run.py --only callgrind --callgrind --callgrind-loads pipelined,bulk

Prints one table per benchmark and load, every implementation with its ratio to
fastcore (extension), and the issue's targets; writes bench/results/<stamp>.json
and, with matplotlib installed, bench/results/<stamp>.png. bench/README.md says
what each figure means.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import echo  # noqa: E402
import impls  # noqa: E402
import report  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def machine():
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": os.getloadavg(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    # From bench/, not the checkout, whose fastcore/ would shadow the installed package.
    probe = subprocess.run(
        [sys.executable, "-c", "import fastcore; print(fastcore.__version__, fastcore.EXTENSION,"
         " fastcore.default_backend())"], capture_output=True, text=True,
        env=impls.environment("ext"), cwd=HERE,
    )
    info["fastcore"] = probe.stdout.strip() or probe.stderr.strip()[-200:]
    try:
        import uvloop

        info["uvloop"] = uvloop.__version__
    except ImportError:
        info["uvloop"] = "not installed"
    info["fd_limit"] = impls.raise_fd_limit()
    return info


def run_micro(full, only):
    """Two processes: the extension beside the reference, the pure core beside it.

    Returns {"ext", "ref", "pure", "ref_beside_pure"} (or {"error"} for a process
    that failed).
    """
    result = {}
    for impl, keys in (("ext", ("ext", "ref")), ("pure", ("pure", "ref_beside_pure"))):
        t = time.time()
        cmd = [sys.executable, os.path.join(HERE, "micro.py"), "%s,ref" % impl]
        if not full:
            cmd.append("--quick")
        if only:
            cmd += ["--only", only]
        done = subprocess.run(cmd, capture_output=True, text=True, env=impls.environment(impl))
        if done.returncode:
            error = {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
            for key in keys:
                result[key] = error
            log("  micro %s,ref: %s" % (impl, error["error"]))
            continue
        out = json.loads(done.stdout)
        result[keys[0]], result[keys[1]] = out[impl], out["ref"]
        log("  micro %s,ref %.1f s" % (impl, time.time() - t))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full runs (several minutes)")
    parser.add_argument("--only", default="micro,echo",
                        help="comma-separated parts: micro, echo (default both)")
    parser.add_argument("--micro", help="comma-separated: iteration,doc_iteration,dispatch,"
                        "chat_input,push")
    parser.add_argument("--loads", help="comma-separated: ping-pong,pipelined,bulk,idle,accept")
    parser.add_argument("--repeats", type=int, help="echo runs per server and load "
                        "(default 1 quick, 3 full)")
    parser.add_argument("--callgrind", nargs="?", const=20000, type=int, metavar="MESSAGES",
                        help="also count ping-pong instructions per message under callgrind")
    parser.add_argument("--callgrind-loads", default="ping-pong",
                        help="comma-separated loads for --callgrind: "
                        + ",".join(echo.CALLGRIND_LOADS))
    parser.add_argument("--servers", help="comma-separated servers (default all): "
                        + ",".join(name for name, _, _ in echo.SERVERS))
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    try:
        import fastcore  # noqa: F401
    except ImportError:
        sys.exit("fastcore is not importable: pip install -e '.[bench]' first, or "
                 "`make build` and PYTHONPATH=. python bench/run.py")
    started = time.time()
    result = {"mode": "full" if args.full else "quick", "machine": machine(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    m = result["machine"]
    log("%s; %s CPUs (%s); Python %s; fastcore %s; uvloop %s; fd limit %d; load %s" % (
        m.get("cpu", "?"), m["cpus"], m["platform"], m["python"], m["fastcore"], m["uvloop"],
        m["fd_limit"], " ".join("%.2f" % x for x in m["loadavg_start"])))

    if "micro" in parts:
        log("microbenchmarks")
        result["micro"] = run_micro(args.full, args.micro)
        print(report.micro_tables(result["micro"]))
        sys.stdout.flush()

    if "echo" in parts or args.callgrind:
        why = echo.build_loadgen()
        if why:
            log("echo benchmark cannot run: " + why)
            result["echo_skipped"] = why
            parts.discard("echo")
            args.callgrind = None

    if "echo" in parts:
        loads = echo.loads(args.full)
        chosen = args.loads.split(",") if args.loads else list(loads)
        repeats = args.repeats or (3 if args.full else 1)
        cpus = echo.cpu_plan()
        if cpus[0] is None:
            log("one CPU: server and load generator share it, figures include the contention")
        result["echo"] = []
        servers = args.servers.split(",") if args.servers else None
        for name in chosen:
            description, params = loads[name]
            log("echo load %s: %s" % (name, description))
            record = echo.run_load(name, description, params, args.full, repeats, log, servers)
            result["echo"].append(record)
            print(report.echo_table(record))
            sys.stdout.flush()

    if args.callgrind:
        servers = args.servers.split(",") if args.servers else None
        result["callgrind"] = echo.callgrind_loads(
            args.callgrind, args.callgrind_loads.split(","), log, servers)
        for load, rows in result["callgrind"].items():
            print(report.callgrind_table(rows, load))

    print(report.targets_table(result, args.full))
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["seconds"] = time.time() - started
    print("\n%s run: %.0f s; load average %s at the start, %s at the end (other processes "
          "share the machine: compare ratios within one run)" % (
              result["mode"], result["seconds"],
              " ".join("%.2f" % x for x in m["loadavg_start"]),
              " ".join("%.2f" % x for x in m["loadavg_end"])))
    if not args.no_save:
        os.makedirs(RESULTS, exist_ok=True)
        stem = os.path.join(RESULTS, time.strftime("%Y%m%d-%H%M%S") + "-" + result["mode"])
        with open(stem + ".json", "w") as f:
            json.dump(result, f, indent=1)
        print("results: %s.json" % os.path.relpath(stem))
        try:
            report.plot(result, stem + ".png")
            print("plot: %s.png" % os.path.relpath(stem))
        except ImportError:
            print("plot: matplotlib not installed (pip install '.[bench]')")


if __name__ == "__main__":
    main()
