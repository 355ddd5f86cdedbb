"""Cost of one loop iteration over N idle async_chat dispatchers, in instructions.

    python bench/iteration_cost.py [--sizes 10,1000,10000]
    FASTCORE_NO_EXTENSIONS=1 python bench/iteration_cost.py

For each N the workload runs twice under callgrind, with two iteration counts;
the difference of the instruction totals divided by the difference of the
counts is the cost of one iteration, whatever the set-up cost (the load of a
shared machine does not change it). The CPU time per iteration of a run
outside valgrind (time.thread_time, noisy on a shared machine) is printed
beside it.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import time

ITERATIONS = (200, 2200)


def workload(n, iterations):
    """N idle dispatchers (both ends of N/2 socketpairs), then the loop: its CPU time."""
    from fastcore import asynchat, asyncore

    class Idle(asynchat.async_chat):
        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            pass

    socket_map = {}
    for _ in range(n // 2):
        for sock in socket.socketpair():
            Idle(sock, map=socket_map)
    asyncore.loop(timeout=0, map=socket_map, count=10)
    started = time.thread_time()
    asyncore.loop(timeout=0, map=socket_map, count=iterations)
    elapsed = time.thread_time() - started
    asyncore.close_all(socket_map)
    return elapsed


def instructions(n, iterations):
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         os.path.abspath(__file__), "--once", str(n), str(iterations)],
        capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if not found:
        raise SystemExit("no callgrind total in:\n" + done.stderr)
    return int(found.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--once", nargs=2, type=int, metavar=("N", "ITERATIONS"),
                        help="run the workload once (what callgrind runs)")
    args = parser.parse_args()
    if args.once:
        workload(*args.once)
        return
    import fastcore

    print("Python %s, fastcore %s" % (sys.version.split()[0],
                                      "extension" if fastcore.EXTENSION else "pure Python"))
    print("%8s %14s %12s" % ("idle", "instructions", "us (CPU)"))
    for n in map(int, args.sizes.split(",")):
        few, many = (instructions(n, count) for count in ITERATIONS)
        per = (many - few) / (ITERATIONS[1] - ITERATIONS[0])
        us = workload(n, 20000) / 20000 * 1e6
        print("%8d %14.0f %12.2f" % (n, per, us), flush=True)


if __name__ == "__main__":
    main()
