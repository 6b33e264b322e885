"""An independent decode of kproxyd's requests (issue 8): every request
kproxyd emits, at each version it implements, goes through Wireshark's
Kafka dissector (tshark) and must decode with no malformed or error mark.

The bytes are the real daemon's: kproxyd delivers a few JSON lines (keys,
headers, several partitions, compression codecs) through fake brokers
(fake_kafka.py) whose advertised version ranges step through every version
kproxyd implements; the fake keeps every frame, both directions, and
pcap.py writes them as TCP conversations. The fake's responses are checked
too (they are the fake's own encoders, so this also validates the fake).
Beyond "no malformed mark", the decoded fields are compared with what was
sent: the client software name, topic names, every record's key, value and
header (after Wireshark's own decompression), and batch CRCs.

Wireshark 4.0 (Debian 12's tshark) knows Metadata up to v9, Produce up to
v8 and InitProducerId up to v3: requests above those (Metadata v10-12,
Produce v9, InitProducerId v4) are reported as SKIPPED (with the version
Wireshark says it supports) and checked again automatically by a newer
tshark. ApiVersions v1/v2 are never sent (kproxyd asks v3, then v0).
"""

import json
import os
import re
import shutil
import subprocess

from fake_kafka import (API_APIVERSIONS, API_INITPID, API_METADATA,
                        API_NAMES, API_PRODUCE, FakeKafka)
from kptest import Skip, send, tmo
from pcap import PcapWriter

# What kproxyd implements (include/kp_proto.h): every one must be seen.
IMPLEMENTED = {API_APIVERSIONS: [0, 3],      # v3, fallback v0
               API_METADATA: list(range(1, 13)),
               API_PRODUCE: list(range(3, 10)),
               API_INITPID: list(range(0, 5))}

# Versions Wireshark 4.0.x does not know (skipped when tshark says so).
WIRESHARK_40_LACKS = {(API_METADATA, 10), (API_METADATA, 11),
                      (API_METADATA, 12), (API_PRODUCE, 9),
                      (API_INITPID, 4)}

PI_ERROR = 0x00800000
PORT = 9092


def version_runs():
    """Fake-broker tables stepping every API through its versions: run i
    tops Metadata at v1+i, Produce at v3+i, InitProducerId at vi;
    ApiVersions v3 on even runs, v0 (after v3 is refused) on odd ones."""
    runs = []
    for i in range(12):
        table = {API_APIVERSIONS: (0, 3 if i % 2 == 0 else 2),
                 API_METADATA: (1, 1 + i),
                 API_PRODUCE: (3, min(3 + i, 9)),
                 API_INITPID: (0, min(i, 4))}
        runs.append(("v%d" % i, table, {}))
    # Compressed batches: Wireshark decompresses them itself.
    codecs = {"tgz": "gzip", "tlz": "lz4", "tzs": "zstd"}
    for top in (8, 9):
        table = {API_APIVERSIONS: (0, 3), API_METADATA: (1, 12),
                 API_PRODUCE: (3, top), API_INITPID: (0, 4)}
        runs.append(("codecs-produce-v%d" % top, table, codecs))
    # acks=1 (no idempotence, no InitProducerId) on a mid version.
    table = {API_APIVERSIONS: (0, 3), API_METADATA: (1, 9),
             API_PRODUCE: (3, 8), API_INITPID: (0, 3)}
    runs.append(("acks1", table, {"acks": 1}))
    return runs


def json_lines(topic, n, tag):
    out, sent = [], []
    for i in range(n):
        key = "%s-k%d" % (tag, i)
        value = "%s value %d %s" % (tag, i, "x" * (i * 13 % 40))
        line = {"topic": topic, "key": key, "value": value,
                "headers": {"h1": "hv%d" % i, "h2": ""}}
        out.append(json.dumps(line).encode() + b"\n")
        sent.append((key.encode(), value.encode()))
    return b"".join(out), sent


def run_daemon(t, name, table, extra):
    """kproxyd through a fake with this table; returns (fake, records
    sent [(key, value)])."""
    codecs = {k: v for k, v in extra.items() if k.startswith("t")}
    topics = dict.fromkeys(codecs or ["tsh"], 3)
    fk = FakeKafka(table, topics).start()
    t.clusters.append(fk)
    producer = {"linger_ms": 2}
    if "acks" in extra:
        producer["acks"] = extra["acks"]
    conf = {"listeners": [{"path": name + ".sock", "format": "json"}],
            "producer": producer,
            "topics": {tp: {"compression": c} for tp, c in codecs.items()}}
    k = t.kproxyd(fk, conf, name=name)
    sent = []
    for topic in topics:
        data, recs = json_lines(topic, 12, name + "-" + topic)
        r = send(k.sock, data)
        assert r == {"delivered": 12, "failed": 0, "rejected": 0}, (name, r)
        sent += recs
    assert k.stop() == 0
    assert fk.errors == [], (name, fk.errors)
    return fk, sent


