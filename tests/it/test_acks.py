"""acks=all (idempotent by default), acks=1 and acks=0 (delivered without
a response): every line arrives exactly once, keyed lines on murmur2's
partition, order kept per connection and partition."""

from kptest import check_delivery, send_many, stats_quiet
from test_basic import ident


def _roundtrip(t, acks):
    c = t.cluster(topics={"ack": 3})
    k = t.kproxyd(c, {"producer": {"acks": acks},
                      "listeners": [{"path": "ack.sock",
                                     "format": "topic,key,value"}]})
    expected, datas = {}, []
    for ci in range(2):
        buf = []
        for seq in range(1000):
            key = b"" if seq % 3 == 0 else b"k%d" % (seq % 41)
            value = b"c%d s%d acks=%s" % (ci, seq, str(acks).encode())
            buf.append(b"ack %s %s\n" % (key, value))
            expected[(ci, seq)] = ("ack", key or None, value)
        datas.append(b"".join(buf))
    for r in send_many(k.sock, datas):
        assert r == {"delivered": 1000, "failed": 0, "rejected": 0}, r
    s = stats_quiet(k)
    assert s["delivered"] == 2000 and s["failed"] == 0, s
    msgs = t.consume(c, "ack", expected=len(expected))
    check_delivery(msgs, expected, ident, c.partitions)
    assert k.stop() == 0


def test_acks_all(t):
    _roundtrip(t, "all")


def test_acks_1(t):
    _roundtrip(t, 1)


def test_acks_0(t):
    _roundtrip(t, 0)


def test_acks_all_without_idempotence(t):
    c = t.cluster(topics={"ack": 3})
    k = t.kproxyd(c, {"producer": {"acks": "all", "idempotence": False},
                      "listeners": [{"path": "ack.sock",
                                     "format": "topic,key,value"}]})
    r = send_many(k.sock, [b"".join(b"ack k%d c0 s%d\n" % (i % 7, i)
                                    for i in range(500))])[0]
    assert r == {"delivered": 500, "failed": 0, "rejected": 0}, r
    msgs = t.consume(c, "ack", expected=500)
    expected = {(0, i): ("ack", b"k%d" % (i % 7), b"c0 s%d" % i)
                for i in range(500)}
    check_delivery(msgs, expected, ident, c.partitions)
    assert k.stop() == 0
