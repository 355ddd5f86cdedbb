"""Tables, target checks and plots from a bench/run.py result."""

import math
import statistics

from impls import LABELS

IMPL_ORDER = ("ext", "pure", "ref")


def fmt(x, digits=None):
    if x is None:
        return "-"
    if digits is None:
        digits = 2 if abs(x) < 10 else 1 if abs(x) < 100 else 0
        if 0 < abs(x) < 0.1:  # two significant digits (the C server's x0.012, not x0.01)
            digits = 1 - math.floor(math.log10(abs(x)))
    return "{:,.{}f}".format(x, digits)


def spread(s, digits=None):
    return "%s [%s-%s]" % (fmt(s["median"], digits), fmt(s["min"], digits), fmt(s["max"], digits))


def table(title, header, rows):
    if not rows:
        return ""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["", title]
    for i, r in enumerate([header] + rows):
        cells = [str(c).ljust(w) if j == 0 else str(c).rjust(w)
                 for j, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def micro_tables(micro):
    out = []
    have = [i for i in IMPL_ORDER if i in micro and "error" not in micro[i]]
    for impl in IMPL_ORDER:
        if impl in micro and "error" in micro[impl]:
            out.append("\n%s: %s" % (LABELS[impl], micro[impl]["error"]))
    if not have:
        return "\n".join(out)

    def median(impl, section, value, size_key, size, poller):
        for r in micro.get(impl, {}).get(section, []):
            if r[size_key] == size and r["poller"] == poller and value in r:
                return r[value]["median"]
        return None

    def ratio(impl, section, value, size_key, size, v):
        """v over the extension's figure; the pure core's is chained through the
        reference's poll() figure measured in each core's own process."""
        ext = median("ext", section, value, size_key, size, "epoll")
        if not ext:
            return None
        if impl == "pure":
            beside = median("ref_beside_pure", section, value, size_key, size, "poll")
            ref = median("ref", section, value, size_key, size, "poll")
            return v / beside * ref / ext if beside and ref else None
        return v / ext

    def cells(section, value, size_key):
        rows, sizes = [], []
        for impl in have:
            for r in micro[impl].get(section, []):
                if r[size_key] not in sizes:
                    sizes.append(r[size_key])
        for impl in have:
            pollers = []
            for r in micro[impl].get(section, []):
                if r["poller"] not in pollers:
                    pollers.append(r["poller"])
            for poller in pollers:
                row = ["%s, %s" % (LABELS[impl], poller)]
                for size in sizes:
                    match = [r for r in micro[impl][section]
                             if r[size_key] == size and r["poller"] == poller]
                    if not match:
                        row.append("-")
                    elif "skipped" in match[0]:
                        row.append("skipped: " + match[0]["skipped"])
                    else:
                        s = match[0][value]
                        x = ratio(impl, section, value, size_key, size, s["median"])
                        row.append(spread(s) + (" (x%s)" % fmt(x) if impl != "ext" and x else ""))
                rows.append(row)
        return sizes, rows

    sizes, rows = cells("iteration", value="us", size_key="idle")
    out.append(table(
        "Loop iteration, idle connected async_chat dispatchers: us per iteration, "
        "median [min-max] (x fastcore extension)",
        ["implementation"] + ["%s idle" % fmt(s, 0) for s in sizes], rows))
    sizes, rows = cells("doc_iteration", value="us", size_key="idle")
    if rows:
        out.append(table(
            "Loop iteration, idle dispatchers of the documentation's pattern (readable() "
            "True, writable() len(self.buffer) > 0): us per iteration, median [min-max]",
            ["implementation"] + ["%s idle" % fmt(s, 0) for s in sizes], rows))
    sizes, rows = cells("dispatch", value="us_per_event", size_key="ready")
    out.append(table(
        "Dispatch, every dispatcher readable every iteration (handle_read does nothing): "
        "us per ready event",
        ["implementation"] + ["%s ready" % fmt(s, 0) for s in sizes], rows))

    rows = []
    for r in micro[have[0]].get("chat_input", []):
        key = (r["terminator"], r["line"])
        row = ["%s, %s B lines" % key]
        per = {}
        for impl in have:
            m = [x for x in micro[impl].get("chat_input", [])
                 if (x["terminator"], x["line"]) == key]
            if m:
                per[impl] = m[0]
                row.append("%s /s, %s MB/s" % (fmt(m[0]["lines_per_s"]["median"], 0),
                                              fmt(m[0]["mb_per_s"]["median"])))
            else:
                row.append("-")
        if "ext" in per and "ref" in per:
            row.append("x" + fmt(per["ext"]["lines_per_s"]["median"]
                                 / per["ref"]["lines_per_s"]["median"]))
        rows.append(row)
    out.append(table(
        "async_chat input in 64 KiB reads (handle_read; collect_incoming_data appends, "
        "found_terminator joins): lines/s and MB/s, medians",
        ["terminator, line"] + [LABELS[i] for i in have] + ["fastcore/reference"], rows))

    rows = []
    for impl in have:
        small = [r for r in micro[impl].get("chat_input", [])
                 if (r["terminator"], r["line"]) == ("1-byte", 64)]
        big = micro[impl].get("chat_input_linear", [])
        if small and big:
            a, b = small[0]["ns_per_byte"]["median"], big[0]["ns_per_byte"]["median"]
            rows.append([LABELS[impl], fmt(a), fmt(b), "x" + fmt(b / a)])
    if rows:
        out.append(table(
            "Linearity: 64 B lines, ns per input byte with 64 KiB and with 1 MiB reads",
            ["implementation", "64 KiB reads", "1 MiB reads", "1 MiB / 64 KiB"], rows))

    rows = []
    for r in micro[have[0]].get("push", []):
        row = [r["case"]]
        per = {}
        for impl in have:
            m = [x for x in micro[impl].get("push", []) if x["case"] == r["case"]]
            if m:
                per[impl] = m[0]
                row.append("%s /s, %s MB/s" % (fmt(m[0]["items_per_s"]["median"], 0),
                                              fmt(m[0]["mb_per_s"]["median"])))
            else:
                row.append("-")
        if "ext" in per and "ref" in per:
            row.append("x" + fmt(per["ext"]["mb_per_s"]["median"]
                                 / per["ref"]["mb_per_s"]["median"]))
        rows.append(row)
    out.append(table(
        "push/initiate_send to a socketpair drained in the same thread: items/s and MB/s",
        ["case"] + [LABELS[i] for i in have] + ["fastcore/reference"], rows))
    return "\n".join(out)


def summarize_runs(runs, accept):
    """Medians (and min/max of the primary figure) over the repeats of one row."""
    if accept:
        primary = [r["seconds"] for r in runs]
    else:
        primary = [r["server_cpu_s"] / r["messages"] * 1e6 for r in runs]
    med = statistics.median
    return {
        "primary": {"median": med(primary), "min": min(primary), "max": max(primary),
                    "repeats": len(primary)},
        "cpu_us_per_msg": med([r["server_cpu_s"] / r["messages"] * 1e6 for r in runs]),
        "user_share": med([r["server_user_s"] / max(r["server_user_s"] + r["server_sys_s"],
                                                    1e-9) for r in runs]),
        "client_cpu_us_per_msg": med([r["client_cpu_s"] / r["messages"] * 1e6 for r in runs]),
        "per_s": med([r["messages"] / r["seconds"] for r in runs]),
        "p50_us": med([r["p50_us"] for r in runs]),
        "p99_us": med([r["p99_us"] for r in runs]),
        "rss_mib": med([r["server_rss_kb"] / 1024 for r in runs]),
    }


def echo_table(record):
    accept = record["params"].get("mode") == "accept"
    base = None
    for row in record["rows"]:
        if row.get("runs"):
            row["summary"] = summarize_runs(row["runs"], accept)
            if row["server"] == "ext":
                base = row["summary"]["primary"]["median"]
    rows = []
    for row in record["rows"]:
        if "summary" not in row:
            rows.append([row["label"], row.get("skipped") or "FAILED: " + row.get("error", "")]
                        + [""] * 8)
            continue
        s = row["summary"]
        ratio = "x" + fmt(s["primary"]["median"] / base) if base else "-"
        row["ratio_to_fastcore"] = s["primary"]["median"] / base if base else None
        if accept:
            first = "%s s [%s-%s]" % (fmt(s["primary"]["median"], 3),
                                      fmt(s["primary"]["min"], 3), fmt(s["primary"]["max"], 3))
        else:
            first = spread(s["primary"])
        rows.append([row["label"], first, ratio, fmt(s["cpu_us_per_msg"]) if accept else
                     "%d%%" % round(100 * s["user_share"]), fmt(s["per_s"], 0),
                     fmt(s["p50_us"], 0), fmt(s["p99_us"], 0), fmt(s["rss_mib"], 1),
                     fmt(s["client_cpu_us_per_msg"])])
        if row.get("error"):
            rows[-1][0] += " (a repeat FAILED: %s)" % row["error"][:80]
    if accept:
        header = ["server", "time to accept", "x fastcore", "CPU us/conn", "conns/s",
                  "p50 us", "p99 us", "RSS MiB", "loadgen us/conn"]
    else:
        header = ["server", "CPU us/msg [min-max]", "x fastcore", "user", "msgs/s",
                  "p50 us", "p99 us", "RSS MiB", "loadgen us/msg"]
    pin = "server and load generator pinned to different CPUs" if record["pinned"] else (
        "NOT pinned (one CPU)")
    title = "%s: %s (%s)" % (record["load"], record["description"], pin)
    return table(title, header, rows)


def targets(result, full):
    """[(target, measured, met)] for the issue's targets that this run measured."""
    out = []
    micro = result.get("micro", {})
    ext_iter = {r["idle"]: r["us"]["median"] for r in micro.get("ext", {}).get("iteration", [])
                if "us" in r}
    if 10000 in ext_iter:
        flat = max(ext_iter.values()) / min(ext_iter.values())
        out.append(("iteration with 10,000 idle <= 5 us on the extension, flat 10..10,000",
                    "%s us; max/min over 10..10,000 = %s" % (fmt(ext_iter[10000]), fmt(flat)),
                    ext_iter[10000] <= 5 and flat <= 2))

    def chat(impl, term, line):
        for r in micro.get(impl, {}).get("chat_input", []):
            if (r["terminator"], r["line"]) == (term, line):
                return r
        return None

    for term in ("1-byte", "multi-byte", "int"):
        a, b = chat("ext", term, 64), chat("ref", term, 64)
        if a and b:
            ratio = a["lines_per_s"]["median"] / b["lines_per_s"]["median"]
            out.append(("async_chat 64 B lines (%s terminator) >= 10x the reference" % term,
                        "x%s" % fmt(ratio), ratio >= 10))
    small = chat("ext", "1-byte", 64)
    big = micro.get("ext", {}).get("chat_input_linear")
    if small and big:
        ratio = big[0]["ns_per_byte"]["median"] / small["ns_per_byte"]["median"]
        # 16 times the bytes per read: a quadratic cost would be ~16x per byte.
        out.append(("async_chat input linear in the input size (1 MiB vs 64 KiB reads, "
                    "per byte within 2x)", "per-byte cost x%s" % fmt(ratio), ratio <= 2))

    echo = echo_by_load(result)

    def primary(load, server):
        return echo_median(echo, load, server)

    for load, goal in (("ping-pong", 1.5), ("pipelined", 4.5), ("bulk", 2.4), ("idle", 300),
                       ("idle-1", 300)):
        ext, ref = primary(load, "ext"), primary(load, "ref")
        if ext and ref:
            if load == "idle-1":
                load = "idle with 1 active connection instead of 100 (not the issue's load)"
            out.append(("%s: server CPU/msg >= %sx cheaper than the reference" % (load, goal),
                        "x%s" % fmt(ref / ext), ref / ext >= goal))
    for load in ("ping-pong", "pipelined", "bulk", "idle", "idle-1", "accept"):
        ext, uv = primary(load, "ext"), primary(load, "uvloop")
        if ext and uv:
            what = "time" if load == "accept" else "server CPU/msg"
            out.append(("%s: %s cheaper than uvloop" % (load, what),
                        "uvloop/fastcore x%s" % fmt(uv / ext), uv > ext))
    idle, none = primary("idle", "ext"), primary("ping-pong", "ext")
    if idle and none:
        n = echo["idle"]["params"]["idle"]
        out.append(("with %s idle, CPU/msg <= 1.25x the cost with none" % fmt(n, 0),
                    "x%s" % fmt(idle / none), idle / none <= 1.25))
    storm = primary("accept", "ext")
    if storm:
        n = echo["accept"]["params"]["conns"]
        goal = n / 10000
        out.append(("%s connections accepted in under %s s%s" % (
            fmt(n, 0), fmt(goal), "" if n == 10000 else " (pro rata: --full runs 10,000)"),
            "%s s" % fmt(storm, 3), storm < goal))
    return out


def echo_by_load(result):
    return {rec["load"]: rec for rec in result.get("echo", [])}


def echo_median(echo, load, server):
    """The median server CPU per message of one server under one load, or None."""
    for row in echo.get(load, {}).get("rows", []):
        if row["server"] == server and "summary" in row:
            return row["summary"]["primary"]["median"]
    return None


def real_program_targets(result):
    """[(target, measured, met)] for issue 17's targets (real programs'
    patterns: pipelined pushes, overridden writable()) that this run measured."""
    out = []
    echo = echo_by_load(result)
    goals = (("pipelined", "ref", 3, "the reference"), ("pipelined", "uvloop", 2.5, "uvloop"),
             ("ping-pong", "ref", 1.25, "the reference"), ("ping-pong", "uvloop", 1.1, "uvloop"),
             ("bulk", "ref", 1.5, "the reference"))
    for load, other, goal, name in goals:
        ext, them = echo_median(echo, load, "ext"), echo_median(echo, load, other)
        if ext and them:
            out.append(("%s: server CPU/msg >= %sx cheaper than %s" % (load, goal, name),
                        "x%s" % fmt(them / ext), them / ext >= goal))
    ext, c = echo_median(echo, "ping-pong", "ext"), echo_median(echo, "ping-pong", "c-epoll")
    if ext and c:
        out.append(("ping-pong: server CPU/msg within 1.3x the C epoll server's",
                    "x%s" % fmt(ext / c), ext / c <= 1.3))
    doc = {r["idle"]: r["us"]["median"]
           for r in result.get("micro", {}).get("ext", {}).get("doc_iteration", []) if "us" in r}
    if 10 in doc and 5000 in doc:
        out.append(("documentation's pattern: 5,000 idle cost <= 3x 10 idle (extension)",
                    "x%s" % fmt(doc[5000] / doc[10]), doc[5000] <= 3 * doc[10]))
    return out


def targets_table(result, full):
    tables = []
    for title, rows in (("Issue 3 targets", targets(result, full)),
                        ("Issue 17 targets (real programs)", real_program_targets(result))):
        rows = [[t, m, "met" if ok else "MISSED"] for t, m, ok in rows]
        if rows:
            tables.append(table(title + ", from this run", ["target", "measured", ""], rows))
    return "\n".join(tables)


def callgrind_table(rows, load="ping-pong"):
    base = next((r["per_message"] for r in rows if r["server"] == "ext" and "per_message" in r),
                None)
    out = []
    for r in rows:
        if "per_message" not in r:
            out.append([r["label"], r.get("skipped", ""), ""])
            continue
        out.append([r["label"], fmt(r["per_message"], 0),
                    "x" + fmt(r["per_message"] / base) if base else "-"])
    return table("%s under callgrind: user-space instructions per message " % load +
                 "(repeatable; the kernel's share is not counted)",
                 ["server", "instructions/msg", "x fastcore"], out)


def plot(result, path):
    """A PNG: iteration cost against idle connections, and the per-load ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for impl in IMPL_ORDER:
        rows = result.get("micro", {}).get(impl, {}).get("iteration", [])
        for poller in sorted({r["poller"] for r in rows}):
            pts = [(r["idle"], r["us"]["median"]) for r in rows
                   if r["poller"] == poller and "us" in r]
            if pts:
                left.plot(*zip(*pts), marker="o", label="%s, %s" % (LABELS[impl], poller))
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("idle connections")
    left.set_ylabel("us per loop iteration")
    left.set_title("One loop iteration")
    if left.lines:
        left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)

    loads = [rec for rec in result.get("echo", [])]
    servers = [r["server"] for r in loads[0]["rows"]] if loads else []
    width = 0.8 / max(len(servers), 1)
    for i, server in enumerate(servers):
        ys = []
        for rec in loads:
            row = [r for r in rec["rows"] if r["server"] == server]
            ys.append(row[0].get("ratio_to_fastcore") or 0 if row else 0)
        xs = [j + i * width for j in range(len(loads))]
        right.bar(xs, ys, width, label=row[0]["label"] if row else server)
    right.set_xticks([j + 0.4 - width / 2 for j in range(len(loads))])
    right.set_xticklabels([rec["load"] for rec in loads])
    right.set_yscale("log")
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set_ylabel("server CPU per message / fastcore's (accept: time)")
    right.set_title("Echo server cost relative to fastcore (extension)")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