def write_pcap(path, runs):
    """One TCP conversation per fake connection; returns
    {client port: (run name, fake, conn)}."""
    ports = {}
    port = 40000
    with PcapWriter(path) as w:
        clock = 0.0
        for name, fk, _ in runs:
            frames = sorted(fk.frames, key=lambda f: f[3])
            t0 = frames[0][3]
            streams = {}
            for conn, direction, data, tf in frames:
                at = clock + (tf - t0)
                if conn not in streams:
                    port += 1
                    ports[port] = (name, fk, conn)
                    streams[conn] = w.stream(port, PORT, at)
                streams[conn].send(direction, data, at)
            clock += frames[-1][3] - t0 + 1.0
    return ports


def pairs_hook(pairs):
    """Keeps repeated keys (tshark's JSON repeats them): key -> list."""
    out = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


def walk(node, fn):
    """Calls fn(key, value) for every key/value of the nested dict-of-lists
    tree (values are lists, per pairs_hook)."""
    if isinstance(node, dict):
        for k, vals in node.items():
            for v in vals:
                fn(k, v)
                walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            walk(v, fn)


def fields(node, name):
    got = []
    walk(node, lambda k, v: got.append(v) if k == name else None)
    return got


def experts(node):
    got = []
    walk(node, lambda k, v: got.append(v) if k == "_ws.expert" else None)
    return got


def unhex(s):
    return bytes.fromhex(s.replace(":", "")) if s else b""


