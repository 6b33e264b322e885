"""Protocol versions (issue 8): kproxyd negotiates with brokers old and new.

A fake broker (fake_kafka.py, an independent implementation of the Kafka
messages) advertises a table of API versions; kproxyd must pick the highest
version both sides know for each API (never Produce below v3), speak the
flexible encodings where the version has them, skip unknown tagged fields,
deliver every line byte-exact, and honour throttle_time_ms by holding off
the broker. librdkafka's mock (the other tests) covers the old versions
with a real client implementation on the other side."""

import re
import time

from fake_kafka import (API_APIVERSIONS, API_INITPID, API_METADATA,
                        API_PRODUCE, API_NAMES, FakeKafka)
from kptest import send, send_many, tmo

LINE_RE = re.compile(rb"^c(\d+) s(\d+)(?: |$)")


def fake(t, profile, topics, **kw):
    """A started FakeKafka, stopped at teardown (after the daemons)."""
    fk = FakeKafka(profile, topics, **kw).start()
    t.clusters.append(fk)
    return fk


def make_lines(topics, clients, per_client):
    """[bytes per client], {value: topic}: topic,value lines whose values
    say which client and sequence number they are (some with spaces)."""
    datas, expected = [], {}
    for ci in range(clients):
        buf = []
        for seq in range(per_client):
            topic = topics[seq % len(topics)]
            value = b"c%d s%d %s" % (ci, seq, b"v w" * (seq % 7))
            buf.append(topic.encode() + b" " + value + b"\n")
            expected[value] = topic
        datas.append(b"".join(buf))
    return datas, expected


def check_records(fk, expected):
    """Every expected value exactly once, on its topic, byte-exact, and
    each client's lines in order within a partition."""
    seen = {}
    last = {}
    for topic, part, off, rec in fk.records():
        v = rec["value"]
        assert v in expected, "unexpected record %r" % (v,)
        assert v not in seen, "duplicate record %r" % (v,)
        assert expected[v] == topic, (v, topic, expected[v])
        assert rec["key"] is None and rec["headers"] == [], rec
        seen[v] = (topic, part, off)
        m = LINE_RE.match(v)
        ci, seq = int(m.group(1)), int(m.group(2))
        k = (topic, part, ci)
        assert last.get(k, -1) < seq, "%r reordered" % (v,)
        last[k] = seq
    missing = [v for v in expected if v not in seen]
    assert not missing, "%d lines missing, e.g. %r" % (len(missing),
                                                       missing[:3])


def versions_by_api(fk):
    return {API_NAMES[a]: fk.versions(a)
            for a in (API_APIVERSIONS, API_METADATA, API_PRODUCE,
                      API_INITPID)}


def check_header_versions(fk):
    """Request header v2 exactly for the flexible versions."""
    flex_from = {API_APIVERSIONS: 3, API_METADATA: 9, API_PRODUCE: 9,
                 API_INITPID: 2}
    for r in fk.reqs():
        if r["header_version"] is None:
            continue            # an ApiVersions the broker did not parse
        want = 2 if r["version"] >= flex_from[r["api"]] else 1
        assert r["header_version"] == want, r


def deliver(t, fk, topics, clients=3, per_client=400, overrides=None):
    k = t.kproxyd(fk, overrides or {})
    datas, expected = make_lines(topics, clients, per_client)
    for r in send_many(k.sock, datas):
        assert r == {"delivered": per_client, "failed": 0,
                     "rejected": 0}, r
    check_records(fk, expected)
    assert fk.errors == [], fk.errors
    assert k.stop() == 0
    return k


def check_apiversions_v3(fk):
    av = fk.reqs(API_APIVERSIONS)
    assert av and all(r["version"] == 3 for r in av), av
    for r in av:
        assert r["sw_name"] == "kproxyd", r
        assert re.match(r"^[0-9][0-9A-Za-z.\-]*[0-9A-Za-z]$",
                        r["sw_version"]), r


