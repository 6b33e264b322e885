"""Ingest and delivery (SPEC "Line formats", "Delivery semantics"): lines
from concurrent clients reach Kafka exactly once, byte-exact, on the
partition Java's murmur2 picks, in per-connection order; the half-close
summary is right; unusable lines are rejected without disturbing the rest."""

import re
import time

from kptest import check_delivery, murmur2_partition, send, send_many

IDENT_RE = re.compile(rb"^c(\d+) s(\d+)(?: |$)")


def ident(m):
    mo = IDENT_RE.match(m["value"] or b"")
    return (int(mo.group(1)), int(mo.group(2))) if mo else None


def test_concurrent_clients_keyed(t):
    """4 clients x 2000 lines, topic,key,value, to a 3- and a 6-partition
    topic; keyed lines on murmur2's partition, every fifth line key-less."""
    c = t.cluster(topics={"orders": 3, "wide": 6})
    k = t.kproxyd(c, {"listeners": [
        {"path": "tkv.sock", "format": "topic,key,value"}]})
    clients, lines = 4, 2000
    expected, datas = {}, []
    for ci in range(clients):
        buf = []
        for seq in range(lines):
            topic = b"orders" if seq % 2 == 0 else b"wide"
            key = b"" if seq % 5 == 0 else b"user-%d" % ((ci * 31 + seq) % 97)
            # The value holds the separator and varies in length.
            value = b"c%d s%d %s" % (ci, seq, b"x y" * (seq % 17))
            buf.append(b"%s %s %s\n" % (topic, key, value))
            expected[(ci, seq)] = (topic.decode(), key or None, value)
        datas.append(b"".join(buf))
    t0 = time.time() * 1000
    results = send_many(k.sock, datas)
    t1 = time.time() * 1000
    for r in results:
        assert r == {"delivered": lines, "failed": 0, "rejected": 0}, r
    msgs = t.consume(c, ["orders", "wide"], expected=clients * lines)
    check_delivery(msgs, expected, ident, c.partitions)
    for m in msgs:
        # CreateTime: when kproxyd read the line.
        assert m["tstype"] == "create", m
        assert t0 - 1000 <= m["timestamp"] <= t1 + 1000, (t0, t1, m)
    assert k.stop() == 0


def test_many_short_clients(t):
    """50 concurrent connections of 20 lines each, one topic."""
    c = t.cluster(topics={"many": 3})
    k = t.kproxyd(c)
    expected, datas = {}, []
    for ci in range(50):
        buf = []
        for seq in range(20):
            value = b"c%d s%d" % (ci, seq)
            buf.append(b"many " + value + b"\n")
            expected[(ci, seq)] = ("many", None, value)
        datas.append(b"".join(buf))
    for r in send_many(k.sock, datas):
        assert r == {"delivered": 20, "failed": 0, "rejected": 0}, r
    msgs = t.consume(c, "many", expected=len(expected))
    check_delivery(msgs, expected, ident, c.partitions)
    assert k.stop() == 0


def test_binary_values_and_empty_lines(t):
    """Bytes are kept as they are (NUL, \\r, 0xff, the separator); empty
    lines are skipped and not counted; a last line without '\\n' counts."""
    c = t.cluster(topics={"bin": 1})
    k = t.kproxyd(c)
    values = [b"\x00nul\x00", b"cr\r", b"\xff\xfe high \x80", b"sep inside",
              b"two  spaces ", b"tab\tand\x01ctl", b"\r\r", b"last-no-newline"]
    data = (b"\n" + b"bin " + values[0] + b"\n\n\n" +
            b"".join(b"bin " + v + b"\n" for v in values[1:-1]) + b"\n" +
            b"bin " + values[-1])
    r = send(k.sock, data)
    assert r == {"delivered": len(values), "failed": 0, "rejected": 0}, r
    # A connection of nothing but a line without '\n'.
    r = send(k.sock, b"bin only-line")
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    # Nothing but empty lines: nothing delivered, nothing rejected.
    r = send(k.sock, b"\n\n\n")
    assert r == {"delivered": 0, "failed": 0, "rejected": 0}, r
    # Nothing at all.
    r = send(k.sock, b"")
    assert r == {"delivered": 0, "failed": 0, "rejected": 0}, r
    msgs = t.consume(c, "bin", expected=len(values) + 1)
    assert [m["value"] for m in msgs] == values + [b"only-line"], msgs
    assert all(m["key"] is None for m in msgs)
    s = k.stats()
    assert s["delivered"] == len(values) + 1, s
    assert s["received"] == len(values) + 1, s
    assert s["rejected"] == 0 and s["failed"] == 0, s
    assert k.stop() == 0


