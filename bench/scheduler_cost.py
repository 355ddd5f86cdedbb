"""What timers and idle timeouts add to one loop iteration with N idle connections.

    python bench/scheduler_cost.py                 # the implementation in use
    FASTCORE_NO_EXTENSIONS=1 python bench/scheduler_cost.py

Three set-ups on the same N idle connected async_chat dispatchers, measured
in turns in one process (median over repeats of ``loop(timeout=0, count=R)``
divided by R): no timers; every dispatcher with an idle timeout (an hour);
the idle timeouts plus 1,000 pending call_later timers and a call_every.
"""

import argparse
import resource
import socket
import statistics
import time

import fastcore
from fastcore import asynchat, asyncore


class Idle(asynchat.async_chat):
    def collect_incoming_data(self, data):
        pass

    def found_terminator(self):
        pass


def per_iteration(socket_map, count):
    t = time.perf_counter()
    asyncore.loop(timeout=0, map=socket_map, count=count)
    return (time.perf_counter() - t) / count * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.connections + 50 > hard:
        raise SystemExit("the fd limit is %d: use --connections %d" % (hard, hard - 100))

    socket_map = {}
    dispatchers = []
    for _ in range(args.connections // 2):
        a, b = socket.socketpair()
        dispatchers += [Idle(a, map=socket_map), Idle(b, map=socket_map)]
    per_iteration(socket_map, 3)  # registers every fd
    count = max(3, int(0.05 / max(per_iteration(socket_map, 20) * 1e-6, 1e-7)))

    def no_timers():
        for d in dispatchers:
            fastcore.set_idle_timeout(d, None)

    def idle_timeouts():
        for d in dispatchers:
            fastcore.set_idle_timeout(d, 3600)

    timers = []

    def idle_timeouts_and_timers():
        idle_timeouts()
        timers.extend(fastcore.call_later(3600 + i, print) for i in range(1000))
        timers.append(fastcore.call_every(3600, print))

    setups = [("no timers", no_timers), ("idle timeouts", idle_timeouts),
              ("idle timeouts + 1,001 timers", idle_timeouts_and_timers)]
    samples = {name: [] for name, _ in setups}
    for _ in range(args.repeats):
        for name, setup in setups:
            for timer in timers:
                timer.cancel()
            timers.clear()
            setup()
            per_iteration(socket_map, 3)
            samples[name].append(per_iteration(socket_map, count))
    for timer in timers:
        timer.cancel()
    impl = "extension" if fastcore.EXTENSION else "pure Python"
    print("fastcore %s (%s), %d idle connections, %d iterations x %d repeats"
          % (impl, fastcore.default_backend(), args.connections, count, args.repeats))
    base = statistics.median(samples["no timers"])
    for name, _ in setups:
        median = statistics.median(samples[name])
        print("  %-30s median %9.2f us/iteration (min %.2f, max %.2f)  x%.2f"
              % (name, median, min(samples[name]), max(samples[name]), median / base))
    asyncore.close_all(socket_map)


if __name__ == "__main__":
    main()
