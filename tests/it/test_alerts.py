"""Logs that alert (issue 14): with `log_level: warning` an operator sees,
each naming what to check and rate-limited, an unreachable cluster (within
seconds, with each broker's cause), a topic that does not exist (at
once), a partition that makes no progress, and
every rejected line (its reason, its content truncated to 64 bytes and
escaped), at a limited rate. Each case reads kproxyd's log."""

import json
import os
import re
import socket

from kptest import connect, read_summary, send, tmo, wait_for

WARN = re.compile(r"^\S+ warning: (.*)$", re.M)


def warnings(k, needle):
    return [m.group(1) for m in WARN.finditer(k.log_text())
            if needle in m.group(1)]


def no_info_lines(k):
    """log_level warning: no info or debug line reached the log."""
    bad = [ln for ln in k.log_text().splitlines()
           if re.match(r"^\S+ (info|debug): ", ln)]
    assert not bad, bad[:5]


def test_alert_unreachable_cluster(t):
    """Bootstrap brokers that refuse or do not resolve: one warning within
    seconds naming each broker and its cause, the waiting messages and what
    to check; not repeated every second."""
    k = t.kproxyd(None, {"brokers": ["127.0.0.1:1", "nosuchhost.invalid:9092"],
                         "log_level": "warning",
                         "shutdown_timeout_ms": 1000})
    s = connect(k.sock)
    try:
        s.sendall(b"orders waits\n")
        # no metadata for the topic: its writer waits, the line unread
        wait_for(lambda: k.stats()["topics"].get("orders", {}).get(
            "blocked") == 1, 10, "the writer paused")
        alert = wait_for(lambda: warnings(k, "cannot reach the Kafka cluster"),
                         5, "the unreachable-cluster warning")[0]
        assert "bootstrap 127.0.0.1:1: connect: Connection refused" in alert, \
            alert
        assert "bootstrap nosuchhost.invalid:9092: resolve: " in alert, alert
        assert "0 message(s) waiting, failing after delivery_timeout_ms, " \
            "1 writer(s) paused for topic metadata or room" in alert, alert
        assert "check `brokers` in %s" % k.conf_path in alert, alert
        # Every second the sweep looks again; the warning is not repeated
        # (once a minute while it lasts).
        wait_for(lambda: k.stats()["uptime_ms"] >= 4000, 10, "4 s uptime")
        assert len(warnings(k, "cannot reach the Kafka cluster")) == 1, \
            warnings(k, "cannot reach")
        no_info_lines(k)
    finally:
        s.close()
    # the line was never read: nothing failed (the writer is cut off)
    assert k.stop() == 0


def test_alert_unknown_topic(t):
    """A topic Metadata calls UNKNOWN_TOPIC_OR_PARTITION while a writer
    waits for it: warned at once (kp_topic's warning, from the first
    answer), naming the topic, the writer and what to check; once, not at
    every metadata retry; the messages go on when the topic appears."""
    c = t.cluster(topics={"known": 1})
    c.cmd("topic_err ghost UNKNOWN_TOPIC_OR_PART")
    k = t.kproxyd(c, {"log_level": "warning"})
    s = connect(k.sock)
    try:
        s.sendall(b"ghost one\nghost two\n")
        alert = wait_for(lambda: warnings(k, "topic ghost"), 5,
                         "the unknown-topic warning")[0]
        assert re.match(r"topic ghost: the cluster does not know it "
                        r"\(UNKNOWN_TOPIC_OR_PARTITION\); 1 writer\(s\) "
                        r"wait for it \(pid %d uid %d\), up to "
                        r"metadata_max_wait_ms: check the topic name, or "
                        r"create the topic" % (os.getpid(), os.getuid()),
                        alert), alert
        # Metadata is asked again (with backoff): still one warning.
        first = k.stats()["metadata_refreshes"]
        wait_for(lambda: k.stats()["metadata_refreshes"] >= first + 3, 15,
                 "three more metadata requests")
        assert len(warnings(k, "topic ghost")) == 1, warnings(k, "ghost")
        c.cmd("topic_err ghost 0")   # the mock creates it when asked
        s.shutdown(socket.SHUT_WR)
        assert read_summary(s) == {"delivered": 2, "failed": 0,
                                   "rejected": 0}
    finally:
        s.close()
    no_info_lines(k)
    assert k.stop() == 0


