"""Receipts, length framing and static headers (issue 13, SPEC "Receipts",
listener `framing`, `receipts`, `headers`).

A connection of a `receipts: "each"` listener gets one line per message,
`ok N PARTITION OFFSET`, `failed N REASON` or `rejected N REASON`, before
the half-close summary. The tests keep their connections open while they
produce (no half-close until the end), collect the receipts with a reader
thread (ReceiptReader) and check every OFFSET with an independent consumer
(kp_consume): partition P at offset O holds exactly message N.
"""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

from kptest import (SUMMARY_RE, Skip, by_partition, connect,
                    murmur2_partition, send, stats_quiet, tmo, wait_for)

RECEIPTS = {"receipts": "each"}
FAST = {"delivery_timeout_ms": 10000, "request_timeout_ms": 1000,
        "retry_backoff_ms": 20, "retry_backoff_max_ms": 200,
        "linger_ms": 5}
HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
README = os.path.join(os.path.dirname(os.path.dirname(HERE)), "README.md")


class ReceiptReader:
    """Reads one connection's output in a thread: receipts by N (two for
    one N is an error), then the summary, after which nothing may come."""

    def __init__(self, sock, on_fate=None):
        self.sock = sock
        self.on_fate = on_fate  # called (in the thread) with N, fate
        self.receipts = {}  # N -> ("ok", (partition, offset)) | (kind, why)
        self.count = 0
        self.summary = None
        self.errors = []
        self.eof = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                with self.cond:
                    for line in lines:
                        self._line(line)
                    self.cond.notify_all()
            if buf:
                self.errors.append("partial last line %r" % buf[:100])
        except OSError as e:
            self.errors.append("recv: %r" % e)
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def _line(self, line):
        if self.summary is not None:
            self.errors.append("after the summary: %r" % line)
            return
        m = SUMMARY_RE.match(line + b"\n")
        if m:
            self.summary = {"delivered": int(m.group(1)),
                            "failed": int(m.group(2)),
                            "rejected": int(m.group(3))}
            return
        f = line.split(b" ")
        if f[0] == b"ok" and len(f) == 4:
            fate = ("ok", (int(f[2]), int(f[3])))
        elif f[0] in (b"failed", b"rejected") and len(f) == 3:
            fate = (f[0].decode(), f[2].decode())
        else:
            self.errors.append("not a receipt: %r" % line)
            return
        n = int(f[1])
        if n in self.receipts:
            self.errors.append("second receipt for %d: %r" % (n, line))
        self.receipts[n] = fate
        self.count += 1
        if self.on_fate:
            try:
                self.on_fate(n, fate)
            except AssertionError as e:
                self.errors.append(str(e))

    def wait_count(self, count, timeout=60):
        with self.cond:
            ok = self.cond.wait_for(
                lambda: self.count >= count or self.eof, tmo(timeout))
        assert not self.errors, self.errors[:5]
        assert ok and self.count >= count, \
            "%d of %d receipts (eof %s)" % (self.count, count, self.eof)

    def finish(self, timeout=60):
        """Half-closes, waits for the summary and EOF; returns the
        summary."""
        self.sock.shutdown(socket.SHUT_WR)
        with self.cond:
            self.cond.wait_for(lambda: self.eof, tmo(timeout))
        self.thread.join(tmo(5))
        assert self.eof, "no EOF"
        assert not self.errors, self.errors[:5]
        assert self.summary, "no summary"
        return self.summary


def open_receipts(path, on_fate=None):
    s = connect(path, timeout=120)
    return s, ReceiptReader(s, on_fate)


def offsets_map(msgs):
    """{(partition, offset): message} of one topic."""
    return {(m["partition"], m["offset"]): m for m in msgs}


