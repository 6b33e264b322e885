"""HTTP (SPEC "HTTP"; issue 14): `http.listen` serves /metrics (OpenMetrics
when the Accept header asks for it, else the Prometheus text format, each
parsed by prometheus_client's own parser), /stats, /healthz and /readyz
(503 with the reason until a broker connection is up, and while shutting
down) from kproxyd's loop; other paths 404, other methods 405; a bind error
is a start-up error; `partition_metrics: false` drops the per-partition
series."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from kptest import Skip, connect, send, stats_quiet, tmo, wait_for

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,"
                     "application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")

# Runs with a python that has prometheus_client (Debian's
# python3-prometheus-client installs into /usr/bin/python3 only).
PARSE = r"""
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import \
        text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "unit": f.unit,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"""


def parse_metrics(text, fmt):
    """{family: {name, type, unit, samples}} by prometheus_client's parser
    of fmt ("openmetrics" or "prometheus"); Skip without one."""
    for py in dict.fromkeys((sys.executable, "/usr/bin/python3")):
        if not os.access(py, os.X_OK):
            continue
        probe = subprocess.run([py, "-c", "import prometheus_client"],
                               stderr=subprocess.DEVNULL)
        if probe.returncode != 0:
            continue
        p = subprocess.run([py, "-c", PARSE, fmt], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        assert p.returncode == 0, "the %s parser rejected it:\n%s" % (
            fmt, p.stderr.decode("utf-8", "replace")[-2000:])
        return {f["name"]: f for f in json.loads(p.stdout)}
    raise Skip("prometheus_client not installed (Debian package "
               "python3-prometheus-client)")


def sample(fams, name, **labels):
    for f in fams.values():
        for s_name, s_labels, value in f["samples"]:
            if s_name == name and s_labels == labels:
                return value
    raise AssertionError("no sample %s%r" % (name, labels))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port, path, method="GET", headers=None):
    """(status, content type, body text) of one request."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=tmo(15))
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), \
            r.read().decode("utf-8", "replace")
    finally:
        c.close()


def with_http(overrides=None):
    port = free_port()
    conf = {"http": {"listen": "127.0.0.1:%d" % port}}
    conf.update(overrides or {})
    return port, conf


def test_http_endpoints(t):
    """Both /metrics formats parse with prometheus_client and agree with
    `stats` and with each other, including the process_* families; /stats
    is the stats JSON; /healthz; 404 and 405; HEAD."""
    c = t.cluster(topics={"h1": 2})
    port, conf = with_http()
    k = t.kproxyd(c, conf)
    r = send(k.sock, b"".join(b"h1 v%d\n" % i for i in range(50)) +
             b"bad/topic x\n")
    assert r == {"delivered": 50, "failed": 0, "rejected": 1}, r
    st = stats_quiet(k)

    status, ctype, om = get(port, "/metrics",
                            headers={"Accept": PROMETHEUS_ACCEPT})
    assert status == 200, (status, om)
    assert ctype.startswith("application/openmetrics-text; version=1.0.0"), \
        ctype
    assert om.endswith("# EOF\n"), om[-200:]
    fo = parse_metrics(om, "openmetrics")

    status, ctype, prom = get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), \
        (status, ctype)
    assert "# EOF" not in prom and "# UNIT" not in prom
    fp = parse_metrics(prom, "prometheus")

    for fams in (fo, fp):
        assert sample(fams, "kproxyd_delivered_messages_total") == 50
        assert sample(fams, "kproxyd_rejected_lines_total",
                      reason="bad_topic") == 1
        assert sample(fams, "kproxyd_topic_delivered_messages_total",
                      topic="h1") == 50
        assert sample(fams, "process_cpu_seconds_total") >= 0
        for name in ("process_open_fds",
                     "process_max_fds", "process_resident_memory_bytes",
                     "process_virtual_memory_bytes",
                     "process_start_time_seconds"):
            assert sample(fams, name) > 0, name
        # the process started within the last minute (CLOCK_BOOTTIME-based)
        start = sample(fams, "process_start_time_seconds")
        assert time.time() - tmo(60) < start <= time.time() + 1, start
    assert fo["process_cpu_seconds"]["type"] == "counter"
    assert fo["kproxyd_batch_size_bytes"]["type"] == "histogram"
    assert fo["kproxyd_batch_size_bytes"]["unit"] == "bytes"
    # the same families, named as each format names them
    om_names = {s[0] for f in fo.values() for s in f["samples"]}
    prom_names = {s[0] for f in fp.values() for s in f["samples"]}
    assert om_names == prom_names, om_names ^ prom_names
    assert "kproxyd_uptime_seconds" not in om_names   # process_start_time

    # The control socket's `metrics` has the process_* families too.
    lines = k.control_lines("metrics", until="# EOF")
    fc = parse_metrics("\n".join(lines) + "\n", "openmetrics")
    assert "process_cpu_seconds" in fc and "process_open_fds" in fc

    status, ctype, body = get(port, "/stats")
    assert status == 200 and ctype == "application/json", (status, ctype)
    js = json.loads(body)
    assert js["delivered"] == st["delivered"] == 50
    assert js["uptime_ms"] >= st["uptime_ms"] > 0
    assert js["topics"]["h1"]["delivered"] == 50

    assert get(port, "/healthz")[0] == 200
    status, _, body = get(port, "/readyz")
    assert status == 200 and body == "ok\n", (status, body)
    assert get(port, "/nope")[0] == 404
    assert get(port, "/metrics/x")[0] == 404
    assert get(port, "/metrics", method="POST")[0] == 405
    assert get(port, "/stats", method="DELETE")[0] == 405
    status, _, body = get(port, "/stats", method="HEAD")
    assert status == 200 and body == "", (status, body)
    assert k.stop() == 0


