"""Self-tests of the test tools (kp_mock, kp_consume, the harness' murmur2),
independent of kproxyd: if these fail, the kproxyd tests cannot be trusted.
The round trips use kcat (librdkafka) as the producer."""

import shutil
import subprocess

from kptest import (MURMUR2_VECTORS, Skip, murmur2, murmur2_partition, tmo)


def _kcat(cluster, args, data):
    if not shutil.which("kcat"):
        raise Skip("kcat not installed")
    p = subprocess.run(["kcat", "-b", cluster.bootstrap] + args, input=data,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=tmo(30))
    assert p.returncode == 0, "kcat %s: %s" % (args, p.stderr)


def test_murmur2_vectors(t):
    for data, want in MURMUR2_VECTORS:
        assert murmur2(data) == want, data
    # toPositive, then modulo: "21" is negative before the mask.
    assert murmur2_partition(b"21", 3) == (-973932308 & 0x7FFFFFFF) % 3


def test_mock_commands(t):
    c = t.cluster(brokers=3, topics={"orders": 3, "six": (6, 3)})
    assert len(c.brokers) == 3
    assert c.cmd("ping") == "OK"
    assert c.cmd("bootstrap") == "OK " + c.bootstrap
    for cmd in ("down 2", "up 2", "leader orders 0 3", "rtt 1 5", "rtt 1 0",
                "create fresh 2 1", "push_err Produce NOT_LEADER_FOR_PARTITION"
                " 7", "clear_err 0", "topic_err fresh UNKNOWN_TOPIC_OR_PART",
                "topic_err fresh 0", "apiversion Produce 0 7",
                "broker_push_err 1 Produce REQUEST_TIMED_OUT:10 0:10"):
        c.cmd(cmd)
    assert c.cmd("errcnt 1 Produce") == "OK 2"
    for bad in ("frobnicate", "down", "down x", "down 99",
                "push_err Produce NO_SUCH_ERROR", "leader orders 0",
                "broker_push_err 1 Produce NOPE:1"):
        r = c.cmd(bad, ok=False)
        assert r.startswith("ERR "), (bad, r)
    assert c.cmd("quit") == "OK"
    assert c.proc.wait(tmo(10)) == 0


def test_mock_exits_on_stdin_eof(t):
    c = t.cluster(brokers=1, topics={"a": 1})
    c.proc.stdin.close()
    assert c.proc.wait(tmo(10)) == 0


def test_consume_roundtrip_codecs(t):
    """kcat produces with every codec librdkafka has; kp_consume reads all
    back byte-exact, with keys, headers and CreateTime timestamps."""
    c = t.cluster(topics={"rt": 1})
    expected = []
    for codec in ("none", "gzip", "lz4", "zstd", "snappy"):
        lines = [b"%s-%d\x00\xff\r|tail" % (codec.encode(), i)
                 for i in range(50)]
        data = b"".join(b"key%d\t%s\n" % (i, v) for i, v in enumerate(lines))
        _kcat(c, ["-t", "rt", "-p", "0", "-P", "-z", codec, "-K", "\t",
                  "-H", "codec=" + codec], data)
        expected += [(b"key%d" % i, v, codec) for i, v in enumerate(lines)]
    msgs = t.consume(c, "rt", expected=len(expected))
    assert len(msgs) == len(expected), (len(msgs), len(expected))
    for m, (k, v, codec) in zip(msgs, expected):
        assert (m["key"], m["value"]) == (k, v), (m, k, v)
        assert m["headers"] == [("codec", codec.encode())], m["headers"]
        assert m["tstype"] == "create" and m["timestamp"] > 0
    assert [m["offset"] for m in msgs] == list(range(len(expected)))


def test_consume_idle_and_empty(t):
    c = t.cluster(topics={"empty": 2})
    assert t.consume(c, "empty", idle_ms=300) == []
    assert t.consume(c, "empty", expected=0) == []


def test_murmur2_matches_librdkafka(t):
    """librdkafka's murmur2 partitioner is Java's: keys produced by kcat
    with partitioner=murmur2 land where murmur2_partition says."""
    c = t.cluster(topics={"m3": 3, "m6": 6})
    keys = [b"k%d" % i for i in range(60)] + [b"21", b"foobar", b"\xff\x00"]
    data = b"".join(k + b"\t" + b"v\n" for k in keys)
    for topic in ("m3", "m6"):
        _kcat(c, ["-t", topic, "-P", "-K", "\t",
                  "-X", "partitioner=murmur2"], data)
    msgs = t.consume(c, ["m3", "m6"], expected=2 * len(keys))
    assert len(msgs) == 2 * len(keys)
    for m in msgs:
        assert m["partition"] == murmur2_partition(
            m["key"], c.partitions[m["topic"]]), m
