"""The control socket (SPEC "Control socket"): stats, metrics, flush.

Per-broker and per-partition stats are read with the layout agreed for
kproxyd (SPEC names the fields, not the nesting):
  "brokers": [{"id","host","port","state","inflight","rtt_us","reconnects"}]
  "topics": {"NAME": {"partitions": {"0": {"leader","queued","delivered",
                                           "failed","batches"}}}}
"""

import re

from kptest import connect, read_summary, send, stats_quiet, wait_for

TOP_FIELDS = ("received", "delivered", "failed", "rejected",
              "queued_messages", "queued_bytes", "inflight_requests",
              "clients", "backpressure", "uptime_ms", "brokers", "topics")
BROKER_FIELDS = ("id", "host", "port", "state", "inflight", "rtt_us",
                 "reconnects")
PARTITION_FIELDS = ("leader", "queued", "delivered", "failed", "batches")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_layout(s):
    for f in TOP_FIELDS:
        assert f in s, "stats: no %r in %r" % (f, sorted(s))
    for f in TOP_FIELDS:
        if f not in ("backpressure", "brokers", "topics"):
            assert is_int(s[f]) and s[f] >= 0, (f, s[f])
    assert isinstance(s["backpressure"], bool), s["backpressure"]
    assert isinstance(s["brokers"], list), s["brokers"]
    for b in s["brokers"]:
        for f in BROKER_FIELDS:
            assert f in b, "broker: no %r in %r" % (f, b)
        for f in ("id", "port", "inflight", "rtt_us", "reconnects"):
            assert is_int(b[f]), (f, b)
        assert isinstance(b["host"], str) and isinstance(b["state"], str), b
    assert isinstance(s["topics"], dict), s["topics"]
    for name, tp in s["topics"].items():
        assert isinstance(tp.get("partitions"), dict), (name, tp)
        for pid, p in tp["partitions"].items():
            assert pid.isdigit(), (name, pid)
            for f in PARTITION_FIELDS:
                assert f in p, "%s [%s]: no %r in %r" % (name, pid, f, p)
                assert is_int(p[f]), (name, pid, f, p)


def test_stats(t):
    c = t.cluster(topics={"st": 3})
    # Known leaders, to compare with what kproxyd learnt from Metadata.
    leaders = {0: 2, 1: 3, 2: 1}
    for p, b in leaders.items():
        c.cmd("leader st %d %d" % (p, b))
    k = t.kproxyd(c)
    s0 = k.stats()
    check_layout(s0)
    assert (s0["received"], s0["delivered"], s0["failed"],
            s0["rejected"]) == (0, 0, 0, 0), s0

    data = b"".join(b"st v%d\n" % i for i in range(100))
    data += b"nosep\nbad/topic x\n" + b"st " + b"y" * 2000000 + b"\n"
    r = send(k.sock, data)
    assert r == {"delivered": 100, "failed": 0, "rejected": 3}, r

    s = stats_quiet(k)
    check_layout(s)
    assert s["delivered"] == 100 and s["failed"] == 0, s
    assert s["rejected"] == 3, s
    # SPEC leaves open whether a rejected line counts as received.
    assert s["received"] in (100, 103), s
    assert s["queued_messages"] == 0 and s["queued_bytes"] == 0, s
    assert s["backpressure"] is False, s
    assert s["uptime_ms"] >= s0["uptime_ms"], (s0["uptime_ms"],
                                                s["uptime_ms"])

    ids = {b["id"]: b for b in s["brokers"]}
    for bid in (1, 2, 3):
        assert bid in ids, "broker %d missing: %r" % (bid, s["brokers"])
        host, port = c.broker_addr(bid)
        assert (ids[bid]["host"], ids[bid]["port"]) == (host, port), ids[bid]

    assert "st" in s["topics"], s["topics"]
    parts = s["topics"]["st"]["partitions"]
    assert sorted(parts) == ["0", "1", "2"], parts
    for p, b in leaders.items():
        assert parts[str(p)]["leader"] == b, (p, parts)
    assert sum(p["delivered"] for p in parts.values()) == 100, parts
    assert sum(p["failed"] for p in parts.values()) == 0, parts
    assert sum(p["queued"] for p in parts.values()) == 0, parts
    assert sum(p["batches"] for p in parts.values()) >= 1, parts
    assert k.stop() == 0


METRIC_RE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eE]+(?:NaN|Inf)?'
    r'( [0-9.]+)?$')


def test_metrics(t):
    c = t.cluster(topics={"mt": 1})
    k = t.kproxyd(c)
    r = send(k.sock, b"mt a\nmt b\n")
    assert r == {"delivered": 2, "failed": 0, "rejected": 0}, r
    lines = k.control_lines("metrics", until="# EOF")
    assert lines[-1] == "# EOF", lines
    assert lines.count("# EOF") == 1, lines
    samples = [ln for ln in lines if not ln.startswith("#")]
    assert samples, lines
    for ln in samples:
        assert METRIC_RE.match(ln), "not an OpenMetrics sample: %r" % ln
    for ln in lines:
        if ln.startswith("#") and ln != "# EOF":
            assert re.match(r"^# (TYPE|HELP|UNIT) \S+", ln), ln
    # The control socket still answers afterwards.
    check_layout(k.stats())
    assert k.stop() == 0


def test_flush(t):
    c = t.cluster(topics={"fl": 3})
    k = t.kproxyd(c, {"producer": {"linger_ms": 200}})
    assert k.control("flush") == "ok delivered=0 failed=0"

    r = send(k.sock, b"".join(b"fl v%d\n" % i for i in range(100)))
    assert r == {"delivered": 100, "failed": 0, "rejected": 0}, r

    # 200 more lines on a connection that stays open: flush must wait for
    # them although the client has not half-closed.
    s = connect(k.sock)
    try:
        s.sendall(b"".join(b"fl w%d\n" % i for i in range(200)))
        wait_for(lambda: k.stats()["received"] >= 300, 15,
                 "kproxyd to read 300 lines")
        reply = k.control("flush")
        m = re.match(r"^ok delivered=(\d+) failed=(\d+)$", reply)
        assert m, reply
        assert int(m.group(2)) == 0, reply
        st = k.stats()
        # Every message received before the command is done.
        assert st["delivered"] == 300 and st["failed"] == 0, st
        assert st["queued_messages"] == 0, st
        s.shutdown(1)
        assert read_summary(s) == {"delivered": 200, "failed": 0,
                                   "rejected": 0}
    finally:
        s.close()
    msgs = t.consume(c, "fl", expected=300)
    assert len(msgs) == 300
    assert k.stop() == 0


def test_control_unknown_command(t):
    """An unknown command gets one reply line and the socket keeps
    working (the wording is kproxyd's)."""
    c = t.cluster(topics={"x": 1})
    k = t.kproxyd(c)
    reply = k.control("no-such-command")
    assert reply and not reply.startswith("ok"), reply
    check_layout(k.stats())
    assert k.stop() == 0
