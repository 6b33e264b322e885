"""Isolation (issue "Fifty services on one host"; SPEC "Isolation"): one
writer or topic that cannot make progress must not stall or fail the
others, and every resource an input can grow is bounded.

- a record the broker refuses on its own fails alone: the other messages
  of its batch (other writers' too) are sent again without it;
- a timestamp the broker would refuse is rejected when read;
- a topic the cluster does not know fails its messages after
  metadata_max_wait_ms (and new lines at once), with a warning naming it,
  and is asked about less and less often;
- idle topics are forgotten; max_topics bounds how many are kept.
"""

import json
import re
import time

from fake_kafka import FakeKafka
from kptest import connect, send, send_many, stats_quiet, tmo, wait_for

ISO = {
    "producer": {"delivery_timeout_ms": 20000, "request_timeout_ms": 2000,
                 "retry_backoff_ms": 20, "retry_backoff_max_ms": 200,
                 "linger_ms": 30},
}


def fake(t, profile, topics, **kw):
    fk = FakeKafka(profile, topics, **kw).start()
    t.clusters.append(fk)
    return fk


def lines(tag, n):
    return b"".join(b"iso %s-%d\n" % (tag.encode(), i) for i in range(n))


def test_refused_record_fails_alone(t):
    """Produce v8+ names the records at fault (RecordErrors): only that
    record fails (dead-lettered as invalid_record with the broker's words);
    the four others of its batch, from two writers, are sent again and
    delivered, in order."""
    fk = fake(t, "modern", {"iso": 1})
    k = t.kproxyd(fk, ISO, dead_letter=True)
    fk.inject_produce_error("iso", 0, 87, record_errors=[(2, "bad record")],
                            message="one record is invalid")
    a, b = send_many(k.sock, [lines("a", 3), lines("b", 2)])
    assert a["delivered"] + b["delivered"] == 4, (a, b)
    assert a["failed"] + b["failed"] == 1, (a, b)
    got = [r[3]["value"] for r in fk.records("iso")]
    assert len(got) == 4 and len(set(got)) == 4, got
    dl = k.dead_letter_lines()
    assert len(dl) == 1, dl
    assert dl[0]["error"].startswith("invalid_record"), dl[0]
    assert dl[0]["value"].encode() not in got, (dl, got)
    s = stats_quiet(k)
    assert s["topics"]["iso"]["failed_by"] == {"invalid_record": 1}, s
    assert "refused 1 of 5 record(s)" in k.log_text(), k.log_tail()
    assert k.stop() == 0


def test_refused_batch_bisected_without_record_errors(t):
    """Before Produce v8 the broker does not say which record: the batch
    is halved until each refused record is alone. One refusal of a batch
    of 4 → both halves delivered; a batch of 2 refused three times → each
    message fails alone."""
    fk = fake(t, "old", {"iso": 1})
    k = t.kproxyd(fk, ISO, dead_letter=True)
    fk.inject_produce_error("iso", 0, 87)
    assert send(k.sock, lines("h", 4)) == {
        "delivered": 4, "failed": 0, "rejected": 0}
    fk.inject_produce_error("iso", 0, 87, count=3)
    assert send(k.sock, lines("s", 2)) == {
        "delivered": 0, "failed": 2, "rejected": 0}
    assert len(k.dead_letter_lines()) == 2
    assert k.stop() == 0


def test_bad_timestamp_rejected_at_read(t):
    """A json line whose timestamp is far in the future (Kafka 4 refuses
    CreateTime more than max_timestamp_skew_ms ahead) is rejected as
    bad_timestamp when read; the other lines, in the same batch, arrive."""
    fk = fake(t, "modern", {"ts": 1})
    k = t.kproxyd(fk, dict(ISO, listeners=[{"path": "j.sock",
                                            "format": "json"}]))
    now = int(time.time() * 1000)
    data = b"".join(json.dumps(o).encode() + b"\n" for o in [
        {"topic": "ts", "value": "before"},
        {"topic": "ts", "value": "far", "timestamp": 9223372036854775807},
        {"topic": "ts", "value": "soon", "timestamp": now + 60000},
        {"topic": "ts", "value": "after"}])
    assert send(k.sock, data) == {"delivered": 3, "failed": 0, "rejected": 1}
    assert sorted(r[3]["value"] for r in fk.records("ts")) == \
        [b"after", b"before", b"soon"]
    assert stats_quiet(k)["rejected_by"]["bad_timestamp"] == 1
    assert k.stop() == 0


