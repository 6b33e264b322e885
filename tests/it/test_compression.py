"""RecordBatch compression and per-topic settings (issue 3).

For each codec, thousands of messages produced through kproxyd are read
back byte-exact by librdkafka's consumer, which decompresses them (an
independent decoder). That the batches really were compressed is checked
twice, without kproxyd's own code: the consumer's debug log names the codec
of the batches it fetched (librdkafka's "Enqueue ... fetch queue (...,
CODEC)" line), and the produce trace's `bytes=` (the RecordBatch on the
wire) is compared with a lower bound of the uncompressed batch size, so a
test run with compression silently off fails. Also: compression_level is
honoured (level 1 vs a high level on identical batches), per-topic
overrides of compression and linger in one run, and zstd against a broker
whose Produce version is below 7 (fails cleanly, other topics unaffected).
"""

import base64
import json
import os
import random
import re
import subprocess
import time

import kptest
from kptest import (check_delivery, connect, read_summary, send, send_many,
                    stats_quiet, tmo)

IDENT_RE = re.compile(rb"^c(\d+) s(\d+) ")
TRACE_RE = re.compile(
    r"produce: broker=(-?\d+) topic=(\S+) partition=(\d+) .* count=(\d+) "
    r".*attempt=(\d+) bytes=(\d+)")
# librdkafka's consumer, debug "msg,fetch": one line per fetched message
# set, naming the codec of the (last) batch in it.
ENQUEUE_RE = re.compile(
    r"Enqueue \d+ .*message\(s\) .* on (\S+) \[(\d+)\] fetch queue "
    r"\(.*, (\w+)\)$")

BATCH_HEADER = 61   # RecordBatch header bytes, up to and with RecordCount
RECORD_MIN = 7      # length, attributes, ts/offset deltas, key/value
                    # lengths, header count: at least one byte each

CODECS = ("none", "gzip", "lz4", "zstd")
# librdkafka's names for what it decoded.
RDK_CODEC = {"none": "uncompressed", "gzip": "gzip", "lz4": "lz4",
             "zstd": "zstd"}

METHODS = (b"GET", b"GET", b"GET", b"POST", b"PUT", b"DELETE")
PATHS = (b"/", b"/index.html", b"/api/v1/orders", b"/api/v1/users",
         b"/static/app.js", b"/static/style.css", b"/login", b"/health")
AGENTS = (b"Mozilla/5.0 (X11; Linux x86_64) Firefox/118.0",
          b"curl/7.88.1", b"Go-http-client/1.1",
          b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/119.0")


def log_line(ci, seq):
    """An nginx-like access log line, deterministic, ~150 bytes, starting
    with the `cI sN ` identity the checks read back."""
    n = ci * 100003 + seq * 7919
    return (b"c%d s%d 10.%d.%d.%d - - [28/Nov/2026:09:%02d:%02d +0000] "
            b"\"%s %s?id=%d HTTP/1.1\" %d %d \"-\" \"%s\"" % (
                ci, seq, n % 7, n % 251, n % 97, seq // 60 % 60, seq % 60,
                METHODS[n % 6], PATHS[n % 8], n % 10007,
                (200, 200, 200, 304, 404, 500)[n % 6], 200 + n % 40000,
                AGENTS[n % 4]))


def ident(m):
    mo = IDENT_RE.match(m["value"] or b"")
    return (int(mo.group(1)), int(mo.group(2))) if mo else None


def trace(k, topic=None):
    """The produce trace's first attempts: [(topic, partition, count,
    bytes)] (a resend, attempt > 1, is the same batch again)."""
    out = []
    for line in k.log_text().splitlines():
        mo = TRACE_RE.search(line)
        if not mo or int(mo.group(5)) != 1:
            continue
        if topic is None or mo.group(2) == topic:
            out.append((mo.group(2), int(mo.group(3)), int(mo.group(4)),
                        int(mo.group(6))))
    return out


def consume_codecs(cluster, topics, expected):
    """kptest.consume, plus the codecs librdkafka found: returns (msgs,
    {topic: set of codec names})."""
    argv = [os.path.join(kptest.TOOLS, "kp_consume"), "-b",
            cluster.bootstrap, "-w", str(int(3000 * kptest.SCALE)),
            "-W", str(int(60000 * kptest.SCALE)), "-n", str(expected),
            "-d", "msg,fetch"]
    for topic in topics:
        argv += ["-t", topic]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=tmo(90))
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, "kp_consume failed (%d): %s" % (
        p.returncode, err[-3000:])
    codecs = {}
    for line in err.splitlines():
        mo = ENQUEUE_RE.search(line)
        if mo:
            codecs.setdefault(mo.group(1), set()).add(mo.group(3))
    msgs = []
    for line in p.stdout.splitlines():
        d = json.loads(line)
        d["key"] = kptest._b64(d["key"])
        d["value"] = kptest._b64(d["value"])
        d["headers"] = [(n, kptest._b64(v)) for n, v in d["headers"]]
        msgs.append(d)
    return msgs, codecs