def test_http_readyz(t):
    """/readyz is 503 naming each broker's cause while no broker
    connection is up, 200 once one is, and 503 "shutting down" during the
    drain; /healthz is 200 throughout."""
    c = t.cluster(brokers=1, topics={"rz": 1})
    c.cmd("down 1")
    port, conf = with_http({"log_level": "info"})
    k = t.kproxyd(c, conf)

    status, _, body = get(port, "/readyz")
    assert status == 503, (status, body)
    assert body.startswith("not ready: "), body
    wait_for(lambda: "Connection refused" in get(port, "/readyz")[2], 10,
             "/readyz to name the broker's error")
    body = get(port, "/readyz")[2]
    assert "bootstrap %s" % c.brokers[0] in body, body
    assert get(port, "/healthz")[0] == 200

    c.cmd("up 1")
    wait_for(lambda: get(port, "/readyz")[0] == 200, 30, "/readyz 200")
    r = send(k.sock, b"rz ready\n")
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r

    # The drain: a writer waiting for a topic's metadata keeps kproxyd
    # draining until the timeout.
    c.cmd("topic_err held UNKNOWN_TOPIC_OR_PART")
    s = connect(k.sock)
    try:
        s.sendall(b"held waits\n")
        wait_for(lambda: k.stats()["topics"].get("held", {}).get("blocked"),
                 10, "the writer waiting")
        k.send_signal(signal.SIGTERM)
        wait_for(lambda: get(port, "/readyz")[0] == 503, 10,
                 "/readyz 503 in the drain")
        status, _, body = get(port, "/readyz")
        assert (status, body) == (503, "not ready: shutting down\n"), body
        assert get(port, "/metrics")[0] == 200   # still scraped
        c.cmd("topic_err held 0")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(tmo(30))
        assert s.recv(100).startswith(b"delivered=1 "), "summary"
    finally:
        s.close()
    assert k.wait(30) == 0
    k.check_log()


def test_http_bind_error(t):
    """http.listen on a port that is taken: exit 1, the reason logged."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        conf = {"http": {"listen": "127.0.0.1:%d"
                         % busy.getsockname()[1]}}
        k = t.kproxyd(None, conf, wait=False)
        assert k.wait(20) == 1
        log = k.log_text()
        assert re.search(r"http\.listen 127\.0\.0\.1:\d+: bind: Address "
                         r"already in use", log), log
        assert "start-up failed" in log, log
    finally:
        busy.close()


def test_partition_metrics_switch(t):
    """partition_metrics false: no kproxyd_partition_* series, the
    per-topic sums stay (the OpenMetrics parser still accepts it)."""
    c = t.cluster(topics={"pm": 3})
    port, conf = with_http({"partition_metrics": False})
    k = t.kproxyd(c, conf)
    r = send(k.sock, b"".join(b"pm v%d\n" % i for i in range(30)))
    assert r["delivered"] == 30, r
    stats_quiet(k)
    text = get(port, "/metrics", headers={"Accept": PROMETHEUS_ACCEPT})[2]
    fams = parse_metrics(text, "openmetrics")
    assert not [f for f in fams if f.startswith("kproxyd_partition_")], \
        sorted(fams)
    assert sample(fams, "kproxyd_topic_delivered_messages_total",
                  topic="pm") == 30
    assert sample(fams, "kproxyd_topic_queued_messages", topic="pm") == 0
    # The stats JSON keeps its partitions (SPEC "Control socket").
    assert len(k.stats()["topics"]["pm"]["partitions"]) == 3
    assert k.stop() == 0