def test_unknown_topic_fails_after_metadata_max_wait(t):
    """A topic the cluster does not know: a warning naming it at the first
    answer, its messages fail as unknown_topic after metadata_max_wait_ms
    (not the delivery timeout), new lines then fail at once, Metadata asks
    about it less and less often, and once the topic exists lines go
    through again. A healthy topic is not held up meanwhile."""
    c = t.cluster(brokers=1, topics={"ok": 1})
    c.cmd("topic_err nosuch UNKNOWN_TOPIC_OR_PART")
    k = t.kproxyd(c, {"metadata_max_wait_ms": 1500,
                      "producer": {"delivery_timeout_ms": 60000,
                                   "linger_ms": 5}}, dead_letter=True)
    t0 = time.monotonic()
    r, ok = send_many(k.sock, [b"nosuch held\n", b"ok fine\n"])
    took = time.monotonic() - t0
    assert r == {"delivered": 0, "failed": 1, "rejected": 0}, r
    assert ok == {"delivered": 1, "failed": 0, "rejected": 0}, ok
    assert 1.2 < took < tmo(8), took
    log = k.log_text()
    assert re.search(r"warning: topic nosuch: the cluster does not know it",
                     log), k.log_tail()
    assert "topic nosuch: no metadata after 1500 ms" in log
    # Now it fails at once.
    t0 = time.monotonic()
    assert send(k.sock, b"nosuch again\n") == {
        "delivered": 0, "failed": 1, "rejected": 0}
    assert time.monotonic() - t0 < tmo(1)
    dl = k.dead_letter_lines()
    assert [d["error"].split(":")[0] for d in dl] == ["unknown_topic"] * 2
    # Asked about less and less often: over ~3 s, far fewer requests than
    # the 250 ms retry alone would send.
    before = k.stats()["metadata_refreshes"]
    time.sleep(3)
    asked = k.stats()["metadata_refreshes"] - before
    assert asked <= 6, asked
    # The topic appears: after its backoff, lines go through again.
    c.cmd("topic_err nosuch 0")  # (the mock created it when asked)
    wait_for(lambda: k.stats()["topics"]["nosuch"]["state"] == "ready",
             tmo(40), "nosuch known again")
    assert send(k.sock, b"nosuch now\n") == {
        "delivered": 1, "failed": 0, "rejected": 0}
    assert k.stop() == 0


def test_idle_topics_forgotten_and_max_topics(t):
    """A topic with nothing held and no line for topic_idle_ms leaves
    stats, metrics and Metadata requests; writing to it again works.
    Beyond max_topics kept at once, lines for new topics are rejected as
    too_many_topics."""
    c = t.cluster(brokers=1, topics={"a": 1, "b": 1, "c": 1})
    k = t.kproxyd(c, {"topic_idle_ms": 1000, "max_topics": 2,
                      "producer": {"linger_ms": 5}})
    assert send(k.sock, b"a 1\nb 1\nc 1\n") == {
        "delivered": 2, "failed": 0, "rejected": 1}
    st = k.stats()
    assert set(st["topics"]) == {"a", "b"}, st["topics"]
    assert st["rejected_by"]["too_many_topics"] == 1
    assert "max_topics (2) reached" in k.log_text()
    wait_for(lambda: not k.stats()["topics"], tmo(10), "topics forgotten")
    metrics = "\n".join(k.control_lines("metrics", until="# EOF"))
    assert 'topic="a"' not in metrics, metrics
    assert send(k.sock, b"c 2\na 2\n") == {
        "delivered": 2, "failed": 0, "rejected": 0}
    assert set(k.stats()["topics"]) == {"a", "c"}
    assert k.stop() == 0


def test_many_unknown_topics_do_not_storm_metadata(t):
    """300 topics the cluster does not know: Metadata requests back off
    instead of going out several times a second forever."""
    c = t.cluster(brokers=1, topics={"ok": 1})
    for i in range(300):
        c.cmd("topic_err unknown%d UNKNOWN_TOPIC_OR_PART" % i)
    k = t.kproxyd(c, {"producer": {"delivery_timeout_ms": 60000}})
    s = connect(k.sock)
    try:
        s.sendall(b"".join(b"unknown%d x\n" % i for i in range(300)))
        wait_for(lambda: k.stats()["received"] == 300, tmo(20), "read")
        time.sleep(2)  # let the backoff grow
        before = k.stats()["metadata_refreshes"]
        time.sleep(4)
        asked = k.stats()["metadata_refreshes"] - before
        # the old behaviour: a request every 250 ms (16 in 4 s)
        assert asked <= 5, asked
    finally:
        s.close()
    assert k.stop(timeout=60) in (0, 3)
