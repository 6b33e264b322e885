"""Broker faults and idempotent delivery (issue 4, SPEC "Delivery
semantics"): under leader moves, brokers going down, pushed Produce errors,
timeouts and idempotence errors kproxyd loses nothing, reorders nothing per
client and partition, and duplicates nothing on the wire; errors no retry
fixes fail at once and are counted, logged and dead-lettered.

Each test writes keyed lines (`topic,key,value`, value `cN sM`) from
several clients and reads them back with kp_consume. The 2.0.2 mock appends
a resent batch again instead of deduplicating it (see tests/kp_mock.c), so
where a connection is lost after the mock appended (disconnects, timeouts)
the topic may hold copies of resent batches: those tests drop the copies
before checking order and count, and prove on the wire (wiretrace) that
every resend was the identical batch - same producer id, epoch, sequence,
count and CRC - which a real broker deduplicates.
"""

import os
import re
import select
import socket
import threading
import time

import wiretrace
from fake_kafka import API_PRODUCE, FakeKafka
from kptest import (by_partition, check_delivery, connect,
                    murmur2_partition, read_summary, send, send_many,
                    stats_quiet, tmo, wait_for)

IDENT_RE = re.compile(rb"^c(\d+) s(\d+)$")

# Short timeouts so faults play out in seconds.
FAST = {
    "listeners": [{"path": "tkv.sock", "format": "topic,key,value"}],
    "producer": {"delivery_timeout_ms": 10000, "request_timeout_ms": 1000,
                 "retry_backoff_ms": 20, "retry_backoff_max_ms": 200,
                 "linger_ms": 5},
}


def ident(m):
    mo = IDENT_RE.match(m["value"] or b"")
    return (int(mo.group(1)), int(mo.group(2))) if mo else None


def merged(*dicts):
    out = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merged(out[k], v)
            else:
                out[k] = v
    return out


def make_load(topics, clients, lines, first_client=0, keys=None):
    """Lines for `clients` clients: client c's line s goes to
    topics[s % len(topics)] with a key from `keys(c, s)` (default: one of
    23 keys), value b"cC sS". Returns (expected, [lines per client])."""
    expected, per_client = {}, []
    for ci in range(first_client, first_client + clients):
        out = []
        for seq in range(lines):
            topic = topics[seq % len(topics)]
            key = keys(ci, seq) if keys else b"k%d" % ((ci * 7 + seq) % 23)
            value = b"c%d s%d" % (ci, seq)
            out.append(b"%s %s %s\n" % (topic.encode(), key, value))
            expected[(ci, seq)] = (topic, key, value)
        per_client.append(out)
    return expected, per_client