def tshark_packets(path):
    p = subprocess.run(
        ["tshark", "-n", "-r", path, "-d", "tcp.port==%d,kafka" % PORT,
         "-o", "kafka.tcp.ports:%d" % PORT, "-T", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=tmo(120))
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    return json.loads(p.stdout, object_pairs_hook=pairs_hook)


def tshark_version():
    p = subprocess.run(["tshark", "-v"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    m = re.search(rb"TShark \(Wireshark\) (\S+)", p.stdout)
    return m.group(1).decode() if m else "?"


def classify(layers):
    """(problems, unsupported-message): error-severity experts and
    malformed marks, and Wireshark's 'Unsupported X version' note."""
    problems, unsupported, missing = [], None, False
    for e in experts(layers):
        msg = e.get("_ws.expert.message", [""])[0]
        sev = int(e.get("_ws.expert.severity", ["0"])[0])
        if "kafka.unsupported_api_version" in e:
            unsupported = msg
        elif "kafka.request_missing" in e:
            missing = True
        elif sev >= PI_ERROR or any(k.startswith("kafka.") for k in e):
            problems.append(msg)
    if "_ws.malformed" in layers:
        problems.append("malformed")
    return problems, unsupported, missing


def test_tshark_decodes_every_request_version(t):
    """Every request kproxyd sends, at each version it implements, and every
    response of the fake, decodes in tshark's Kafka dissector without a
    malformed or error mark, and the decoded fields match what was sent."""
    if not shutil.which("tshark"):
        raise Skip("tshark not installed (apt-get install tshark)")
    runs = []
    for name, table, extra in version_runs():
        fk, sent = run_daemon(t, name, table, extra)
        runs.append((name, fk, sent))
    path = t.path("kproxyd.pcap")
    ports = write_pcap(path, runs)
    packets = tshark_packets(path)

    seen = {}           # (api, version) -> "ok" | "skipped: ..."
    failures = []
    skipped_reqs = set()    # (port, corr) of requests tshark could not do
    values = {name: [] for name, _, _ in runs}
    for pkt in packets:
        layers = pkt["_source"][0]["layers"][0]
        tcp = layers["tcp"][0]
        src = int(tcp["tcp.srcport"][0])
        dst = int(tcp["tcp.dstport"][0])
        kafkas = layers.get("kafka", [])
        if not kafkas:
            if "_ws.malformed" in layers:
                failures.append("frame %s: malformed, no Kafka layer"
                                % layers["frame"][0]["frame.number"][0])
            continue
        port = src if dst == PORT else dst
        run, fk, conn = ports[port]
        for kf in kafkas:
            frame = layers["frame"][0]["frame.number"][0]
            corr = int(kf["kafka.correlation_id"][0])
            problems, unsupported, missing = classify(
                {"kafka": [kf], **({"_ws.malformed": layers["_ws.malformed"]}
                                   if "_ws.malformed" in layers else {})})
            if dst == PORT:
                api = int(kf["kafka.request_key"][0])
                ver = int(kf["kafka.request.version"][0])
                req = [r for r in fk.reqs(conn=conn) if r["corr"] == corr]
                assert len(req) == 1, (run, conn, corr)
                req = req[0]
                assert (api, ver) == (req["api"], req["version"]), \
                    (run, frame, api, ver, req)
                what = "%s %s v%d request (frame %s)" % (
                    run, API_NAMES[api], ver, frame)
                if unsupported and (api, ver) in WIRESHARK_40_LACKS:
                    seen.setdefault((api, ver), "skipped: " + unsupported)
                    skipped_reqs.add((port, corr))
                    continue
                if unsupported:
                    problems.append(unsupported)
                if problems:
                    failures.append("%s: %s" % (what, problems))
                    continue
                seen[(api, ver)] = "ok"
                failures += check_request(what, api, ver, kf, req,
                                          values[run])
            else:
                what = "%s response to corr %d (frame %s)" % (run, corr,
                                                             frame)
                if (port, corr) in skipped_reqs and (unsupported or
                                                     missing):
                    continue
                resp = [r for r in fk.responses
                        if r["conn"] == conn and r["corr"] == corr][0]
                req = [r for r in fk.reqs(conn=conn) if r["corr"] == corr][0]
                if resp["api"] == API_APIVERSIONS and \
                        req["header_version"] is None:
                    # KIP-511: UNSUPPORTED_VERSION answered with a v0 body
                    # to a v3 request; Wireshark decodes it as v3.
                    continue
                if resp["api"] == API_APIVERSIONS:
                    # Wireshark notes each listed API whose range goes
                    # beyond what it knows: not about this response.
                    unsupported = None
                if problems or unsupported or missing:
                    failures.append("%s: %s" % (what, problems +
                                                [unsupported or "",
                                                 "request missing"
                                                 if missing else ""]))

    for name, fk, sent in runs:
        got = values[name]
        lost = [s for s in sent if s not in got]
        if any((API_PRODUCE, v) not in WIRESHARK_40_LACKS
               for v in fk.versions(API_PRODUCE)):
            if lost:
                failures.append("%s: %d records sent but not decoded by "
                                "tshark, e.g. %r" % (name, len(lost),
                                                     lost[:2]))
    report = []
    for api, vers in sorted(IMPLEMENTED.items()):
        for v in vers:
            st = seen.get((api, v), "NOT EMITTED")
            report.append("  %-15s v%-2d %s" % (API_NAMES[api], v, st))
            if st == "NOT EMITTED":
                failures.append("%s v%d never emitted" % (API_NAMES[api],
                                                          v))
    print("tshark %s, %d packets:\n%s" % (tshark_version(), len(packets),
                                          "\n".join(report)))
    assert not failures, "\n".join(failures[:40])


def check_request(what, api, ver, kf, req, values):
    """The decoded fields against what the fake decoded / what was sent."""
    bad = []
    if api == API_APIVERSIONS and ver >= 3:
        name = fields(kf, "kafka.client_software_name")
        vers = fields(kf, "kafka.client_software_version")
        # (A v3 request to a broker without v3 is not parsed by the fake.)
        want = req.get("sw_version", vers[0] if vers else None)
        if name != ["kproxyd"] or vers != [want]:
            bad.append("%s: software %r %r" % (what, name, vers))
    elif api == API_METADATA:
        names = fields(kf, "kafka.topic_name")
        if names != (req["topics"] or []):
            bad.append("%s: topics %r, sent %r" % (what, names,
                                                   req["topics"]))
        auto = fields(kf, "kafka.allow_auto_topic_creation")
        if ver >= 4 and auto not in (["0"], ["False"], ["false"]):
            bad.append("%s: allow_auto_topic_creation %r" % (what, auto))
    elif api == API_INITPID:
        tid = fields(kf, "kafka.transactional_id")
        if tid not in ([], ["[ Null ]"], ["NULL"]):
            bad.append("%s: transactional id %r" % (what, tid))
    elif api == API_PRODUCE:
        crcs = [int(c, 16) for c in fields(kf, "kafka.batch_crc")]
        want = [bt["crc"] for bts in req["parts"].values() for bt in bts]
        if sorted(crcs) != sorted(want):
            bad.append("%s: batch CRCs %r, fake saw %r" % (what, crcs, want))
        for rec in fields(kf, "Record"):
            key = unhex(fields(rec, "kafka.message_key")[0])
            value = unhex(fields(rec, "kafka.message_value")[0])
            values.append((key, value))
            hv = [unhex(h) for h in fields(rec, "kafka.header_value")]
            hk = fields(rec, "kafka.header_key")
            if hk != ["h1", "h2"] or hv[1:] != [b""] or \
                    not hv[0].startswith(b"hv"):
                bad.append("%s: headers %r %r" % (what, hk, hv))
        n = sum(bt["count"] for bts in req["parts"].values() for bt in bts)
        if len(fields(kf, "Record")) != n:
            bad.append("%s: %d records decoded, %d sent" % (
                what, len(fields(kf, "Record")), n))
    return bad


if __name__ == "__main__":
    print(os.path.basename(__file__), "is run by tests/it/run.py")