def test_modern_broker_flexible_versions(t):
    """A broker advertising exactly what kproxyd implements: ApiVersions
    v3, Metadata v12, Produce v9, InitProducerId v4, all flexible, with
    unknown tagged fields in every response; idempotent, byte-exact."""
    fk = fake(t, "modern", {"mod": 3, "mod2": 2})
    deliver(t, fk, ["mod", "mod2"])
    got = versions_by_api(fk)
    assert got == {"ApiVersions": [3], "Metadata": [12], "Produce": [9],
                   "InitProducerId": [4]}, got
    check_apiversions_v3(fk)
    check_header_versions(fk)
    for r in fk.reqs(API_METADATA):
        # auto_create_topics defaults to false.
        assert r["allow_auto"] is False, r
        assert r["topics"] is not None, r
    for r in fk.reqs(API_INITPID):
        assert r["txn_id"] is None and r["producer_id"] == -1, r
    for r in fk.reqs(API_PRODUCE):
        assert r["acks"] == -1 and r["txn_id"] is None, r
        for batches in r["parts"].values():
            for bt in batches:
                assert bt["producer_id"] >= 1000 and bt["base_seq"] >= 0, bt
    # The responses did carry unknown tags in flexible versions.
    assert any(r["version"] >= 9 for r in fk.responses
               if r["api"] == API_PRODUCE)


def test_newest_broker_capped(t):
    """A broker newer than kproxyd (Metadata v0-13, Produce v3-11,
    InitProducerId v0-5): kproxyd caps at its own maximum."""
    fk = fake(t, "newest", {"cap": 2})
    deliver(t, fk, ["cap"], clients=2, per_client=200)
    got = versions_by_api(fk)
    assert got == {"ApiVersions": [3], "Metadata": [12], "Produce": [9],
                   "InitProducerId": [4]}, got
    check_header_versions(fk)


def test_old_broker_fallback(t):
    """A Kafka 2.0-like broker (ApiVersions v0-2, Metadata v1-2, Produce
    v3-7, InitProducerId v0-1): ApiVersions v3 is answered with
    UNSUPPORTED_VERSION, kproxyd asks again at v0 on the same connection,
    then speaks Metadata v2, Produce v7, InitProducerId v1."""
    fk = fake(t, "old", {"old": 3})
    deliver(t, fk, ["old"])
    got = versions_by_api(fk)
    assert got == {"ApiVersions": [0, 3], "Metadata": [2], "Produce": [7],
                   "InitProducerId": [1]}, got
    check_header_versions(fk)
    conns = sorted({r["conn"] for r in fk.reqs()})
    for c in conns:
        av = [r["version"] for r in fk.reqs(API_APIVERSIONS, conn=c)]
        assert av == [3, 0], "connection %d: ApiVersions %r" % (c, av)
        first = fk.reqs(conn=c)[:2]
        assert [r["api"] for r in first] == [API_APIVERSIONS] * 2, first


def test_mixed_ranges_pick_highest_common(t):
    """Ranges that only partly overlap: Metadata v5-10 -> v10, Produce
    v8-8 -> v8, InitProducerId v2-3 -> v3 (flexible from v2)."""
    table = {API_APIVERSIONS: (0, 3), API_METADATA: (5, 10),
             API_PRODUCE: (8, 8), API_INITPID: (2, 3)}
    fk = fake(t, table, {"mix": 2})
    deliver(t, fk, ["mix"], clients=2, per_client=100)
    got = versions_by_api(fk)
    assert got == {"ApiVersions": [3], "Metadata": [10], "Produce": [8],
                   "InitProducerId": [3]}, got
    check_header_versions(fk)


def test_acks1_no_idempotence(t):
    """acks=1 (no idempotence): no InitProducerId, batches without a
    producer id, Produce v9 with acks 1."""
    fk = fake(t, "modern", {"a1": 2})
    deliver(t, fk, ["a1"], clients=2, per_client=100,
            overrides={"producer": {"acks": 1}})
    assert fk.reqs(API_INITPID) == []
    for r in fk.reqs(API_PRODUCE):
        assert r["version"] == 9 and r["acks"] == 1, r
        for batches in r["parts"].values():
            for bt in batches:
                assert bt["producer_id"] == -1 and bt["base_seq"] == -1, bt


def test_broker_without_produce_v3_refused(t):
    """A broker that advertises only Produce v0-2 (no RecordBatch v2) is
    refused with a clear error; nothing is produced to it, and the line
    fails at delivery_timeout_ms."""
    fk = fake(t, "ancient", {"anc": 1})
    k = t.kproxyd(fk, {"producer": {"delivery_timeout_ms": 1500,
                                    "request_timeout_ms": 1000}},
                  dead_letter=True)
    r = send(k.sock, b"anc never-sent\n")
    assert r == {"delivered": 0, "failed": 1, "rejected": 0}, r
    assert fk.reqs(API_PRODUCE) == []
    assert fk.reqs(API_INITPID) == []
    log = k.log_text()
    assert re.search(r"Produce.*broker too old|too old.*Produce", log), \
        k.log_tail()
    assert "v0-v2" in log, k.log_tail()
    dl = k.dead_letter_lines()
    assert len(dl) == 1 and dl[0]["value"] == "never-sent", dl
    assert fk.errors == [], fk.errors
    assert k.stop() == 0