def raw_lower_bound(batches, records):
    """Fewest bytes `batches` RecordBatches holding `records` (key, value)
    can take uncompressed."""
    return BATCH_HEADER * batches + sum(
        RECORD_MIN + len(key or b"") + len(value) for key, value in records)


def check_wire(k, topic, codec, records):
    """Checks the produce trace of `topic` against the uncompressed size of
    its records: every message in exactly one first attempt; compressed
    codecs well below the uncompressed lower bound (in total and for every
    batch of 30 messages or more), `none` at or above it. Returns (wire
    bytes, lower bound, batches)."""
    tr = trace(k, topic)
    assert tr, "no produce trace for %s" % topic
    assert sum(n for _, _, n, _ in tr) == len(records), (topic, tr)
    wire = sum(b for _, _, _, b in tr)
    bound = raw_lower_bound(len(tr), records)
    shortest = min(RECORD_MIN + len(key or b"") + len(value)
                   for key, value in records)
    if codec == "none":
        assert wire >= bound, (topic, wire, bound)
    else:
        # Log lines compress 3x and more with any of the codecs.
        assert wire * 2 < bound, \
            "%s (%s): %d wire bytes for at least %d raw: not compressed?" % (
                topic, codec, wire, bound)
        for _, part, n, b in tr:
            if n >= 30:
                assert b * 10 < (BATCH_HEADER + n * shortest) * 6, \
                    "%s [%d] (%s): batch of %d messages is %d bytes" % (
                        topic, part, codec, n, b)
    return wire, bound, len(tr)


def check_batches_stats(k, topics):
    """stats' per-partition `batches` agree with the produce trace."""
    s = stats_quiet(k)
    for topic in topics:
        tr = trace(k, topic)
        parts = s["topics"][topic]["partitions"]
        for pid, p in parts.items():
            n = sum(1 for _, part, _, _ in tr if part == int(pid))
            assert p["batches"] == n, (topic, pid, p, n)
    return s


def run_codec(t, codec):
    """4 clients x 1000 log lines (every 4th key-less) to a 3-partition
    topic with `codec` as the producer's compression."""
    c = t.cluster(topics={"logs": 3})
    k = t.kproxyd(c, {
        "listeners": [{"path": "tkv.sock", "format": "topic,key,value"}],
        "producer": {"compression": codec}})
    clients, lines = 4, 1000
    expected, datas, records = {}, [], []
    for ci in range(clients):
        buf = []
        for seq in range(lines):
            key = b"" if seq % 4 == 0 else b"host-%d" % ((ci * 7 + seq) % 23)
            value = log_line(ci, seq)
            buf.append(b"logs %s %s\n" % (key, value))
            expected[(ci, seq)] = ("logs", key or None, value)
            records.append((key or None, value))
        datas.append(b"".join(buf))
    for r in send_many(k.sock, datas):
        assert r == {"delivered": lines, "failed": 0, "rejected": 0}, r
    msgs, codecs = consume_codecs(c, ["logs"], clients * lines)
    check_delivery(msgs, expected, ident, c.partitions)
    assert codecs.get("logs") == {RDK_CODEC[codec]}, codecs
    wire, bound, batches = check_wire(k, "logs", codec, records)
    s = check_batches_stats(k, ["logs"])
    assert s["delivered"] == clients * lines and s["failed"] == 0, s
    if "batch" in s:
        # The compression counters of stats (when this build has them)
        # agree with the trace.
        b = s["batch"]
        assert b["bytes_wire"] == wire, (b, wire)
        assert b["bytes_uncompressed"] >= bound, (b, bound)
        by = b.get("by_codec", {})
        if sum(v["batches"] for v in by.values()):
            # by_codec, once kp_stats_observe_batch is called at seal.
            assert by[codec]["batches"] == batches, (by, batches)
            assert by[codec]["bytes_wire"] == wire, (by, wire)
        assert b["uncompressed_fallback"] == 0, b
        if codec == "none":
            assert b["compression_ratio"] == 1.0, b
        else:
            assert b["compression_ratio"] > 2.0, b
    assert k.stop() == 0


def test_codec_none(t):
    """The baseline: uncompressed batches, at least as big as the data."""
    run_codec(t, "none")


def test_codec_gzip(t):
    run_codec(t, "gzip")


