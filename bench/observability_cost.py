"""Cost of fastcore's statistics and debug mode on the loop's hot path.

    python bench/observability_cost.py
    FASTCORE_NO_EXTENSIONS=1 python bench/observability_cost.py
    python bench/observability_cost.py --baseline /path/to/other/checkout

Two workloads, each with debug mode off and on, one process per sample:

- ping-pong: two async_chat dispatchers on a socketpair bounce one line;
  time per message (one read event, one push, one send each);
- idle iterations: loop(timeout=0) over 100 idle connections; time per
  iteration (the per-iteration clock reads of the statistics weigh most here).

The counters cannot be switched off; ``--baseline DIR`` runs the same
workloads (debug off) on the fastcore found in DIR (an in-place build of
another commit, e.g. the one before the statistics) for comparison.
Prints the median and the minimum of ``--repeats`` samples. Wall-clock
figures on a shared machine are noisy; for instruction counts run one
configuration under callgrind, at two sizes, and divide the difference:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/observability_cost.py --once ping-pong off 4000
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time


def ping_pong(asyncore, asynchat, messages):
    class Bouncer(asynchat.async_chat):
        def __init__(self, sock, map):
            asynchat.async_chat.__init__(self, sock, map)
            self.set_terminator(b"\n")
            self.count = 0

        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            self.count += 1
            self.push(b"ping\n")

    socket_map = {}
    a, b = socket.socketpair()
    left = Bouncer(a, socket_map)
    Bouncer(b, socket_map)
    left.push(b"ping\n")
    asyncore.loop(timeout=0, map=socket_map, count=10)
    start = time.perf_counter()
    seen = left.count
    # Each iteration moves one message each way.
    asyncore.loop(timeout=1, map=socket_map, count=messages // 2)
    elapsed = time.perf_counter() - start
    done = 2 * (left.count - seen)
    asyncore.close_all(socket_map)
    return elapsed / done * 1e6


def idle_iterations(asyncore, asynchat, iterations, connections=100):
    class Idle(asynchat.async_chat):
        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            pass

    socket_map = {}
    peers = []
    for _ in range(connections // 2):
        a, b = socket.socketpair()
        Idle(a, map=socket_map)
        Idle(b, map=socket_map)
        peers.append((a, b))
    asyncore.loop(timeout=0, map=socket_map, count=10)
    start = time.perf_counter()
    asyncore.loop(timeout=0, map=socket_map, count=iterations)
    elapsed = time.perf_counter() - start
    asyncore.close_all(socket_map)
    return elapsed / iterations * 1e6


WORKLOADS = {"ping-pong": ping_pong, "idle": idle_iterations}


def set_debug(on):
    import fastcore.debug

    if on:
        fastcore.debug.enable()
    else:
        fastcore.debug.disable()


def sample(debug, n=20000):
    """One sample of each workload, this process's fastcore: (us, us)."""
    from fastcore import asynchat, asyncore

    if debug is not None:
        set_debug(debug == "on")
    return tuple(workload(asyncore, asynchat, n) for workload in WORKLOADS.values())


def run_child(tree, debug):
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", debug],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    label, pp, idle = out.strip().split("|")
    return label, float(pp), float(idle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--baseline", metavar="DIR", help="another fastcore checkout to compare")
    parser.add_argument(
        "--once",
        nargs=3,
        metavar=("WORKLOAD", "DEBUG", "N"),
        help="run one workload once (ping-pong|idle, on|off, messages or iterations): "
        "for instruction counts under valgrind --tool=callgrind",
    )
    parser.add_argument("--child", choices=("on", "off", "none"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        from fastcore import asynchat, asyncore

        name, debug, n = args.once
        if debug == "on":
            set_debug(True)
        print("%.3f" % WORKLOADS[name](asyncore, asynchat, int(n)))
        return
    if args.child:
        import fastcore

        pp, idle = sample(None if args.child == "none" else args.child)
        label = "extension" if fastcore.EXTENSION else "pure Python"
        print("%s|%r|%r" % (label, pp, idle))
        return
    # One process per sample, the configurations taking turns: the machine's
    # load drifting during the run weighs on all of them alike.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    configs = [("this tree", here, "off"), ("this tree", here, "on")]
    if args.baseline:
        configs.append(("baseline", os.path.abspath(args.baseline), "none"))
    samples = {config: [] for config in configs}
    for _ in range(args.repeats):
        for config in configs:
            samples[config].append(run_child(config[1], config[2]))
    print("%-36s %22s %22s" % ("", "ping-pong us/message", "idle us/iteration"))
    print("%-36s %22s %22s" % ("", "median (min)", "(100 conns) median (min)"))
    for (name, _, debug), rows in samples.items():
        label = rows[0][0]
        pp = [r[1] for r in rows]
        idle = [r[2] for r in rows]
        title = "%s, %s%s" % (name, label, "" if debug == "none" else ", debug " + debug)
        print(
            "%-36s %13.3f (%6.3f) %13.3f (%6.3f)"
            % (title, statistics.median(pp), min(pp), statistics.median(idle), min(idle))
        )


if __name__ == "__main__":
    main()