def check_ok(receipts, expected, msgs):
    """Every N of expected {N: value} has an `ok` whose partition and
    offset hold exactly that value."""
    at = offsets_map(msgs)
    for n, value in expected.items():
        kind, where = receipts.get(n, (None, None))
        assert kind == "ok", "message %d: %r" % (n, (kind, where))
        m = at.get(where)
        assert m is not None, "message %d: nothing at %r" % (n, where)
        assert m["value"] == value, \
            "message %d at %r is %r, not %r" % (n, where, m["value"], value)


def test_receipts_basic(t):
    """One receipt per message in a mixed stream: accepted lines get
    `ok N P O` (checked against the consumer), rejected ones `rejected N
    REASON` with the right reason, empty lines no number; all before the
    summary; a listener without receipts still gets only its summary."""
    c = t.cluster(topics={"rb": 3})
    k = t.kproxyd(c, {"listeners": [
        dict(path="r.sock", format="topic,key,value", **RECEIPTS),
        {"path": "plain.sock", "format": "topic,key,value"}],
        "producer": FAST})
    lines = [b"rb k1 v1", b"", b"bad/topic k v2", b"rb k3 v3", b"onlytopic",
             b"rb  v5-null-key", b"x" * 2000000, b"rb k7 v7", b"\r",
             b"rb k9 " + b"\x00\xff\r" * 3]
    s, rr = open_receipts(k.listener_paths[0])
    s.sendall(b"\n".join(lines) + b"\n")
    # N counts non-empty lines; b"\r" is a line (rejected: no separator)
    rr.wait_count(9)
    summary = rr.finish()
    s.close()
    assert summary == {"delivered": 5, "failed": 0, "rejected": 4}, summary
    r = rr.receipts
    assert sorted(r) == list(range(1, 10)), sorted(r)
    assert r[2] == ("rejected", "bad_topic"), r[2]
    assert r[4] == ("rejected", "bad_format"), r[4]
    assert r[6] == ("rejected", "too_long"), r[6]
    assert r[8] == ("rejected", "bad_format"), r[8]
    msgs = t.consume(c, "rb", expected=5)
    check_ok(r, {1: b"v1", 3: b"v3", 5: b"v5-null-key", 7: b"v7",
                 9: b"\x00\xff\r" * 3}, msgs)
    # receipts point at distinct records
    assert len({r[n][1] for n in (1, 3, 5, 7, 9)}) == 5
    plain = send(k.listener_paths[1], b"rb k v\nbad/t k v\n")
    assert plain == {"delivered": 1, "failed": 0, "rejected": 1}, plain
    assert k.stop() == 0