def test_codec_lz4(t):
    run_codec(t, "lz4")


def test_codec_zstd(t):
    run_codec(t, "zstd")


def test_compression_level(t):
    """compression_level is honoured: identical batches (one client, 2000
    lines, batch_messages 500, a long linger so only the count seals them)
    sent at a low and a high level are smaller at the high one, batch for
    batch, for gzip (1/9), zstd (1/19) and lz4 (fast/HC 9)."""
    pairs = [("g1", "g9", "gzip", 1, 9), ("z1", "z19", "zstd", 1, 19),
             ("l0", "l9", "lz4", 0, 9)]
    topics = {}
    for lo, hi, codec, llo, lhi in pairs:
        topics[lo] = {"compression": codec, "compression_level": llo}
        topics[hi] = {"compression": codec, "compression_level": lhi}
    c = t.cluster(topics={name: 1 for name in topics})
    k = t.kproxyd(c, {"producer": {"batch_messages": 500,
                                   "linger_ms": 5000},
                      "topics": topics})
    lines = 2000
    values = [log_line(0, seq) for seq in range(lines)]
    datas = [b"".join(b"%s %s\n" % (name.encode(), v) for v in values)
             for name in topics]
    for r in send_many(k.sock, datas):
        assert r == {"delivered": lines, "failed": 0, "rejected": 0}, r
    msgs, codecs = consume_codecs(c, list(topics), lines * len(topics))
    for name, conf in topics.items():
        got = [m["value"] for m in msgs if m["topic"] == name]
        assert got == values, "%s: %d messages" % (name, len(got))
        assert codecs.get(name) == {RDK_CODEC[conf["compression"]]}, \
            (name, codecs)
    for lo, hi, codec, llo, lhi in pairs:
        blo = [(n, b) for _, _, n, b in trace(k, lo)]
        bhi = [(n, b) for _, _, n, b in trace(k, hi)]
        assert [n for n, _ in blo] == [500] * 4, (lo, blo)
        assert [n for n, _ in bhi] == [500] * 4, (hi, bhi)
        for (_, a), (_, b) in zip(blo, bhi):
            assert b < a, "%s level %d: %d bytes, level %d: %d bytes" % (
                codec, lhi, b, llo, a)
    assert k.stop() == 0


def summary_time(path, data):
    """Sends data, half-closes; returns (summary, seconds until it came)."""
    s = connect(path)
    try:
        t0 = time.monotonic()
        s.sendall(data)
        s.shutdown(kptest.socket.SHUT_WR)
        r = read_summary(s)
        return r, time.monotonic() - t0
    finally:
        s.close()


def test_per_topic_overrides(t):
    """One run, producer default gzip: topic za zstd, topic nb none, topic
    lc lz4 with linger 1500 ms, topic dd no override (gzip). Each arrives
    byte-exact; the consumer sees each topic's codec; the wire sizes show
    za, lc and dd compressed and nb not; lc's linger holds a lone message
    about 1.5 s, nb's (the default 5 ms) does not."""
    want = {"za": "zstd", "nb": "none", "lc": "lz4", "dd": "gzip"}
    c = t.cluster(topics={name: 2 for name in want})
    k = t.kproxyd(c, {
        "listeners": [{"path": "tkv.sock", "format": "topic,key,value"}],
        "producer": {"compression": "gzip"},
        "topics": {"za": {"compression": "zstd"},
                   "nb": {"compression": "none"},
                   "lc": {"compression": "lz4", "linger_ms": 1500}}})
    clients, lines = 2, 1200
    expected, datas, records = {}, [], {name: [] for name in want}
    names = sorted(want)
    for ci in range(clients):
        buf = []
        for seq in range(lines):
            topic = names[seq % 4]
            key = b"" if seq % 3 == 0 else b"k%d" % (seq % 11)
            value = log_line(ci, seq)
            buf.append(b"%s %s %s\n" % (topic.encode(), key, value))
            expected[(ci, seq)] = (topic, key or None, value)
            records[topic].append((key or None, value))
        datas.append(b"".join(buf))
    for r in send_many(k.sock, datas):
        assert r == {"delivered": lines, "failed": 0, "rejected": 0}, r
    msgs, codecs = consume_codecs(c, names, clients * lines)
    check_delivery(msgs, expected, ident, c.partitions)
    for name, codec in want.items():
        assert codecs.get(name) == {RDK_CODEC[codec]}, (name, codecs)
        check_wire(k, name, codec, records[name])
    check_batches_stats(k, names)

    # Linger per topic: a lone message waits lc's 1500 ms, not nb's 5.
    r, slow = summary_time(k.sock, b"lc  c9 s0 lone\n")
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    r, fast = summary_time(k.sock, b"nb  c9 s1 lone\n")
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    assert slow >= 1.4, "lc: linger 1500 ms, delivered after %.3fs" % slow
    assert fast < 1.0, "nb: linger 5 ms, delivered after %.3fs" % fast
    assert k.stop() == 0


