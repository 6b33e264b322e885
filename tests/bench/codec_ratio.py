#!/usr/bin/env python3
"""codec_ratio.py - compression ratio and CPU cost of each codec (issue 3).

    python3 tests/bench/codec_ratio.py --kproxyd build/kproxyd \\
        --tools build/tools [--messages 200000] [--clients 4] [--repeat 3]
        [--codecs none,gzip,lz4,zstd] [--partitions 6] [--seed 1]
        [--batch-bytes 1048576]

Workload: N web-server access-log lines (nginx "combined" format: client
IP, timestamp advancing about 40 lines a second, method, path from a small
set with a numeric query parameter, status, response size, referrer, user
agent), 86-197 bytes, mean 144, generated deterministically from
--seed. They are written as `topic,value` lines to topic `logs` (6
partitions, no keys: the sticky partitioner), split across --clients
concurrent connections, with the producer defaults (linger 5 ms,
batch_bytes 1 MiB, acks all, idempotence) except `compression` (and
batch_bytes with --batch-bytes: smaller batches compress less).

For each codec, each repetition: a fresh mock cluster (kp_mock, 3 brokers)
and a fresh kproxyd (log_level debug, for the produce trace: one line per
batch, a negligible cost next to 200k messages). One warm-up line is sent
and confirmed first (metadata, connections, producer id). Then:
  - CPU: utime+stime of the kproxyd process from /proc/PID/stat, read
    before the first byte is written and after the last half-close summary
    `delivered=N failed=0 rejected=0` arrived (so every message was
    acknowledged); reported as CPU seconds per million messages.
  - Wire bytes: the sum of `bytes=` of the produce trace's first attempts
    (RecordBatch bytes as sent, headers included) for topic `logs`.
  - ratio = raw payload bytes (the values, without '\\n') / wire bytes; and
    vs none = the uncompressed run's wire bytes / this codec's wire bytes
    (what compression saves on the network and the broker's disk).
Medians over --repeat runs. Exit status 1 if a message was not delivered
or a process failed.
"""

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "it"))
sys.dont_write_bytecode = True

import kptest  # noqa: E402

TRACE_RE = re.compile(r"produce: .* topic=logs .* count=(\d+) .*"
                      r"attempt=(\d+) bytes=(\d+)")

PATHS = ["/", "/index.html", "/api/v1/orders", "/api/v1/users",
         "/api/v1/cart/items", "/static/js/app.min.js",
         "/static/css/site.css", "/images/logo.png", "/login", "/health",
         "/search", "/products/view"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64; rv:118.0) Gecko Firefox/118.0",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/119.0.0.0",
          "curl/7.88.1", "Go-http-client/1.1", "kube-probe/1.27",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1) Mobile/15E148"]
REFERERS = ["-", "-", "https://shop.example.com/",
            "https://www.google.com/"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
          "Oct", "Nov", "Dec"]


