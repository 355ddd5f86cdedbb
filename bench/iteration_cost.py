"""Cost of one loop iteration with N idle connected async_chat dispatchers.

    python bench/iteration_cost.py                 # fastcore, the implementation in use
    FASTCORE_NO_EXTENSIONS=1 python bench/iteration_cost.py
    python bench/iteration_cost.py --reference     # the standard asyncore (poll2)

Prints the median over repeats of ``loop(timeout=0, count=R)`` divided by R.
"""

import argparse
import resource
import socket
import statistics
import time


def load(reference):
    if reference:
        import warnings

        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat
        import asyncore

        return asyncore, asynchat, "reference asyncore"
    import fastcore
    from fastcore import asynchat, asyncore

    impl = "extension" if fastcore.EXTENSION else "pure Python"
    return asyncore, asynchat, "fastcore %s (%s)" % (impl, fastcore.default_backend())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--use-poll", action="store_true", help="poll()-style dispatch")
    args = parser.parse_args()
    asyncore, asynchat, label = load(args.reference)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    class Idle(asynchat.async_chat):
        def collect_incoming_data(self, data):
            pass

        def found_terminator(self):
            pass

    use_poll = args.use_poll or args.reference  # select() cannot take 10,000 fds
    print("%s, use_poll=%s" % (label, use_poll))
    for n in [int(s) for s in args.sizes.split(",")]:
        if n + 50 > hard:
            print("%6d idle: skipped, the fd limit is %d" % (n, hard))
            continue
        socket_map = {}
        for _ in range(n // 2):
            a, b = socket.socketpair()
            Idle(a, map=socket_map)
            Idle(b, map=socket_map)
        asyncore.loop(timeout=0, map=socket_map, count=3, use_poll=use_poll)
        # Enough iterations for ~50 ms per sample.
        t = time.perf_counter()
        asyncore.loop(timeout=0, map=socket_map, count=3, use_poll=use_poll)
        per = max((time.perf_counter() - t) / 3, 1e-7)
        count = max(3, min(100000, int(0.05 / per)))
        samples = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            asyncore.loop(timeout=0, map=socket_map, count=count, use_poll=use_poll)
            samples.append((time.perf_counter() - t) / count * 1e6)
        print(
            "%6d idle: median %10.2f us/iteration (min %.2f, max %.2f, %d iterations x %d)"
            % (n, statistics.median(samples), min(samples), max(samples), count, args.repeats)
        )
        asyncore.close_all(socket_map)


if __name__ == "__main__":
    main()
