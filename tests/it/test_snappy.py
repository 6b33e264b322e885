"""snappy (issue: the codec many sarama deployments use).

kproxyd writes Kafka's snappy as the Java producer does, the snappy-java
("xerial") stream; librdkafka's consumer decodes it (its
rd_kafka_snappy_java_uncompress path) and names the codec in its debug
log. The same checks as every other codec in test_compression: 4 clients
x 1000 log lines, byte-exact and in order, the batches really compressed
(produce trace against the uncompressed lower bound), stats agreeing.
"""

import test_compression


def test_codec_snappy(t):
    test_compression.RDK_CODEC.setdefault("snappy", "snappy")
    test_compression.run_codec(t, "snappy")


def test_snappy_level_ignored(t):
    """snappy has no levels: a compression_level beside it is accepted
    (and ignored), as kp_conf treats codecs without levels."""
    c = t.cluster(topics={"logs": 1})
    k = t.kproxyd(c, {"producer": {"compression": "snappy",
                                   "compression_level": 3}})
    r = test_compression.send(k.sock, b"logs " + b"x" * 2000 + b"\n")
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    msgs, codecs = test_compression.consume_codecs(c, ["logs"], 1)
    assert [m["value"] for m in msgs] == [b"x" * 2000], msgs
    assert codecs.get("logs") == {"snappy"}, codecs
    assert k.stop() == 0