def paced(sock, lines, chunks=40, pause=0.05):
    """Writes lines in `chunks` pieces spread over time (faults happen
    meanwhile); the connection stays open."""
    step = max(1, len(lines) // chunks)
    for i in range(0, len(lines), step):
        sock.sendall(b"".join(lines[i:i + step]))
        time.sleep(pause)


def keyed(topic, prefix, count, keys=31):
    """count lines `topic kK prefix-N` numbered from 1, and {N: value}."""
    lines, values = [], {}
    for n in range(1, count + 1):
        v = b"%s-%d" % (prefix, n)
        lines.append(b"%s k%d %s\n" % (topic, n % keys, v))
        values[n] = v
    return lines, values


def test_receipts_faults_20000(t):
    """20,000 keyed messages on one long-lived connection while leaders
    move and Produce fails with retriable errors (and connections drop),
    beside a writer without receipts on the same partitions: every N gets
    exactly one `ok`, and partition P at offset O holds exactly message N
    (murmur2's partition for its key). Receipts arrive while the writer
    still writes."""
    c = t.cluster(topics={"rf": (4, 3)})
    k = t.kproxyd(c, {"listeners": [
        dict(path="r.sock", format="topic,key,value", **RECEIPTS),
        {"path": "plain.sock", "format": "topic,key,value"}],
        "producer": FAST})
    total = 20000
    lines, values = keyed(b"rf", b"r", total)
    other, _ = keyed(b"rf", b"o", 5000)
    s, rr = open_receipts(k.listener_paths[0])
    seen_early = []

    def writer():
        paced(s, lines[:-500])
        seen_early.append(rr.count)
        s.sendall(b"".join(lines[-500:]))

    def faults():
        for i in range(12):
            time.sleep(0.15)
            c.cmd("leader rf %d %d" % (i % 4, (i * 5) % 3 + 1))
            if i in (3, 8):
                c.cmd("push_err Produce 6 7 19 20 56 -195")

    ths = [threading.Thread(target=f, daemon=True)
           for f in (writer, faults,
                     lambda: send(k.listener_paths[1], b"".join(other)))]
    for th in ths:
        th.start()
    for th in ths:
        th.join(tmo(120))
    assert not any(th.is_alive() for th in ths), "a thread hung"
    rr.wait_count(total, timeout=90)
    assert seen_early and seen_early[0] > 0, "no receipt before the end"
    summary = rr.finish()
    s.close()
    assert summary == {"delivered": total, "failed": 0, "rejected": 0}, \
        summary
    assert sorted(rr.receipts) == list(range(1, total + 1))
    st = stats_quiet(k)
    assert st["retries"] > 0, st
    msgs = t.consume(c, "rf", expected=total + 5000)
    check_ok(rr.receipts, values, msgs)
    for n in range(1, total + 1):
        part = rr.receipts[n][1][0]
        assert part == murmur2_partition(b"k%d" % (n % 31), 4), (n, part)
    print("  %d receipts, %d retries, received %d before the last write"
          % (rr.count, st["retries"], seen_early[0]))
    assert k.stop() == 0


class DeadLetterWatch:
    """on_fate for ReceiptReader: when `failed N` arrives, message N's
    value must already be in the dead letter file (DESIGN 18: recorded
    before the writer is told)."""

    def __init__(self, path, values):
        self.path = path
        self.values = values  # N -> value (str)
        self.seen = set()
        self.checked = 0

    def __call__(self, n, fate):
        if fate[0] != "failed":
            return
        if self.values[n] not in self.seen:
            with open(self.path) as f:
                self.seen = {json.loads(x)["value"] for x in f}
        assert self.values[n] in self.seen, \
            "failed %d told before its dead letter line" % n
        self.checked += 1


def test_receipts_fates(t):
    """The reasons: rejected at read (bad_json, topic_denied,
    bad_partition, too_long), rejected after the fact (a held message whose
    partition the topic turns out not to have: bad_partition at replay),
    failed while held (unknown_topic) and failed by delivery_timeout (all
    brokers down) - each `failed` only once its line is in the dead
    letter file. Held messages that make it get `ok` with their offsets."""
    c = t.cluster(topics={"known": 2, "held": 2, "down": 2})
    k = t.kproxyd(c, {"listeners": [dict(
        path="j.sock", format="json",
        allow_topics=["known", "held", "down", "nometa"], **RECEIPTS)],
        "producer": dict(FAST, delivery_timeout_ms=1500)}, dead_letter=True)
    s, rr = open_receipts(k.sock)
    s.sendall(b'{"topic":"known","value":"warm"}\n'
              b'{"topic":"down","value":"warm"}\n')
    assert rr.finish()["delivered"] == 2
    s.close()
    c.cmd("topic_err nometa UNKNOWN_TOPIC_OR_PART")
    values = {}
    lines = []

    def line(obj, value=None):
        lines.append(json.dumps(obj).encode() if obj is not None else value)
        values[len(lines)] = obj.get("value") if obj else None

    line({"topic": "known", "value": "k1"})                     # 1 ok
    line(None, b'{"topic": "known", "value": ')                  # 2 bad_json
    line({"topic": "other", "value": "x"})                      # 3 denied
    line({"topic": "known", "value": "p9", "partition": 9})     # 4 bad_part
    line({"topic": "held", "value": "h0", "partition": 0})      # 5 ok
    line({"topic": "held", "value": "h7", "partition": 7})      # 6 replay
    line({"topic": "held", "value": "h1", "key": "a"})          # 7 ok
    line({"topic": "nometa", "value": "n1"})                    # 8 failed
    line({"topic": "known", "value": "v" * 1100000})            # 9 too_long
    watch = DeadLetterWatch(k.dead_letter_path, values)
    s, rr = open_receipts(k.sock, watch)
    s.sendall(b"\n".join(lines) + b"\n")
    rr.wait_count(len(lines), timeout=30)
    r = rr.receipts
    assert r[2] == ("rejected", "bad_json"), r[2]
    assert r[3] == ("rejected", "topic_denied"), r[3]
    assert r[4] == ("rejected", "bad_partition"), r[4]
    assert r[6] == ("rejected", "bad_partition"), r[6]
    assert r[8] == ("failed", "unknown_topic"), r[8]
    assert r[9] == ("rejected", "too_long"), r[9]
    # the same connection goes on: brokers down past delivery_timeout_ms
    for b in (1, 2, 3):
        c.cmd("down %d" % b)
    more = [json.dumps({"topic": "down", "value": "d%d" % i,
                        "key": str(i)}).encode() for i in range(40)]
    for i in range(40):
        values[len(lines) + 1 + i] = "d%d" % i
    s.sendall(b"\n".join(more) + b"\n")
    rr.wait_count(len(lines) + 40, timeout=30)
    for n in range(len(lines) + 1, len(lines) + 41):
        assert r[n] == ("failed", "delivery_timeout"), (n, r[n])
    assert watch.checked == 41, watch.checked
    for b in (1, 2, 3):
        c.cmd("up %d" % b)
    summary = rr.finish()
    s.close()
    assert summary == {"delivered": 3, "failed": 41, "rejected": 5}, summary
    msgs = t.consume(c, ["known", "held"], expected=5)
    check_ok(r, {1: b"k1"}, [m for m in msgs if m["topic"] == "known"])
    check_ok(r, {5: b"h0", 7: b"h1"},
             [m for m in msgs if m["topic"] == "held"])
    assert r[5][1][0] == 0, r[5]
    st = k.stats()
    assert st["rejected_by"]["bad_partition"] == 2, st["rejected_by"]
    assert k.stop() == 0


def test_receipts_split_and_retries(t):
    """MESSAGE_TOO_LARGE splits a batch of 8 down to single messages, and
    idempotent batches are retried after NOT_LEADER, NOT_ENOUGH_REPLICAS
    and a dropped connection: the receipts give the offsets of the attempts
    that succeeded (the consumer finds each message there); with acks 0
    the offset is -1."""
    c = t.cluster(brokers=1, topics={"sp": 1, "id": 2, "a0": 2})
    k = t.kproxyd(c, {"listeners": [dict(
        path="r.sock", format="topic,key,value", **RECEIPTS)],
        "producer": dict(FAST, linger_ms=50),
        "topics": {"a0": {"acks": 0}}})
    s, rr = open_receipts(k.sock)
    warm = b"sp w warm\nid w warm\na0 w warm\n"
    s.sendall(warm)
    rr.wait_count(3)
    values, n = {}, 3
    c.cmd("push_err Produce 10 10 10")
    batch = []
    for i in range(8):
        n += 1
        values[n] = b"split-%d" % i
        batch.append(b"sp k%d split-%d\n" % (i, i))
    s.sendall(b"".join(batch))
    rr.wait_count(n)
    sends = [m for m in re.findall(r"topic=sp partition=0 .* count=(\d+)",
                                   k.log_text())]
    assert sends[-7:] == ["8", "4", "4", "2", "2", "2", "2"], sends
    for errs in ("6", "19", "-195", "7 20 56"):
        c.cmd("push_err Produce " + errs)
        batch = []
        for i in range(20):
            n += 1
            values[n] = b"id-%s-%d" % (errs.encode(), i)
            batch.append(b"id k%d %s\n" % (i, values[n]))
        s.sendall(b"".join(batch))
        rr.wait_count(n)
    first_a0 = n + 1
    for i in range(10):
        n += 1
        s.sendall(b"a0 k%d zero-%d\n" % (i, i))
    rr.wait_count(n)
    summary = rr.finish()
    s.close()
    assert summary == {"delivered": n, "failed": 0, "rejected": 0}, summary
    st = stats_quiet(k)
    assert st["retries"] >= 4 + 6, st["retries"]
    msgs = t.consume(c, ["sp", "id"], expected=n - 10 + 2 - 3)
    for topic in ("sp", "id"):
        check_ok(rr.receipts,
                 {m: v for m, v in values.items()
                  if v.startswith(b"split" if topic == "sp" else b"id")},
                 [m for m in msgs if m["topic"] == topic])
    # The mock appends a batch resent after a dropped connection again:
    # the receipt names the copy whose answer came (the last one).
    last, copies = {}, 0
    for m in msgs:
        if m["topic"] == "id":
            copies += m["value"] in last
            last[m["value"]] = max(last.get(m["value"], (-1, -1)),
                                   (m["partition"], m["offset"]))
    for m, v in values.items():
        if v.startswith(b"id"):
            assert rr.receipts[m][1] == last[v], (m, rr.receipts[m], last[v])
    print("  %d retries, %d copies left by resends" % (st["retries"], copies))
    for m in range(first_a0, n + 1):
        kind, (part, off) = rr.receipts[m]
        assert kind == "ok" and off == -1, rr.receipts[m]
        assert part == murmur2_partition(b"k%d" % (m - first_a0), 2)
    assert k.stop() == 0


def test_receipts_shutdown(t):
    """SIGTERM with the broker down: at the shutdown deadline every waiting
    message fails (`shutdown`, or `shutdown_unconfirmed` when it was sent
    without an answer), and the writers still get those receipts before
    kproxyd exits 3: the one that half-closed its summary too, the one that
    kept its connection open none (it never asked for one)."""
    c = t.cluster(brokers=1, topics={"sd": 2})
    k = t.kproxyd(c, {"listeners": [dict(
        path="r.sock", format="topic,key,value", **RECEIPTS)],
        "shutdown_timeout_ms": 1000, "producer": FAST})
    open_, half = open_receipts(k.sock), open_receipts(k.sock)
    for s, rr in (open_, half):
        s.sendall(b"sd k warm\n")
        rr.wait_count(1)
    c.cmd("down 1")
    for s, rr in (open_, half):
        s.sendall(b"".join(b"sd k%d v%d\n" % (i, i) for i in range(10)))
    half[0].shutdown(socket.SHUT_WR)
    wait_for(lambda: k.stats()["received"] == 22, 10, "the lines read")
    k.send_signal(__import__("signal").SIGTERM)
    assert k.wait(tmo(20)) == 3
    for s, rr in (open_, half):
        with rr.cond:
            rr.cond.wait_for(lambda: rr.eof, tmo(10))
        assert not rr.errors, rr.errors
        for n in range(2, 12):
            assert rr.receipts[n][0] == "failed" and rr.receipts[n][1] in (
                "shutdown", "shutdown_unconfirmed"), rr.receipts[n]
        s.close()
    assert open_[1].summary is None, open_[1].summary
    assert half[1].summary == {"delivered": 1, "failed": 10,
                               "rejected": 0}, half[1].summary


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_receipts_unread(t):
    """A writer that never reads its receipts: once 1 MiB of them waits,
    kproxyd stops reading that connection only (another writer goes on),
    its memory stays bounded, nothing is dropped; once the writer reads,
    it completes with every receipt."""
    c = t.cluster(brokers=1, topics={"ur": 2})
    k = t.kproxyd(c, {"listeners": [
        dict(path="r.sock", format="value", topic="ur", **RECEIPTS),
        {"path": "plain.sock", "format": "value", "topic": "ur"}]})
    total = 1000000
    data = b"".join(b"v%07d\n" % i for i in range(total))
    warm = send(k.listener_paths[1], b"warm\n")
    assert warm["delivered"] == 1, warm
    base = rss_kib(k.proc.pid)
    s = connect(k.listener_paths[0], timeout=300)
    writer = threading.Thread(target=s.sendall, args=(data,), daemon=True)
    writer.start()
    wait_for(lambda: k.stats()["receipt_pauses"] >= 1, 60,
             "the connection paused for unread receipts")
    got = k.stats()["received"]
    assert got < total + 1, got
    # Another writer is served meanwhile, and while it is, nothing more is
    # read from the blocked one: what it wrote stays in the socket.
    other = send(k.listener_paths[1], b"other\n" * 1000)
    assert other == {"delivered": 1000, "failed": 0, "rejected": 0}, other
    assert k.stats()["received"] == got + 1000
    assert writer.is_alive()
    blocked_rss = rss_kib(k.proc.pid)
    # the receipts of everything read so far, and 1 MiB of them unread,
    # fit well within 32 MiB beyond what kproxyd held before
    assert blocked_rss - base < 32 * 1024, (base, blocked_rss)
    rr = ReceiptReader(s)
    writer.join(tmo(120))
    assert not writer.is_alive()
    rr.wait_count(total, timeout=120)
    summary = rr.finish()
    s.close()
    assert summary == {"delivered": total, "failed": 0, "rejected": 0}
    assert sorted(rr.receipts) == list(range(1, total + 1))
    assert all(f[0] == "ok" for f in rr.receipts.values())
    print("  RSS %d KiB before, %d KiB while blocked (%d of %d messages "
          "read), %d KiB at the end"
          % (base, blocked_rss, got - 1, total, rss_kib(k.proc.pid)))
    assert k.stop() == 0


def frame(b):
    return struct.pack(">I", len(b)) + b


def pattern(size, salt):
    """size bytes holding every byte value: \\n, \\r, NUL and 0xff too."""
    block = bytes((i * 167 + salt) % 256 for i in range(256))
    return (block * (size // 256 + 1))[:size]


def chunked(sock, data, seed):
    """Writes data in uneven pieces, so frames are split across reads."""
    i, step = 0, seed
    while i < len(data):
        step = (step * 1103515245 + 12345) % 2147483648
        n = 1 + step % 70000
        sock.sendall(data[i:i + n])
        i += n


MAX = 1048576
SIZES = [0, 1, 2, 3, 4, 5, 255, 256, 257, 4095, 65536, 999999, MAX - 40, MAX]


def test_length_framing(t):
    """framing "length" in every format: values of 0 to message_max_bytes
    bytes holding \\n, \\r, NUL and 0xff arrive byte-exact (json: pretty
    printed, newlines inside the frame); a frame over message_max_bytes is
    skipped and rejected (too_long) and the next frames go on; a
    zero-length frame is no message; EOF inside a frame rejects it."""
    formats = {"value": "lv", "key,value": "lkv", "topic,value": None,
               "topic,key,value": None, "json": None}
    c = t.cluster(brokers=1, topics={"lv": 1, "lkv": 1, "ltv": 1,
                                     "ltkv": 1, "lj": 1})
    listeners = []
    for fmt, topic in formats.items():
        lst = dict(path="%s.sock" % fmt.replace(",", "_"), format=fmt,
                   framing="length", **RECEIPTS)
        if topic:
            lst["topic"] = topic
        listeners.append(lst)
    k = t.kproxyd(c, {"listeners": listeners,
                      "producer": {"linger_ms": 2}})
    topics = {"value": "lv", "key,value": "lkv", "topic,value": "ltv",
              "topic,key,value": "ltkv", "json": "lj"}
    expected = {}
    for i, (fmt, path) in enumerate(zip(formats, k.listener_paths)):
        topic = topics[fmt].encode()
        frames, values, keys, n = [], {}, {}, 0
        for size in SIZES + [MAX + 1]:
            v = pattern(size, i + size)
            key = b"key%d" % size
            if fmt == "value":
                body = v
            elif fmt == "key,value":
                body = key + b" " + v
            elif fmt == "topic,value":
                body = topic + b" " + v
            elif fmt == "topic,key,value":
                body = topic + b" " + key + b" " + v
            else:
                body = json.dumps({"topic": topic.decode(),
                                   "key": key.decode(),
                                   "value_base64": __import__("base64")
                                   .b64encode(v).decode()},
                                  indent=2).encode()
                if size == MAX + 1:
                    body = b" " * (MAX + 1)
            frames.append(frame(body))
            if len(body) == 0:
                continue  # skipped: no number
            n += 1
            if size <= MAX and len(body) <= MAX:
                values[n] = v
                keys[n] = None if fmt in ("value", "topic,value") else key
            else:
                values[n] = None  # rejected
            frames.append(frame(b""))  # between every two: skipped
        s, rr = open_receipts(path)
        chunked(s, b"".join(frames) + b"\x00\x00\x01", i + 1)
        rr.wait_count(n)
        summary = rr.finish()  # the 3 bytes left: a truncated frame
        s.close()
        r = rr.receipts
        rejected = [m for m, v in values.items() if v is None]
        assert summary == {"delivered": n - len(rejected), "failed": 0,
                           "rejected": len(rejected) + 1}, (fmt, summary)
        for m in rejected:
            assert r[m] == ("rejected", "too_long"), (fmt, m, r[m])
        assert r[n + 1] == ("rejected", "bad_format"), (fmt, r.get(n + 1))
        expected[fmt] = (values, keys, r)
    for fmt, (values, keys, r) in expected.items():
        msgs = t.consume(c, topics[fmt],
                         expected=sum(v is not None for v in values.values()))
        at = offsets_map(msgs)
        for m, v in values.items():
            if v is None:
                continue
            got = at[r[m][1]]
            assert got["value"] == v, (fmt, m, len(got["value"]), len(v))
            assert got["key"] == keys[m], (fmt, m, got["key"])
    assert k.stop() == 0


def test_static_headers(t):
    """`headers` adds the listener's static headers to every record, after
    the message's own (json) and before peer_headers' peer.*; also to
    messages held for metadata and replayed."""
    c = t.cluster(brokers=1, topics={"hd": 1})
    k = t.kproxyd(c, {"listeners": [
        {"path": "j.sock", "format": "json",
         "headers": {"source": "web", "env": "prod"}, "peer_headers": True},
        {"path": "v.sock", "format": "topic,value",
         "headers": {"source": "batch"}}]})
    r = send(k.listener_paths[0],
             b'{"topic": "hd", "value": "a", "headers": {"own": "1"}}\n'
             b'{"topic": "hd", "value": "b"}\n')
    assert r["delivered"] == 2, r
    r = send(k.listener_paths[1], b"hd c\n")
    assert r["delivered"] == 1, r
    msgs = {m["value"]: m["headers"]
            for m in t.consume(c, "hd", expected=3)}
    uid, gid, pid = (str(os.getuid()).encode(), str(os.getgid()).encode(),
                     str(os.getpid()).encode())
    peer = [("peer.uid", uid), ("peer.gid", gid), ("peer.pid", pid)]
    assert msgs[b"a"][0] == ("own", b"1"), msgs[b"a"]
    assert sorted(msgs[b"a"][1:3]) == [("env", b"prod"),
                                       ("source", b"web")], msgs[b"a"]
    assert msgs[b"a"][3:] == peer, msgs[b"a"]
    assert sorted(msgs[b"b"][:2]) == [("env", b"prod"),
                                      ("source", b"web")], msgs[b"b"]
    assert msgs[b"b"][2:] == peer, msgs[b"b"]
    assert msgs[b"c"] == [("source", b"batch")], msgs[b"c"]
    assert k.stop() == 0


def example_input():
    """Lines for an example client: keyed messages, a rejected one, empty
    lines (no number); returns (stdin bytes, {line: value})."""
    lines, values = [], {}
    for i in range(300):
        line = b"ex k%d example-%d" % (i % 7, i)
        lines.append(line)
        values[line] = b"example-%d" % i
        if i % 100 == 50:
            lines += [b"", b"bad/topic k nope-%d" % i]
    return b"\n".join(lines) + b"\n", values


def check_example_output(t, c, out, values):
    """`ok P O LINE` for each good line, with LINE at partition P offset O;
    `error rejected bad_topic LINE` for the bad ones."""
    oks, errors = {}, []
    for line in out.splitlines():
        f = line.split(b" ", 3)
        if f[0] == b"ok":
            oks[f[3]] = (int(f[1]), int(f[2]))
        else:
            errors.append(line)
    assert sorted(oks) == sorted(values), (len(oks), len(values))
    assert errors == [b"error rejected bad_topic bad/topic k nope-%d" % i
                      for i in (50, 150, 250)], errors
    at = offsets_map(t.consume(c, "ex", expected=len(values)))
    for line, where in oks.items():
        assert at[where]["value"] == values[line], (line, where)


def example_daemon(t):
    c = t.cluster(brokers=1, topics={"ex": 3})
    k = t.kproxyd(c, {"listeners": [dict(
        path="ex.sock", format="topic,key,value", **RECEIPTS)]})
    return c, k


def test_example_go(t):
    """tests/examples/receipts_client.go (sarama's AsyncProducer over one
    connection: Input(), Successes(), Errors()) built with Debian's
    golang-go, offline, and run with its demo main."""
    go = shutil.which("go")
    assert go, "go not found: tests/deps.sh installs golang-go"
    env = dict(os.environ, GOCACHE=t.path("gocache"), GOPATH=t.path("gopath"),
               GOPROXY="off", GOFLAGS="-mod=mod", GOTOOLCHAIN="local",
               HOME=t.tmpdir, CGO_ENABLED="0")
    binary = t.path("receipts_client")
    p = subprocess.run([go, "build", "-o", binary,
                        os.path.join(EXAMPLES, "receipts_client.go"),
                        os.path.join(EXAMPLES, "receipts_demo.go")],
                       cwd=t.tmpdir, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=tmo(300))
    assert p.returncode == 0, p.stdout.decode()
    c, k = example_daemon(t)
    data, values = example_input()
    p = subprocess.run([binary, k.sock], input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=tmo(60))
    assert p.returncode == 0, p.stderr.decode()
    check_example_output(t, c, p.stdout, values)
    assert k.stop() == 0


def test_example_python(t):
    """tests/examples/receipts_client.py (send() returns a Future of
    (partition, offset)) run as its own main."""
    c, k = example_daemon(t)
    data, values = example_input()
    p = subprocess.run([sys.executable,
                        os.path.join(EXAMPLES, "receipts_client.py"),
                        k.sock], input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=tmo(60))
    assert p.returncode == 0, p.stderr.decode()
    check_example_output(t, c, p.stdout, values)
    assert k.stop() == 0


def test_examples_in_readme(t):
    """The README shows the example files verbatim (so they never rot),
    each under 60 lines."""
    with open(README) as f:
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```$", f.read(), re.S | re.M)
    for name in ("receipts_client.go", "receipts_demo.go",
                 "receipts_client.py"):
        with open(os.path.join(EXAMPLES, name)) as f:
            text = f.read()
        assert text in blocks, "README lacks %s verbatim" % name
        if name != "receipts_demo.go":
            assert text.count("\n") < 60, (name, text.count("\n"))