def test_rejected_lines(t):
    """Too long (message_max_bytes 1000), invalid topic names, a missing
    separator: rejected and counted, and the connection goes on."""
    c = t.cluster(topics={"rej": 1})
    k = t.kproxyd(c, {"producer": {"message_max_bytes": 1000}})
    data = b"".join([
        b"rej good1\n",
        # The rest of an overlong line is discarded up to its '\n': the
        # "rej inside" in it must not become a message.
        b"rej " + b"A" * 3000 + b"\nrej good2\n",
        b"rej " + b"B" * 2000 + b" rej inside " + b"C" * 2000 + b"\n",
        b"bad/topic value\n",
        b"nosep\n",
        b"t" * 250 + b" value\n",
        b"rej " + b"D" * 300000 + b"\n",   # longer than any read buffer
        b"rej good3\n",
        b"to\xffpic value\n",
        b"rej good4",
    ])
    r = send(k.sock, data)
    assert r == {"delivered": 4, "failed": 0, "rejected": 7}, r
    msgs = t.consume(c, "rej", expected=4)
    assert [m["value"] for m in msgs] == [b"good1", b"good2", b"good3",
                                          b"good4"], msgs
    s = k.stats()
    assert s["rejected"] == 7 and s["delivered"] == 4, s
    assert k.stop() == 0


def test_overlong_last_line(t):
    """An overlong line cut by EOF is rejected, the lines before it count."""
    c = t.cluster(topics={"rej": 1})
    k = t.kproxyd(c, {"producer": {"message_max_bytes": 1000}})
    r = send(k.sock, b"rej ok\nrej " + b"E" * 5000)
    assert r == {"delivered": 1, "failed": 0, "rejected": 1}, r
    msgs = t.consume(c, "rej", expected=1)
    assert [m["value"] for m in msgs] == [b"ok"], msgs
    assert k.stop() == 0


def test_listener_formats(t):
    """`value` and `key,value` with a fixed topic, `topic,key,value` with
    a custom separator (empty key = null key), `topic,value` with ','."""
    c = t.cluster(topics={"fv": 1, "fkv": 3, "fsep": 3})
    k = t.kproxyd(c, {"listeners": [
        {"path": "v.sock", "format": "value", "topic": "fv"},
        {"path": "kv.sock", "format": "key,value", "topic": "fkv"},
        {"path": "sep.sock", "format": "topic,key,value", "separator": "|"},
        {"path": "comma.sock", "format": "topic,value", "separator": ","},
    ]})
    v_sock, kv_sock, sep_sock, comma_sock = k.listener_paths

    r = send(v_sock, b"hello world\n\na b|c,d\nfkv looks like a topic\n")
    assert r == {"delivered": 3, "failed": 0, "rejected": 0}, r
    r = send(kv_sock, b"k1 v1 with space\n nokey\nk2 \xff\x00\njustvalue\n")
    assert r == {"delivered": 3, "failed": 0, "rejected": 1}, r
    r = send(sep_sock, b"fsep|kk|val ue|x\nfsep||v2\nfsep|nokeysep\n"
                       b"fv bad|k|v\n")
    assert r == {"delivered": 2, "failed": 0, "rejected": 2}, r
    r = send(comma_sock, b"fv,comma value, more\nfv value-no-comma-topic\n")
    assert r == {"delivered": 1, "failed": 0, "rejected": 1}, r

    msgs = t.consume(c, ["fv", "fkv", "fsep"], expected=9)
    got = sorted((m["topic"], m["key"] or b"", m["value"]) for m in msgs)
    want = sorted([
        ("fv", b"", b"hello world"), ("fv", b"", b"a b|c,d"),
        ("fv", b"", b"fkv looks like a topic"),
        ("fkv", b"k1", b"v1 with space"), ("fkv", b"", b"nokey"),
        ("fkv", b"k2", b"\xff\x00"),
        ("fsep", b"kk", b"val ue|x"), ("fsep", b"", b"v2"),
        ("fv", b"", b"comma value, more"),
    ])
    assert got == want, got
    for m in msgs:
        if m["value"] in (b"nokey", b"v2") or m["topic"] == "fv":
            assert m["key"] is None, m
        if m["key"] is not None:
            assert m["partition"] == murmur2_partition(
                m["key"], c.partitions[m["topic"]]), m
    assert k.stop() == 0


def test_close_both_ways_loses_nothing(t):
    """A client that closes without half-closing gets no summary but its
    lines are delivered."""
    c = t.cluster(topics={"cb": 1})
    k = t.kproxyd(c)
    assert send(k.sock, b"".join(b"cb c0 s%d\n" % i for i in range(300)),
                half_close=False) is None
    msgs = t.consume(c, "cb", expected=300)
    assert [m["value"] for m in msgs] == [b"c0 s%d" % i for i in range(300)]
    assert k.stop() == 0