def paced_send(path, lines, chunks=30, pause=0.05):
    """One client writing its lines in `chunks` pieces spread over time, so
    that faults happen while it produces; returns its summary."""
    s = connect(path)
    try:
        step = max(1, len(lines) // chunks)
        for i in range(0, len(lines), step):
            s.sendall(b"".join(lines[i:i + step]))
            time.sleep(pause)
        s.shutdown(socket.SHUT_WR)
        return read_summary(s)
    finally:
        s.close()


def run_with_faults(path, per_client, faults, chunks=30, pause=0.05):
    """Paced clients and a fault script (a function) running together;
    returns the clients' summaries."""
    results = [None] * len(per_client)
    errors = []

    def client(i):
        try:
            results[i] = paced_send(path, per_client[i], chunks, pause)
        except BaseException as e:  # noqa: reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(len(per_client))]
    for th in threads:
        th.start()
    try:
        faults()
    finally:
        for th in threads:
            th.join(tmo(90))
    if errors:
        raise errors[0]
    assert all(th.is_alive() is False for th in threads), "client hung"
    return results


def drop_mock_copies(msgs, ident_fn):
    """The mock's copies of resent batches: keeps the first occurrence of
    each message. Returns (messages, number of copies dropped)."""
    seen, out, dups = set(), [], 0
    for lst in by_partition(msgs).values():
        for m in lst:
            i = ident_fn(m)
            if i in seen:
                dups += 1
                continue
            seen.add(i)
            out.append(m)
    return out, dups


def resent_messages(trace):
    return sum(s["count"] for s in trace if s["attempt"] > 1)


def all_delivered(results, lines):
    for r in results:
        assert r == {"delivered": lines, "failed": 0, "rejected": 0}, r


def test_leader_moves(t):
    """1. Leaders move among the 3 brokers while 4 clients produce: the
    old leader answers NOT_LEADER_OR_FOLLOWER, metadata is refreshed, the
    batches follow the new leader in order, nothing lost or duplicated."""
    c = t.cluster(topics={"moves": (4, 3)})
    k = t.kproxyd(c, FAST)
    clients, lines = 4, 600
    expected, per_client = make_load(["moves"], clients, lines)

    def faults():
        for i in range(16):
            time.sleep(0.12)
            c.cmd("leader moves %d %d" % (i % 4, (i * 5) % 3 + 1))

    all_delivered(run_with_faults(k.sock, per_client, faults), lines)
    s = stats_quiet(k)
    assert s["delivered"] == clients * lines and s["failed"] == 0, s
    assert s["retries"] > 0, "no batch met a moved leader: %r" % s
    msgs = t.consume(c, "moves", expected=len(expected))
    # NOT_LEADER appends nothing: no copies at all here.
    check_delivery(msgs, expected, ident, c.partitions)
    w = wiretrace.check(wiretrace.sends(k.log_text()))
    assert len(w["pids"]) == 1, w["pids"]
    assert re.search(r"moves \[\d\]: leader \d -> \d", k.log_text())
    assert k.stop() == 0


def test_broker_down_and_up(t):
    """2. One broker down and back up, then all three down for less than
    the delivery timeout: the partitions they lead hold their messages
    (reconnecting with backoff), then everything is delivered in order."""
    c = t.cluster(topics={"bounce": (6, 3)})
    k = t.kproxyd(c, FAST)
    clients, lines = 4, 800
    expected, per_client = make_load(["bounce"], clients, lines)
    connects = {}

    def faults():
        time.sleep(0.3)
        c.cmd("down 2")
        time.sleep(0.8)
        c.cmd("up 2")
        time.sleep(0.4)
        for b in (1, 2, 3):
            c.cmd("down %d" % b)
        time.sleep(1.5)
        connects["during"] = len(re.findall(
            r"broker \d \([^)]*\): (connect|connection)", k.log_text()))
        for b in (1, 2, 3):
            c.cmd("up %d" % b)

    results = run_with_faults(k.sock, per_client, faults, chunks=40,
                              pause=0.08)
    all_delivered(results, lines)
    s = stats_quiet(k)
    assert s["delivered"] == clients * lines and s["failed"] == 0, s
    assert sum(b["reconnects"] for b in s["brokers"]) >= 3, s["brokers"]
    trace = wiretrace.sends(k.log_text())
    w = wiretrace.check(trace)
    msgs = t.consume(c, "bounce")
    uniq, copies = drop_mock_copies(msgs, ident)
    check_delivery(uniq, expected, ident, c.partitions)
    assert copies <= resent_messages(trace), (copies, w)
    # Reconnects back off (20 ms doubling to 200 ms): a busy loop would
    # log thousands of attempts in 1.5 s, backoff about 10 per broker.
    reconnect_lines = len(re.findall(r"reconnect in \d+ ms", k.log_text()))
    assert reconnect_lines < 150, reconnect_lines
    assert k.stop() == 0


def test_pushed_produce_errors(t):
    """3. Produce answered NOT_LEADER_OR_FOLLOWER (6), REQUEST_TIMED_OUT
    (7), NOT_ENOUGH_REPLICAS (19), NOT_ENOUGH_REPLICAS_AFTER_APPEND (20),
    KAFKA_STORAGE_ERROR (56), and connections dropped on a Produce (-195,
    the mock's _TRANSPORT): all retried, nothing lost, order kept.

    One batch in flight per partition: a pushed error hits one request,
    and the 2.0.2 mock checks idempotent sequences only for transactional
    producers, so a later batch of the same partition pipelined behind
    the refused one would be appended before its resend (Kafka answers it
    OUT_OF_ORDER_SEQUENCE_NUMBER instead). Order with pipelined batches is
    test_pipelined_retry_keeps_order, against the fake broker, which
    checks sequences as Kafka does. Here the order is kproxyd's own."""
    c = t.cluster(topics={"errs": (3, 3), "errs2": (2, 3)})
    k = t.kproxyd(c, dict(FAST, producer=dict(FAST["producer"],
                                              max_in_flight=1)))
    clients, lines = 4, 500
    expected, per_client = make_load(["errs", "errs2"], clients, lines)
    errs = [6, 7, 19, 20, 56, -195]

    def faults():
        time.sleep(0.2)
        c.cmd("push_err Produce " + " ".join(str(e) for e in errs))
        time.sleep(0.6)
        c.cmd("push_err Produce " + " ".join(str(e) for e in errs))

    results = run_with_faults(k.sock, per_client, faults)
    all_delivered(results, lines)
    s = stats_quiet(k)
    assert s["delivered"] == clients * lines and s["failed"] == 0, s
    trace = wiretrace.sends(k.log_text())
    w = wiretrace.check(trace)
    # Every pushed error made at least one batch go again.
    assert w["resends"] >= 2 * len(errs), w
    assert s["retries"] >= 2 * len(errs), s
    assert sum(b["reconnects"] for b in s["brokers"]) >= 1, s["brokers"]
    log = k.log_text()
    # Stale-metadata errors asked for a refresh; a storm is coalesced.
    assert "metadata refresh requested: " in log
    assert s["metadata_refreshes"] < 40, s["metadata_refreshes"]
    msgs = t.consume(c, ["errs", "errs2"])
    uniq, copies = drop_mock_copies(msgs, ident)
    check_delivery(uniq, expected, ident, c.partitions)
    assert copies <= resent_messages(trace), (copies, w)
    assert k.stop() == 0


def test_pipelined_retry_keeps_order(t):
    """Batches of one partition pipelined (idempotence, up to 5 in flight,
    the first answers held back so that several are out) when the first
    is refused with a retriable error: the fake broker, which checks
    sequences as Kafka does, answers the ones behind it
    OUT_OF_ORDER_SEQUENCE_NUMBER, and kproxyd sends them all again in
    order. The partition holds every line once, in the order written."""
    fk = FakeKafka("modern", {"ord": 1}).start()
    t.clusters.append(fk)
    k = t.kproxyd(fk, {"producer": {
        "delivery_timeout_ms": 20000, "request_timeout_ms": 5000,
        "retry_backoff_ms": 20, "retry_backoff_max_ms": 200,
        "linger_ms": 1, "batch_messages": 20, "max_in_flight": 5}})
    assert send(k.sock, b"ord warm\n")["delivered"] == 1
    fk.delay_responses(200, api=API_PRODUCE, count=4)
    fk.inject_produce_error("ord", 0, 19)  # NOT_ENOUGH_REPLICAS
    n = 2000
    data = b"".join(b"ord v-%d\n" % i for i in range(n))
    assert send(k.sock, data) == {"delivered": n, "failed": 0,
                                  "rejected": 0}
    got = [r[3]["value"] for r in fk.records("ord")][1:]
    assert got == [b"v-%d" % i for i in range(n)], \
        "order: %r" % [g for g, w in zip(got, range(n))
                       if g != b"v-%d" % w][:5]
    # the batches behind the refused one were out, and were refused too
    assert "OUT_OF_ORDER_SEQUENCE_NUMBER" in k.log_text(), k.log_tail()
    s = stats_quiet(k)
    assert s["retries"] >= 2, s["retries"]
    assert k.stop() == 0


def test_requests_hold_at_most_a_mebibyte(t):
    """Batches of many partitions ready at once (the first Produce answer
    held back, one request in flight) go out in requests of at most 1 MiB
    of batches, as the Java producer's max.request.size: a request is one
    allocation in the broker, and on loopback the sender pays for its
    receive. A single batch larger than that still goes, alone."""
    fk = FakeKafka("modern", {"big": 8}).start()
    t.clusters.append(fk)
    k = t.kproxyd(fk, {"producer": {
        "linger_ms": 1, "batch_bytes": 262144, "max_in_flight": 1,
        "request_timeout_ms": 10000}})
    assert send(k.sock, b"big k0 warm\n")["delivered"] == 1
    fk.delay_responses(500, api=API_PRODUCE, count=1)
    n = 8000
    pad = b"x" * 900
    data = b"".join(b"big k%d %d-%s\n" % (i % 64, i, pad) for i in range(n))
    assert send(k.sock, data) == {"delivered": n, "failed": 0,
                                  "rejected": 0}
    assert len(fk.records("big")) == n + 1
    sizes = []
    for req in fk.reqs(API_PRODUCE):
        batches = [bt for bts in req["parts"].values() for bt in bts]
        sizes.append((len(batches), sum(12 + bt["length"] for bt in batches)))
    many = [s for s in sizes if s[0] > 1]
    # the held answer let batches of several partitions pile up ...
    assert many and max(c for c, _ in many) >= 3, sizes
    # ... and no request carried more than 1 MiB of them
    assert all(b <= 1 << 20 for _, b in many), sizes
    assert k.stop() == 0


def one_batch(k, topic, n, tag):
    """Writes n lines in one write (one batch: linger 50 ms); returns the
    summary and how long it took."""
    data = b"".join(b"%s key%d %s-%d\n" % (topic.encode(), i, tag.encode(), i)
                    for i in range(n))
    t0 = time.monotonic()
    r = send(k.sock, data)
    return r, time.monotonic() - t0


def test_non_retriable_errors(t):
    """4. RECORD_LIST_TOO_LARGE (18), UNSUPPORTED_FOR_MESSAGE_FORMAT (43)
    and TOPIC_AUTHORIZATION_FAILED (29) fail the batch at once: one send,
    no retry, counted by reason, dead-lettered; the daemon goes on.
    (INVALID_RECORD fails only the records at fault: test_isolation.)
    MESSAGE_TOO_LARGE (10) splits the batch in halves, down to single
    messages, before any message fails."""
    c = t.cluster(brokers=1, topics={"nr": 1, "big": 1})
    k = t.kproxyd(c, merged(FAST, {"producer": {"linger_ms": 50}}),
                  dead_letter=True)
    r, _ = one_batch(k, "nr", 3, "warm")
    assert r == {"delivered": 3, "failed": 0, "rejected": 0}, r
    names = {}
    for err in (18, 43, 29):
        sends_before = len(wiretrace.sends(k.log_text(), ["nr"]))
        c.cmd("push_err Produce %d" % err)
        r, took = one_batch(k, "nr", 5, "e%d" % err)
        assert r == {"delivered": 0, "failed": 5, "rejected": 0}, (err, r)
        # At once: well within request_timeout_ms and the retry backoff
        # a retry storm would take.
        assert took < tmo(0.9), (err, took)
        new = wiretrace.sends(k.log_text(), ["nr"])[sends_before:]
        assert len(new) == 1 and new[0]["attempt"] == 1, (err, new)
        assert new[0]["count"] == 5, new
        # The daemon goes on.
        r, _ = one_batch(k, "nr", 2, "after%d" % err)
        assert r == {"delivered": 2, "failed": 0, "rejected": 0}, (err, r)
        dl = [d for d in k.dead_letter_lines()
              if d["value"].startswith("e%d-" % err)]
        assert len(dl) == 5, dl
        names[err] = dl[0]["error"]
    assert len(set(names.values())) == 3, names

    # MESSAGE_TOO_LARGE, 3 times for a batch of 4: 4 -> 2+2 -> 1+1+1+1,
    # all delivered.
    c.cmd("push_err Produce 10 10 10")
    r, _ = one_batch(k, "big", 4, "split")
    assert r == {"delivered": 4, "failed": 0, "rejected": 0}, r
    counts = [s["count"] for s in wiretrace.sends(k.log_text(), ["big"])]
    assert counts == [4, 2, 2, 1, 1, 1, 1], counts
    # Twice for a batch of 2: split, then each single message fails.
    c.cmd("push_err Produce 10 10 10")
    r, _ = one_batch(k, "big", 2, "toolarge")
    assert r == {"delivered": 0, "failed": 2, "rejected": 0}, r
    counts = [s["count"] for s in wiretrace.sends(k.log_text(), ["big"])]
    assert counts[7:] == [2, 1, 1], counts
    c.cmd("clear_err Produce")
    assert k.log_text().count("too large, splitting") == 4

    s = stats_quiet(k)
    assert s["failed"] == 17, s
    nr = s["topics"]["nr"]["failed_by"]
    assert sorted(nr.values()) == [5, 5, 5], nr
    # failed_by counts by reason; the dead letter adds the broker's words
    assert set(nr) == {n.split(":")[0] for n in names.values()}, (nr, names)
    big = s["topics"]["big"]["failed_by"]
    assert list(big.values()) == [2], big
    metrics = k.control_lines("metrics", until="# EOF")
    assert any('topic="big"' in m and "message_too_large" in m
               for m in metrics), metrics
    msgs = t.consume(c, ["nr", "big"], expected=3 + 6 + 4)
    values = sorted(m["value"] for m in msgs)
    assert values == sorted(
        [b"warm-%d" % i for i in range(3)] +
        [b"after%d-%d" % (e, i) for e in (18, 43, 29) for i in range(2)] +
        [b"split-%d" % i for i in range(4)]), values
    wiretrace.check(wiretrace.sends(k.log_text()))
    assert k.stop() == 0


def test_all_brokers_down_past_delivery_timeout(t):
    """5. All brokers down for longer than delivery_timeout_ms: every
    message fails, is counted (stats, summaries) and dead-lettered, none
    missing; the dead letter file then replays into a json listener and
    everything arrives."""
    c = t.cluster(topics={"gone": 3})
    conf = merged(FAST, {
        "listeners": FAST["listeners"] + [{"path": "json.sock",
                                           "format": "json"}],
        "producer": {"delivery_timeout_ms": 1500}})
    k = t.kproxyd(c, conf, dead_letter=True)
    r = send(k.sock, b"gone warm c99 s0\n")
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    for b in (1, 2, 3):
        c.cmd("down %d" % b)
    clients, lines = 3, 300
    expected, per_client = make_load(["gone"], clients, lines)
    t0 = time.monotonic()
    results = send_many(k.sock, [b"".join(ls) for ls in per_client])
    took = time.monotonic() - t0
    for r in results:
        assert r == {"delivered": 0, "failed": lines, "rejected": 0}, r
    assert 1.4 < took < tmo(5), took
    s = stats_quiet(k)
    assert s["failed"] == clients * lines and s["delivered"] == 1, s
    assert s["topics"]["gone"]["failed_by"] == {
        "delivery_timeout": clients * lines}, s["topics"]["gone"]
    dl = k.dead_letter_lines()
    assert len(dl) == clients * lines, len(dl)
    seen = set()
    for d in dl:
        i = ident({"value": d["value"].encode()})
        assert i in expected and i not in seen, d
        seen.add(i)
        topic, key, value = expected[i]
        assert d["topic"] == topic and d["key"] == key.decode(), d
        assert d["error"] == "delivery_timeout", d
        assert isinstance(d["failed_at"], int) and \
            isinstance(d["timestamp"], int), d
        assert abs(d["failed_at"] - time.time() * 1000) < 60000, d
    assert "message(s) failed: delivery_timeout" in k.log_text()

    for b in (1, 2, 3):
        c.cmd("up %d" % b)
    with open(k.dead_letter_path, "rb") as f:
        replay = f.read()
    r = send(k.listener_paths[1], replay)
    assert r == {"delivered": clients * lines, "failed": 0,
                 "rejected": 0}, r
    msgs = [m for m in t.consume(c, "gone", expected=clients * lines + 1)
            if m["value"] != b"c99 s0"]
    check_delivery(msgs, expected, ident, c.partitions)
    by_id = {ident({"value": d["value"].encode()}): d for d in dl}
    for m in msgs:
        assert m["timestamp"] == by_id[ident(m)]["timestamp"], m
    assert k.stop() == 0


def test_leaderless_partition(t):
    """6. A partition without a leader holds only its own messages: the
    clients writing to the other partitions get their summaries while it
    waits; once it has a leader again its messages are delivered too."""
    c = t.cluster(topics={"ll": 4})
    k = t.kproxyd(c, FAST)
    r = send(k.sock, b"ll warm c99 s0\n")
    assert r["delivered"] == 1, r
    keys0 = [b"a%d" % i for i in range(400)
             if murmur2_partition(b"a%d" % i, 4) == 0][:20]
    keys_other = [b"b%d" % i for i in range(400)
                  if murmur2_partition(b"b%d" % i, 4) != 0][:40]
    c.cmd("leader ll 0 -1")
    lines = 300
    expected, held = make_load(["ll"], 1, lines,
                               keys=lambda ci, s: keys0[s % len(keys0)])
    exp2, free = make_load(["ll"], 3, lines, first_client=1,
                           keys=lambda ci, s: keys_other[(ci + s) % 40])
    expected.update(exp2)
    hs = connect(k.sock)
    hs.sendall(b"".join(held[0]))
    hs.shutdown(socket.SHUT_WR)
    t0 = time.monotonic()
    for r in send_many(k.sock, [b"".join(x) for x in free]):
        assert r == {"delivered": lines, "failed": 0, "rejected": 0}, r
    assert time.monotonic() - t0 < tmo(5)
    # The held client is still waiting for partition 0.
    ready, _, _ = select.select([hs], [], [], 0.3)
    assert not ready, "held client answered while leaderless"
    s = k.stats()
    p0 = s["topics"]["ll"]["partitions"]["0"]
    assert p0["leader"] == -1 and p0["queued"] == lines, p0
    c.cmd("leader ll 0 2")
    r = read_summary(hs)
    hs.close()
    assert r == {"delivered": lines, "failed": 0, "rejected": 0}, r
    msgs = [m for m in t.consume(c, "ll", expected=4 * lines + 1)
            if m["value"] != b"c99 s0"]
    check_delivery(msgs, expected, ident, c.partitions)
    assert k.stop() == 0


def test_timeout_retry_races_original(t):
    """7. Produce answers delayed past request_timeout_ms: the request
    times out, the connection is closed and its batches are resent in
    order while the mock has already appended the originals. On the wire
    every resend is the identical batch (same producer id, epoch, sequence,
    count, CRC) and sequences run without gaps, so a real broker keeps one
    copy; the mock's copies are exactly resent batches."""
    c = t.cluster(brokers=1, topics={"race": 3})
    k = t.kproxyd(c, FAST)
    r = send(k.sock, b"race warm c99 s0\n")
    assert r["delivered"] == 1, r
    clients, lines = 3, 400
    expected, per_client = make_load(["race"], clients, lines)

    def faults():
        time.sleep(0.2)
        c.cmd("broker_push_err 1 Produce 0:1600 0:1600 0:1600")

    results = run_with_faults(k.sock, per_client, faults)
    all_delivered(results, lines)
    s = stats_quiet(k)
    assert s["failed"] == 0, s
    log = k.log_text()
    assert "request timed out" in log
    trace = wiretrace.sends(log)
    w = wiretrace.check(trace)
    assert len(w["pids"]) == 1, w["pids"]
    resends = wiretrace.check_by_seq(trace)
    assert resends > 0, "no resend: the race did not happen"
    msgs = [m for m in t.consume(c, "race") if m["value"] != b"c99 s0"]
    uniq, copies = drop_mock_copies(msgs, ident)
    check_delivery(uniq, expected, ident, c.partitions)
    # The originals were appended before the timeout: the mock holds
    # copies, and no more of them than kproxyd resent.
    assert 0 < copies <= resent_messages(trace), (copies, w)
    assert k.stop() == 0


def test_idempotence_errors(t):
    """8. DUPLICATE_SEQUENCE_NUMBER (46) is success (the broker has the
    batch: the mock, which appended nothing, shows that kproxyd believed
    it); OUT_OF_ORDER_SEQUENCE_NUMBER (45), UNKNOWN_PRODUCER_ID (59) and
    INVALID_PRODUCER_EPOCH (47) drain, fetch a new producer id and resend
    in order with sequences from 0 under it: nothing lost or reordered."""
    c = t.cluster(topics={"dup": 1, "seq": (3, 3)})
    k = t.kproxyd(c, FAST)
    c.cmd("push_err Produce 46")
    r = send(k.sock, b"dup k c99 s0\n")
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    r = send(k.sock, b"dup k c99 s1\n")
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    clients, lines = 4, 500
    expected, per_client = make_load(["seq"], clients, lines)

    names = {45: "OUT_OF_ORDER_SEQUENCE_NUMBER", 59: "UNKNOWN_PRODUCER_ID",
             47: "INVALID_PRODUCER_EPOCH"}

    def faults():
        # One at a time: an answer about a producer id already replaced
        # asks for no other one.
        for err, name in names.items():
            time.sleep(0.2)
            c.cmd("push_err Produce %d" % err)
            wait_for(lambda: "new producer id needed (%s)" % name
                     in k.log_text(), 5, "a new producer id after %d" % err)

    all_delivered(run_with_faults(k.sock, per_client, faults, chunks=40,
                                  pause=0.06), lines)
    s = stats_quiet(k)
    assert s["failed"] == 0 and s["delivered"] == clients * lines + 2, s
    log = k.log_text()
    trace = wiretrace.sends(log)
    w = wiretrace.check(trace)
    assert len(w["pids"]) >= 3, w["pids"]
    msgs = t.consume(c, ["seq", "dup"])
    dup = [m["value"] for m in msgs if m["topic"] == "dup"]
    assert dup == [b"c99 s1"], dup
    msgs = [m for m in msgs if m["topic"] == "seq"]
    # Errors are answered without appending: no copies.
    check_delivery(msgs, expected, ident, c.partitions)
    assert k.stop() == 0


def test_initproducerid_unsupported(t):
    """9. Brokers without InitProducerId and idempotence on: kproxyd says
    so, produces nothing for idempotent topics (never a silent downgrade)
    and fails their messages at the delivery timeout with a clear reason;
    a topic with idempotence off is delivered."""
    c = t.cluster(topics={"idem": 2, "plain": 2})
    c.cmd("apiversion InitProducerId -1 -1")
    k = t.kproxyd(c, merged(FAST, {
        "producer": {"delivery_timeout_ms": 1500},
        "topics": {"plain": {"idempotence": False}}}), dead_letter=True)
    clients, lines = 3, 100
    exp_i, idem = make_load(["idem"], clients, lines)
    exp_p, plain = make_load(["plain"], clients, lines, first_client=10)
    results = send_many(k.sock, [b"".join(x) for x in idem + plain])
    for r in results[:clients]:
        assert r == {"delivered": 0, "failed": lines, "rejected": 0}, r
    for r in results[clients:]:
        assert r == {"delivered": lines, "failed": 0, "rejected": 0}, r
    log = k.log_text()
    assert "no broker supports InitProducerId" in log, k.log_tail()
    trace = wiretrace.sends(log)
    assert not [x for x in trace if x["topic"] == "idem"], trace[:3]
    assert all(x["pid"] == -1 for x in trace), trace[:3]
    s = stats_quiet(k)
    assert s["topics"]["idem"]["failed_by"] == {
        "delivery_timeout": clients * lines}, s["topics"]["idem"]
    assert len(k.dead_letter_lines()) == clients * lines
    msgs = t.consume(c, ["plain", "idem"], expected=clients * lines)
    check_delivery(msgs, exp_p, ident, c.partitions)
    assert k.stop() == 0


def test_silent_bootstrap_broker(t):
    """A bootstrap broker that accepts connections but never answers is
    given up after request_timeout_ms (and retried with backoff, not in a
    loop); the other bootstrap broker serves."""
    c = t.cluster(topics={"boot": 2})
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def acceptor():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                accepted.append(conn)   # kept open, never answered
            except socket.timeout:
                continue
            except OSError:
                return

    th = threading.Thread(target=acceptor, daemon=True)
    th.start()
    try:
        k = t.kproxyd(c, merged(FAST, {
            "brokers": ["127.0.0.1:%d" % port] + c.brokers[:1]}))
        r = send(k.sock, b"boot k c0 s0\n")
        assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
        wait_for(lambda: "bootstrap 127.0.0.1:%d: no answer to ApiVersions"
                 % port in k.log_text(), 10, "the silent broker given up")
        time.sleep(1.0)
        assert len(accepted) <= 4, len(accepted)
        assert k.stop() == 0
    finally:
        stop.set()
        th.join(5)
        srv.close()
        for conn in accepted:
            conn.close()


def test_metadata_moves_the_answering_broker(t):
    """A Metadata answer that gives a new address to the very broker it was
    read from: the connection is closed and remade inside its own read
    callback (regression: the read loop then went on over a reset buffer
    when socket() handed back the same fd number; run under ASan by make
    check). Every line is still delivered, once."""
    from fake_kafka import FakeKafka
    fk = FakeKafka("modern", {"mv": 1, "mv2": 1}, brokers=1).start()
    t.clusters.append(fk)
    k = t.kproxyd(fk, {"producer": {"linger_ms": 5}})
    assert send(k.sock, b"mv before\n") == {
        "delivered": 1, "failed": 0, "rejected": 0}
    # Broker 1 now answers Metadata (the bootstrap entry is retired); its
    # next answer moves it to another name for the same listener.
    fk.advertise(1, "localhost")
    assert send(k.sock, b"mv2 after\n") == {
        "delivered": 1, "failed": 0, "rejected": 0}
    wait_for(lambda: "address changes to localhost" in k.log_text(),
             tmo(10), "broker 1 moved")
    # Before the fix the loop read on over the reset buffer: a garbage
    # frame size (ASan's fill pattern) closed the new connection.
    assert "invalid response size" not in k.log_text(), k.log_tail()
    assert send(k.sock, b"mv later\n") == {
        "delivered": 1, "failed": 0, "rejected": 0}
    assert sorted(r[3]["value"] for r in fk.records()) == \
        [b"after", b"before", b"later"]
    assert k.stop() == 0


def test_moved_broker_dialled_at_its_new_address(t):
    """A broker moves while a Produce request to it is in flight: closing
    the old connection fails that request back, its batch is retried, and
    the retry connects the broker again — at its new address (before:
    the old one, as the address was changed only after the close, and the
    broker then stayed at the wrong endpoint)."""
    from fake_kafka import API_PRODUCE, FakeKafka
    fk = FakeKafka("modern", {"mv": 1}, brokers=2).start()
    t.clusters.append(fk)
    k = t.kproxyd(fk, {"shutdown_timeout_ms": 500,
                       "producer": {"linger_ms": 5,
                                    "request_timeout_ms": 30000}})
    assert send(k.sock, b"mv warm\n")["delivered"] == 1
    leader = fk.leader("mv", 0)[0]
    old_port = int(fk.brokers[leader - 1].rsplit(":", 1)[1])
    fk.delay_responses(None, api=API_PRODUCE, broker=leader)
    s = connect(k.sock)
    s.sendall(b"mv held\n")
    before = len(fk.reqs(API_PRODUCE, broker=leader))
    wait_for(lambda: len(fk.reqs(API_PRODUCE, broker=leader)) > before,
             tmo(10), "a Produce request in flight")
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    new_port = srv.getsockname()[1]
    try:
        fk.advertise(leader, "127.0.0.1", new_port)
        fk.add_topic("mv2", 1)
        s2 = connect(k.sock)
        s2.sendall(b"mv2 trigger\n")
        moved = "address changes to 127.0.0.1:%d" % new_port
        wait_for(lambda: moved in k.log_text(), tmo(10), "the move")
        dial = re.compile(r"broker %d \([^)]*\): connecting to "
                          r"127\.0\.0\.1:(\d+)" % leader)
        wait_for(lambda: [int(p) for p in dial.findall(
            k.log_text().split(moved, 1)[1])], tmo(10), "a new dial")
        after = [int(p) for p in dial.findall(
            k.log_text().split(moved, 1)[1])]
        assert old_port not in after and after[0] == new_port, after
        s2.close()
    finally:
        srv.close()
        s.close()
    fk.delay_responses(0)