def test_alert_stuck_partition(t):
    """A partition without a leader holds its messages: a warning once the
    oldest waited half its delivery timeout, naming the partition and why;
    the other partition delivers."""
    c = t.cluster(topics={"st": 2})
    c.cmd("leader st 0 -1")
    k = t.kproxyd(c, {"log_level": "warning",
                      "listeners": [{"path": "j.sock", "format": "json"}],
                      "producer": {"delivery_timeout_ms": 6000,
                                   "request_timeout_ms": 2000}})
    data = b"".join(json.dumps(j).encode() + b"\n" for j in (
        {"topic": "st", "value": "stuck", "partition": 0},
        {"topic": "st", "value": "moves", "partition": 1}))
    r = send(k.sock, data)
    assert r == {"delivered": 1, "failed": 1, "rejected": 0}, r
    alert = wait_for(lambda: warnings(k, "make no progress"), 5,
                     "the stuck-partition warning")
    assert len(alert) == 1, alert
    assert re.match(r"1 partition\(s\) make no progress: st\[0\] waiting "
                    r"[3-5] s, no leader - their messages fail after "
                    r"delivery_timeout_ms; check ", alert[0]), alert
    no_info_lines(k)
    assert k.stop() == 0


def test_rejections_logged(t):
    """Every rejection reason is logged at warning level with the writer,
    the reason, the length and at most 64 bytes of the line, escaped; a
    flood of rejections is logged at a limited rate with a count of the
    rest."""
    c = t.cluster(topics={"okt": 1})
    k = t.kproxyd(c, {
        "log_level": "warning", "max_topics": 3,
        "producer": {"message_max_bytes": 150},
        "listeners": [{"path": "tv.sock", "format": "topic,value",
                       "allow_topics": ["ok*"]},
                      {"path": "js.sock", "format": "json"}]})
    tv, js = k.listener_paths
    assert send(tv, b"okt first\n")["delivered"] == 1
    long_topic = b"bad\x01topic" + b"C" * 100
    r = send(tv, b"".join([
        b"okt " + b"A" * 200 + b"\n",          # too_long
        b"nosep\n",                            # bad_format
        long_topic + b" v\n",                  # bad_topic
        b"other x\n",                          # topic_denied
        b"ok2 x\n", b"ok3 x\n",                # two more topics: 3
    ]))
    assert r["rejected"] == 4, r
    r = send(js, b"".join(json.dumps(j).encode() + b"\n" for j in (
        {"topic": "okt", "value": "v", "partition": 99},   # bad_partition
        {"topic": "okt", "value": "v",
         "timestamp": 4102444800000},                       # bad_timestamp
        {"topic": "ok4", "value": "v"},                     # too_many_topics
    )) + b"{not json\n")                                    # bad_json
    assert r["rejected"] == 4, r
    want = {"too_long", "bad_format", "bad_topic", "topic_denied",
            "bad_partition", "bad_timestamp", "too_many_topics", "bad_json"}
    got = {}
    for w in warnings(k, "line rejected"):
        m = re.match(r"client \d+ \(pid (\d+) uid (\d+)\): line rejected "
                     r"\(([a-z_]+), (\d+) bytes\): (.*)$", w)
        assert m, w
        assert int(m.group(1)) == os.getpid(), w
        got[m.group(3)] = (int(m.group(4)), m.group(5))
    assert set(got) == want, got
    # Content: 64 bytes at most, non-printable bytes escaped, "..." after.
    n, shown = got["bad_topic"]
    assert n == len(long_topic) + 2, got["bad_topic"]
    assert shown == "bad\\x01topic" + "C" * 55 + "...", shown
    n, shown = got["too_long"]
    assert shown == "okt " + "A" * 60 + "...", shown
    assert got["bad_format"][1] == "nosep", got

    # A flood: at most 10 lines per 5 s, then a count of the others.
    before = len(warnings(k, "line rejected"))
    r = send(tv, b"bad/topic x\n" * 200)
    assert r["rejected"] == 200, r
    flood = len(warnings(k, "line rejected")) - before
    assert flood <= 10, flood

    def suppressed():
        send(tv, b"bad/topic again\n")
        return warnings(k, "similar messages suppressed")
    counts = wait_for(suppressed, 15, "the suppressed count", interval=0.5)
    assert re.match(r"\(\d+ similar messages suppressed\)", counts[0]), counts
    no_info_lines(k)
    assert k.stop() == 0


def test_waiting_bad_partition_logged(t):
    """A line for a partition the topic does not have, read before the
    topic's metadata came: its writer waited for the metadata, then the
    line is rejected as it is read (bad_partition), logged like any."""
    c = t.cluster(topics={"hp": 2})
    k = t.kproxyd(c, {"log_level": "warning",
                      "listeners": [{"path": "j.sock", "format": "json"}]})
    r = send(k.sock, json.dumps({"topic": "hp", "value": "v",
                                 "partition": 7}).encode() + b"\n")
    assert r == {"delivered": 0, "failed": 0, "rejected": 1}, r
    w = warnings(k, "line rejected (bad_partition")
    assert len(w) == 1, w
    assert k.stop() == 0