def first_after(fk, conn, t0, api=None):
    """The first request (of api, if given) on conn read after monotonic
    time t0. A request of another API may cross the throttled response on
    the wire (sent before kproxyd read it), so the tests look at the next
    Produce, which only a throttle-blind sender would send early."""
    later = [r for r in fk.reqs(conn=conn) if r["t"] > t0 and
             (api is None or r["api"] == api)]
    return later[0] if later else None


def test_produce_throttle_holds_off_broker(t):
    """A Produce response with throttle_time_ms=600: the next request to
    that broker waits at least that long (and does come)."""
    throttle = 600
    fk = fake(t, "modern", {"thr": 1})
    k = t.kproxyd(fk, {"producer": {"linger_ms": 1},
                       "shutdown_timeout_ms": 2000})
    assert send(k.sock, b"thr warm-up\n")["delivered"] == 1
    fk.throttle_ms(API_PRODUCE, throttle)
    assert send(k.sock, b"thr throttled\n")["delivered"] == 1
    resp = [r for r in fk.responses if r["api"] == API_PRODUCE and
            r["throttle"] == throttle]
    assert len(resp) == 1, fk.responses
    t_resp = resp[0]["t"]
    t_sent = time.monotonic()
    r = send(k.sock, b"thr after\n", timeout=5)
    assert r["delivered"] == 1, r
    nxt = first_after(fk, resp[0]["conn"], t_resp, API_PRODUCE)
    assert nxt is not None, fk.reqs()
    gap_ms = (nxt["t"] - t_resp) * 1000
    print("produce throttle %d ms: next Produce %.0f ms after the "
          "response (line written %.0f ms after it)"
          % (throttle, gap_ms, (t_sent - t_resp) * 1000))
    assert gap_ms >= throttle - 5, gap_ms
    assert gap_ms < throttle + tmo(1) * 1000, gap_ms
    assert fk.values("thr") == [b"warm-up", b"throttled", b"after"]
    assert k.stop() == 0


def test_metadata_throttle_holds_off_broker(t):
    """A Metadata response with throttle_time_ms=600 (a new topic makes
    kproxyd refresh): the Produce that follows on that broker waits at
    least that long."""
    throttle = 600
    fk = fake(t, "modern", {"m1": 1, "m2": 1})
    k = t.kproxyd(fk, {"producer": {"linger_ms": 1},
                       "shutdown_timeout_ms": 2000})
    assert send(k.sock, b"m1 first\n")["delivered"] == 1
    fk.throttle_ms(API_METADATA, throttle)
    assert send(k.sock, b"m2 second\n")["delivered"] == 1
    resp = [r for r in fk.responses if r["api"] == API_METADATA and
            r["throttle"] == throttle]
    assert len(resp) == 1, fk.responses
    t_resp = resp[0]["t"]
    nxt = first_after(fk, resp[0]["conn"], t_resp, API_PRODUCE)
    assert nxt is not None, fk.reqs()
    gap_ms = (nxt["t"] - t_resp) * 1000
    print("metadata throttle %d ms: next request (%s) %.0f ms after the "
          "response" % (throttle, API_NAMES[nxt["api"]], gap_ms))
    assert gap_ms >= throttle - 5, gap_ms
    assert k.stop() == 0


def test_record_errors_logged(t):
    """Produce v8+ per-record errors (RecordErrors, ErrorMessage) are
    logged with the failure."""
    fk = fake(t, "modern", {"rec": 1})
    k = t.kproxyd(fk, {"producer": {"acks": 1}})
    fk.inject_produce_error("rec", 0, 87,
                            record_errors=[(0, "fake: record 0 is bad")],
                            message="fake: batch refused")
    r = send(k.sock, b"rec refused\n")
    assert r == {"delivered": 0, "failed": 1, "rejected": 0}, r
    assert k.stop() == 0        # the failure log line may be deferred
    log = k.log_text()
    assert "INVALID_RECORD" in log, k.log_tail()
    assert "fake: batch refused" in log, k.log_tail()
    assert "fake: record 0 is bad" in log, k.log_tail()
    assert fk.errors == [], fk.errors


def test_flexible_without_unknown_tags(t):
    """The same delivery with no unknown tagged fields in the responses
    (the plain encoding), so a failure above can be told apart."""
    fk = fake(t, "modern", {"plain": 2}, unknown_tags=False)
    deliver(t, fk, ["plain"], clients=1, per_client=50)
    assert fk.versions(API_PRODUCE) == [9]
