"""The dead letter file (SPEC "Delivery semantics", issue 4 "Failure
reporting"): every failed message is appended as one JSON line in the
`json` input format plus "error" and "failed_at"; replayed as it is into a
json listener, the file produces the very messages that failed - topic,
key, value, headers, timestamp and an explicitly chosen partition, binary
bytes included."""

import base64
import json
import os

from kptest import murmur2_partition, send, stats_quiet, wait_for


def b64(b):
    return base64.b64encode(b).decode()


def test_dead_letter_replays_unchanged(t):
    c = t.cluster(topics={"dl": 3})
    k = t.kproxyd(c, {
        "listeners": [{"path": "j.sock", "format": "json"},
                      {"path": "tkv.sock", "format": "topic,key,value"}],
        "producer": {"delivery_timeout_ms": 1500, "request_timeout_ms": 1000,
                     "retry_backoff_ms": 20, "retry_backoff_max_ms": 200},
        "metadata_max_wait_ms": 1500,
    }, dead_letter=True)
    jsock, tkv = k.listener_paths
    r = send(jsock, b'{"topic":"dl","value":"warm"}\n')
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    pinned = next(p for p in range(3) if p != murmur2_partition(b"zz", 3))

    # (json line, expected message: key, value, headers, timestamp|None,
    #  partition|None)
    cases = [
        ({"topic": "dl", "key": "k1", "value": "plain \u00fcn\u00efcode"},
         (b"k1", "plain \u00fcn\u00efcode".encode(), [], None, None)),
        ({"topic": "dl", "value_base64": b64(b"\x00\xff\xfe bin")},
         (None, b"\x00\xff\xfe bin", [], None, None)),
        ({"topic": "dl", "key_base64": b64(b"\xff\x00key"), "value": "v"},
         (b"\xff\x00key", b"v", [], None, None)),
        ({"topic": "dl", "key": "j", "value": {"a": [1, 2]}},
         (b"j", b'{"a":[1,2]}', [], None, None)),
        ({"topic": "dl", "key": "tomb", "value": None},
         (b"tomb", None, [], None, None)),
        ({"topic": "dl", "key": "h", "value": "obj headers",
          "headers": {"a": "1", "b": "x\u0000y"}},
         (b"h", b"obj headers", [("a", b"1"), ("b", b"x\x00y")], None,
          None)),
        ({"topic": "dl", "value": "arr headers",
          "headers": [["n", None], ["n", "\u00fc"]]},
         (None, b"arr headers", [("n", None), ("n", "\u00fc".encode())],
          None, None)),
        ({"topic": "dl", "value": "ts", "timestamp": 1600000000123},
         (None, b"ts", [], 1600000000123, None)),
        ({"topic": "dl", "key": "zz", "value": "pinned",
          "partition": pinned},
         (b"zz", b"pinned", [], None, pinned)),
        ({"topic": "dl", "key": "e", "value": ""},
         (b"e", b"", [], None, None)),
        # A topic whose metadata never comes: its writer waits, then its
        # lines fail (metadata_max_wait_ms).
        ({"topic": "nosuch", "value": "held", "partition": 1},
         (None, b"held", [], None, 1)),
        ({"topic": "nosuch", "key": "a", "value": "held2"},
         (b"a", b"held2", [], None, None)),
    ]
    c.cmd("topic_err nosuch UNKNOWN_TOPIC_OR_PART")
    for b in (1, 2, 3):
        c.cmd("down %d" % b)
    data = b"".join(json.dumps(j).encode() + b"\n" for j, _ in cases)
    r = send(jsock, data)
    assert r == {"delivered": 0, "failed": len(cases), "rejected": 0}, r
    raw = [(b"dl rawkey raw\xff\x80value\r\n",
            (b"rawkey", b"raw\xff\x80value\r", [], None, None)),
           (b"dl  no key\n", (None, b"no key", [], None, None))]
    r = send(tkv, b"".join(line for line, _ in raw))
    assert r == {"delivered": 0, "failed": 2, "rejected": 0}, r
    wanted = [(j["topic"], e) for j, e in cases] + \
        [("dl", e) for _, e in raw]

    s = stats_quiet(k)
    assert s["failed"] == len(wanted), s
    assert s["topics"]["dl"]["failed_by"] == {
        "delivery_timeout": len(wanted) - 2}, s["topics"]["dl"]
    assert list(s["topics"]["nosuch"]["failed_by"].values()) == [2], s
    lines = k.dead_letter_lines()
    assert len(lines) == len(wanted), lines
    for d in lines:
        assert set(d) <= {"topic", "key", "key_base64", "value",
                          "value_base64", "headers", "timestamp",
                          "partition", "error", "failed_at"}, d
        assert isinstance(d["failed_at"], int) and d["error"], d
        assert isinstance(d["timestamp"], int), d
    by_value = {}
    for d in lines:
        v = (d["value"].encode() if isinstance(d.get("value"), str) else
             base64.b64decode(d["value_base64"]) if "value_base64" in d
             else None)
        by_value[v] = d
    # Binary bytes are written as base64, text as text.
    assert "value_base64" in by_value[b"raw\xff\x80value\r"]
    assert "key_base64" in by_value[b"v"]
    assert by_value["plain \u00fcn\u00efcode".encode()]["value"] == \
        "plain \u00fcn\u00efcode"
    assert by_value[b"pinned"]["partition"] == pinned
    assert "partition" not in by_value[b"obj headers"]
    assert by_value[b"ts"]["timestamp"] == 1600000000123
    assert by_value[b"held"]["error"].startswith("unknown_topic: no metadata for topic")

    # Replay the file as it is into the json listener.
    for b in (1, 2, 3):
        c.cmd("up %d" % b)
    c.cmd("topic_err nosuch 0")   # (the mock created it when asked)
    wait_for(lambda: k.stats()["topics"]["nosuch"]["state"] == "ready", 30,
             "nosuch known")
    with open(k.dead_letter_path, "rb") as f:
        replay = f.read()
    size = os.path.getsize(k.dead_letter_path)
    r = send(jsock, replay)
    assert r == {"delivered": len(wanted), "failed": 0, "rejected": 0}, r
    assert os.path.getsize(k.dead_letter_path) == size
    c.partitions["nosuch"] = len(
        k.stats()["topics"]["nosuch"]["partitions"])
    msgs = [m for m in t.consume(c, ["dl", "nosuch"],
                                 expected=len(wanted) + 1)
            if m["value"] != b"warm"]
    assert len(msgs) == len(wanted), msgs
    got = {m["value"]: m for m in msgs}
    for topic, (key, value, headers, ts, part) in wanted:
        m = got[value]
        d = by_value[value]
        assert m["topic"] == topic and m["key"] == key, (m, key)
        assert m["headers"] == headers, (m["headers"], headers)
        # The time kproxyd first read it, or the one given.
        assert m["timestamp"] == (ts or d["timestamp"]), (m, d)
        if part is not None:
            assert m["partition"] == part, (m, part)
        elif key is not None:
            assert m["partition"] == murmur2_partition(
                key, c.partitions[topic]), m
    assert k.stop() == 0