def workload(n, seed):
    """n access-log lines (bytes, without '\\n'), deterministic."""
    rnd = random.Random(seed)
    t0 = 1795856400  # 2026-11-28 09:00:00 UTC
    out = []
    for i in range(n):
        ts = time.gmtime(t0 + i // 40)
        method = rnd.choice(("GET", "GET", "GET", "GET", "POST", "PUT"))
        status = rnd.choice((200, 200, 200, 200, 200, 304, 301, 404, 500))
        path = rnd.choice(PATHS)
        if rnd.random() < 0.6:
            path += "?id=%d" % rnd.randrange(100000)
        line = ('%d.%d.%d.%d - - [%02d/%s/%d:%02d:%02d:%02d +0000] '
                '"%s %s HTTP/1.1" %d %d "%s" "%s"' % (
                    rnd.choice((10, 172, 192)), rnd.randrange(256),
                    rnd.randrange(256), rnd.randrange(1, 255),
                    ts.tm_mday, MONTHS[ts.tm_mon - 1], ts.tm_year,
                    ts.tm_hour, ts.tm_min, ts.tm_sec, method, path, status,
                    rnd.randrange(200, 60000) if status != 304 else 0,
                    rnd.choice(REFERERS), rnd.choice(AGENTS)))
        out.append(line.encode())
    return out


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wire_bytes(log_text):
    msgs = 0
    total = 0
    batches = 0
    for line in log_text.splitlines():
        mo = TRACE_RE.search(line)
        if mo and mo.group(2) == "1":
            msgs += int(mo.group(1))
            total += int(mo.group(3))
            batches += 1
    return total, batches, msgs


def one_run(args, codec, datas, n):
    tmpdir = tempfile.mkdtemp(prefix="kpcodec-")
    cluster = kptest.Cluster(args.tools, brokers=3,
                             topics={"logs": args.partitions},
                             tmpdir=tmpdir)
    k = None
    try:
        k = kptest.Kproxyd(args.kproxyd, cluster, {
            "producer": {"compression": codec,
                         "batch_bytes": args.batch_bytes},
            "buffer_bytes": 512 * 1024 * 1024,
        }, tmpdir)
        r = kptest.send(k.sock, b"warm warm-up\n")
        assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
        pid = k.proc.pid
        cpu0 = cpu_seconds(pid)
        t0 = time.monotonic()
        results = kptest.send_many(k.sock, datas, timeout=600)
        elapsed = time.monotonic() - t0
        cpu1 = cpu_seconds(pid)
        delivered = sum(r["delivered"] for r in results)
        bad = sum(r["failed"] + r["rejected"] for r in results)
        if delivered != n or bad:
            raise SystemExit("%s: delivered %d of %d, %d failed/rejected"
                             % (codec, delivered, n, bad))
        rc = k.stop()
        if rc != 0:
            raise SystemExit("%s: kproxyd exited %d" % (codec, rc))
        wire, batches, msgs = wire_bytes(k.log_text())
        if msgs != n:
            raise SystemExit("%s: trace shows %d messages, sent %d"
                             % (codec, msgs, n))
        return {"cpu": cpu1 - cpu0, "elapsed": elapsed, "wire": wire,
                "batches": batches}
    finally:
        if k is not None:
            k.kill()
        cluster.stop()
        if not args.keep:
            import shutil
            shutil.rmtree(tmpdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kproxyd", default="build/kproxyd")
    ap.add_argument("--tools", default="build/tools")
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--codecs", default="none,gzip,lz4,zstd")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch-bytes", type=int, default=1048576,
                    help="producer batch_bytes (default 1 MiB, kproxyd's)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    kptest.configure(args.kproxyd, args.tools)

    lines = workload(args.messages, args.seed)
    raw = sum(len(v) for v in lines)
    per = (len(lines) + args.clients - 1) // args.clients
    datas = [b"".join(b"logs " + v + b"\n"
                      for v in lines[i * per:(i + 1) * per])
             for i in range(args.clients)]
    print("workload: %d access-log lines, %d payload bytes (mean %.1f, "
          "min %d, max %d), %d clients, topic of %d partitions, "
          "batch_bytes %d, %d runs each" % (
              len(lines), raw, raw / len(lines), min(map(len, lines)),
              max(map(len, lines)), args.clients, args.partitions,
              args.batch_bytes, args.repeat))
    print("e.g.: %s" % lines[0].decode())
    rows = {}
    for codec in args.codecs.split(","):
        runs = [one_run(args, codec, datas, len(lines))
                for _ in range(args.repeat)]
        rows[codec] = {key: statistics.median(r[key] for r in runs)
                       for key in runs[0]}
        rows[codec]["cpus"] = [r["cpu"] for r in runs]
        print("  %s done: %s" % (codec, ", ".join(
            "cpu %.2fs wire %d" % (r["cpu"], r["wire"]) for r in runs)),
            flush=True)

    base = rows.get("none", {}).get("wire")
    print()
    print("%-6s %12s %8s %8s %9s %13s %9s %9s" % (
        "codec", "wire bytes", "batches", "ratio", "vs none",
        "CPU s/M msgs", "msgs/s", "wall s"))
    for codec, r in rows.items():
        print("%-6s %12d %8d %8.2f %9s %13.2f %9.0f %9.2f" % (
            codec, r["wire"], r["batches"], raw / r["wire"],
            "%.2f" % (base / r["wire"]) if base else "-",
            r["cpu"] / len(lines) * 1e6, len(lines) / r["elapsed"],
            r["elapsed"]))
    print("\nratio = payload bytes / RecordBatch bytes on the wire; CPU = "
          "kproxyd utime+stime (median of %d)" % args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