def test_zstd_needs_produce_v7(t):
    """Brokers whose highest Produce version is 6: the messages of a zstd
    topic fail with a clear error (the log names the broker and the topic,
    the summary counts them failed, the dead-letter file has them), while a
    gzip and an uncompressed topic in the same run are delivered."""
    c = t.cluster(topics={"zs": 2, "gz": 2, "pl": 2})
    c.cmd("apiversion Produce 3 6")    # before kproxyd asks for versions
    k = t.kproxyd(c, {"topics": {"zs": {"compression": "zstd"},
                                 "gz": {"compression": "gzip"}}},
                  dead_letter=True)
    n = 300
    zdata = b"".join(b"zs %s\n" % log_line(0, i) for i in range(n))
    gdata = b"".join(b"gz %s\n" % log_line(1, i) for i in range(n))
    pdata = b"".join(b"pl %s\n" % log_line(2, i) for i in range(n))
    rz, rg, rp = send_many(k.sock, [zdata, gdata, pdata])
    assert rz == {"delivered": 0, "failed": n, "rejected": 0}, rz
    assert rg == {"delivered": n, "failed": 0, "rejected": 0}, rg
    assert rp == {"delivered": n, "failed": 0, "rejected": 0}, rp

    log = k.log_text()
    errs = [line for line in log.splitlines()
            if "zstd" in line and "topic zs" in line]
    assert errs, "no log line names topic zs and zstd:\n" + k.log_tail()
    host, port = c.broker_addr(1)
    assert any(re.search(r"broker \d+ \(%s:\d+\)" % re.escape(host), line)
               and "v6" in line for line in errs), errs
    # Nothing of zs went on the wire.
    assert not trace(k, "zs"), trace(k, "zs")

    dl = k.dead_letter_lines()
    assert len(dl) == n, len(dl)
    assert sorted(d["value"].encode() for d in dl) == \
        sorted(log_line(0, i) for i in range(n))
    assert all(d["topic"] == "zs" and "zstd" in d["error"] for d in dl), \
        dl[:3]
    s = stats_quiet(k)
    assert s["failed"] == n and s["delivered"] == 2 * n, s
    assert sum(s["topics"]["zs"]["failed_by"].values()) == n, s["topics"]

    msgs, codecs = consume_codecs(c, ["gz", "pl", "zs"], 2 * n)
    assert sorted(m["value"] for m in msgs if m["topic"] == "gz") == \
        sorted(log_line(1, i) for i in range(n))
    assert sorted(m["value"] for m in msgs if m["topic"] == "pl") == \
        sorted(log_line(2, i) for i in range(n))
    assert not [m for m in msgs if m["topic"] == "zs"]
    assert codecs.get("gz") == {"gzip"}, codecs
    assert k.stop() == 0


def test_incompressible_fallback(t):
    """Random bytes do not compress: batches of one random record
    (batch_messages 1) of a zstd topic go uncompressed (allowed, and
    counted), and arrive byte-exact."""
    c = t.cluster(topics={"rnd": 2})
    k = t.kproxyd(c, {"listeners": [{"path": "j.sock", "format": "json"}],
                      "topics": {"rnd": {"compression": "zstd",
                                         "batch_messages": 1}}})
    rnd = random.Random(3)
    values = [bytes(rnd.randrange(256) for _ in range(300))
              for _ in range(100)]
    data = b"".join(json.dumps({
        "topic": "rnd", "key": "k%d" % (i % 5),
        "value_base64": base64.b64encode(v).decode()}).encode() + b"\n"
        for i, v in enumerate(values))
    r = send(k.sock, data)
    assert r == {"delivered": len(values), "failed": 0, "rejected": 0}, r
    msgs, codecs = consume_codecs(c, ["rnd"], len(values))
    assert sorted(m["value"] for m in msgs) == sorted(values)
    assert codecs.get("rnd") == {"uncompressed"}, codecs
    wire, bound, batches = check_wire(
        k, "rnd", "none",
        [(b"k%d" % (i % 5), v) for i, v in enumerate(values)])
    s = stats_quiet(k)
    if "batch" in s:
        assert s["batch"]["uncompressed_fallback"] == batches, s["batch"]
        assert s["batch"]["compression_ratio"] <= 1.0, s["batch"]
    assert k.stop() == 0
