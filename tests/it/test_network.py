"""Broker connections under a hostile network (issue 17; SPEC
`address_map`, `reconnect_backoff_max_ms`): a DNS server that never
answers does not delay other brokers' traffic nor SIGTERM, a name whose
first address refuses is reached through the next, running out of file
descriptors during a broker bounce recovers within a backoff, hostile
Metadata answers (a partition index of 999999, 100,000 brokers with absurd
hosts and ports, an answer that never ends) cost bounded memory and CPU
and are recovered from on the next good answer, address_map reaches a
cluster only through forwarded ports, reconnects back off to
reconnect_backoff_max_ms with a jitter that differs between runs (and a
broker that answers ApiVersions and then garbage does not reset it), and
the operator reads each cause in a warning.

The tests print what they measure. KP_IT_MEASURE_ONLY=1 turns the
assertions on figures into prints, to measure an older binary:
    KP_IT_MEASURE_ONLY=1 KP_NET_DNS=unshare python3 tests/it/run.py \\
        --kproxyd OLD/build/kproxyd --tools build/tools -k test_network
(KP_NET_DNS=unshare: the silent DNS server is put in a private mount
namespace's resolv.conf instead of the test-only KPROXYD_TEST_DNS_SERVERS,
so that a kproxyd resolving with getaddrinfo meets it too; needs root.)
"""

import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import threading
import time

from fake_broker import FakeBroker
from fake_kafka import FakeKafka
from kptest import (Kproxyd, Skip, check_delivery, connect, is_asan_binary,
                    read_summary, send, stats_quiet, tmo, wait_for)
from netkit import (Dns, Forwarder, Sampler, dead_port, free_port_on,
                    log_events, proc_status)

MIB = 1 << 20
MEASURE_ONLY = bool(os.environ.get("KP_IT_MEASURE_ONLY"))
SLOW_NAME = "slow.kproxyd-test.example"
MULTI_NAME = "multi.kproxyd-test.example"


def check(cond, what):
    """An assertion on a measured figure (a print with MEASURE_ONLY)."""
    if MEASURE_ONLY:
        if not cond:
            print("  (would fail: %s)" % what)
        return
    assert cond, what


def supported(t, key, value):
    """Whether the kproxyd under test knows a configuration key (an older
    binary, measured with KP_IT_MEASURE_ONLY, may not)."""
    conf = t.path("probe.json")
    with open(conf, "w") as f:
        json.dump({"brokers": ["127.0.0.1:9092"], "control": None,
                   "listeners": [{"path": t.path("probe.sock")}]}, f)
    return subprocess.run(
        [t.kproxyd_binary, "-t", "-c", conf, "-X", "%s=%s" % (key, value)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def fake(t, topics, brokers=1, **kw):
    fk = FakeKafka(kw.pop("profile", "modern"), topics, brokers=brokers,
                   **kw).start()
    t.clusters.append(fk)
    return fk


def asan(t):
    return is_asan_binary(t.kproxyd_binary)


def broker_stats(k, node_id):
    for b in k.stats()["brokers"]:
        if b["id"] == node_id:
            return b
    return None


def timed_send(path, data):
    t0 = time.monotonic()
    r = send(path, data)
    return r, time.monotonic() - t0


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


# --------------------------------------------------------------------------
# DNS

class UnshareDns:
    """A silent DNS server on 127.0.0.99:53 and a wrapper that runs kproxyd
    in a private mount namespace whose /etc/resolv.conf names it (for a
    kproxyd that resolves with getaddrinfo)."""

    def __init__(self, t):
        if os.geteuid() != 0:
            raise Skip("KP_NET_DNS=unshare needs root")
        self.dns = Dns("silent", host="127.0.0.99", port=53)
        self.resolv = t.path("resolv.conf")
        with open(self.resolv, "w") as f:
            f.write("nameserver 127.0.0.99\noptions timeout:5 attempts:2\n")
        self.wrapper = t.path("kproxyd-unshare.sh")
        with open(self.wrapper, "w") as f:
            f.write("#!/bin/sh\nexec unshare -m sh -c 'mount --bind %s "
                    "/etc/resolv.conf && exec \"$0\" \"$@\"' %s \"$@\"\n"
                    % (self.resolv, os.path.abspath(t.kproxyd_binary)))
        os.chmod(self.wrapper, 0o755)

    def stop(self):
        self.dns.stop()


def dns_kproxyd(t, fk, overrides, dns_mode="silent"):
    """kproxyd whose DNS never answers (or answers NXDOMAIN); returns
    (kproxyd, dns)."""
    if os.environ.get("KP_NET_DNS") == "unshare" and dns_mode == "silent":
        u = UnshareDns(t)
        t.clusters.append(u)
        k = Kproxyd(u.wrapper, fk, overrides, t.tmpdir, start=False)
        t.daemons.append(k)
        k.start()
        return k, u.dns
    dns = Dns(dns_mode)
    t.clusters.append(dns)
    k = t.kproxyd(fk, overrides,
                  env={"KPROXYD_TEST_DNS_SERVERS": dns.server})
    return k, dns


def test_dns_never_answers(t):
    """Broker 2 is advertised under a name whose DNS server never answers.
    Another broker's client, sending one message at a time, sees no
    delay (each message's round trip is measured while the name is being
    resolved), and SIGTERM exits at once with a resolution in flight."""
    fk = fake(t, {"fast": 1, "slow": 1}, brokers=2)
    slow_id = fk.node_ids[1]
    fk.move_leader("slow", 0, slow_id)
    fk.advertise(slow_id, SLOW_NAME)
    k, dns = dns_kproxyd(t, fk, {
        "listeners": [{"path": "dns.sock", "format": "json"}],
        "producer": {"linger_ms": 0},
        "topics": {"slow": {"request_timeout_ms": 2000,
                            "delivery_timeout_ms": 3000}}})
    assert send(k.sock, b'{"topic":"fast","value":"warm"}\n')[
        "delivered"] == 1
    # One message for the slow broker: kproxyd starts resolving its name.
    s = connect(k.sock)
    s.sendall(b'{"topic":"slow","value":"s"}\n')
    wait_for(lambda: dns.queries > 0, 15, "a DNS query for %s" % SLOW_NAME)
    rtts = []
    deadline = time.monotonic() + 6.5   # longer than one DNS timeout (5 s)
    i = 0
    while time.monotonic() < deadline:
        r, rtt = timed_send(k.sock, b'{"topic":"fast","value":"f%d"}\n' % i)
        check(r["delivered"] == 1, r)
        rtts.append(rtt)
        i += 1
        time.sleep(0.02)
    s.close()
    print("silent DNS for broker %d: %d messages to another broker, round "
          "trip p50 %.1f ms, p99 %.1f ms, max %.1f ms; %d DNS queries"
          % (slow_id, len(rtts), pct(rtts, .5) * 1e3, pct(rtts, .99) * 1e3,
             max(rtts) * 1e3, dns.queries))
    check(max(rtts) < tmo(0.25), "a client waited %.0f ms behind DNS"
          % (max(rtts) * 1e3))
    if not MEASURE_ONLY:
        log = k.log_text()
        assert "resolve: DNS timeout after 5000 ms: %s" % SLOW_NAME in log, \
            k.log_tail()
        wait_for(lambda: broker_stats(k, slow_id)["state"] == "resolving",
                 15, "broker %d resolving again" % slow_id)
    t0 = time.monotonic()
    k.send_signal(signal.SIGTERM)
    rc = k.wait(60)
    took = time.monotonic() - t0
    print("silent DNS: SIGTERM to exit %.0f ms (exit %d)" % (took * 1e3, rc))
    check(took < tmo(1.0), "SIGTERM took %.1f s" % took)
    check(rc == 0, "exit %d" % rc)
    k.check_log()


def test_dns_first_address_refuses(t):
    """A name with two addresses (a hosts file, c-ares' CARES_HOSTS): the
    one tried first refuses connections, the other one is reached at once,
    with no backoff in between."""
    port = free_port_on("127.0.0.1", "127.0.0.3")
    hosts = t.path("hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.3 %s\n127.0.0.1 %s\n" % (MULTI_NAME, MULTI_NAME))
    fk = fake(t, {"multi": 1})
    fk.advertise(fk.node_ids[0], MULTI_NAME, port)
    k = t.kproxyd(None, {"brokers": ["%s:%d" % (MULTI_NAME, port)],
                         "producer": {"linger_ms": 0}},
                  env={"CARES_HOSTS": hosts})
    # Both addresses refuse until the order is known; then the second one
    # gets a forwarder to the broker.
    boot = wait_for(lambda: [b for b in k.stats()["bootstrap"]
                             if len(b["addresses"]) == 2], 15,
                    "the name resolved to two addresses")[0]
    first, second = boot["addresses"]
    print("%s resolves to %s, %s" % (MULTI_NAME, first, second))
    fw = Forwarder(("127.0.0.1", fk.port),
                   listen=(second.rsplit(":", 1)[0], port))
    t.clusters.append(fw)
    r = send(k.sock, b"".join(b"multi m%d\n" % i for i in range(10)))
    assert r == {"delivered": 10, "failed": 0, "rejected": 0}, r
    assert [v.decode() for v in fk.values("multi")] == [
        "m%d" % i for i in range(10)]
    log = k.log_text()
    assert "connect to %s: Connection refused" % first in log, k.log_tail()
    up = [b for b in k.stats()["brokers"] if b["state"] == "up"]
    assert up and up[0]["address"] == second, up
    assert up[0]["addresses"] == [first, second], up
    # No backoff between the refused address and the next one.
    ev = log_events(k, r"connecting to (\S+)$")
    pairs = [(a[0], b[0]) for a, b in zip(ev, ev[1:])
             if a[1].group(1) == first and b[1].group(1) == second]
    assert pairs and min(b - a for a, b in pairs) < 0.1, pairs
    assert k.stop() == 0


def test_dns_name_does_not_resolve(t):
    """A bootstrap name that does not resolve (NXDOMAIN) and a dead port:
    one warning names both causes within seconds (kp_health's, from each
    broker's last error), and stats says which failed how."""
    dead = dead_port()
    k, dns = dns_kproxyd(t, None, {
        "brokers": ["nowhere.kproxyd-test.example:9092",
                    "127.0.0.1:%d" % dead]}, dns_mode="nxdomain")
    t0 = time.monotonic()
    line = wait_for(lambda: [ln for ln in k.log_text().splitlines()
                             if "cannot reach the Kafka cluster" in ln],
                    10, "the unreachable warning")[0]
    took = time.monotonic() - t0
    print("unreachable bootstrap warned after %.1f s: %s" % (took, line))
    assert "warning:" in line, line
    assert ("bootstrap nowhere.kproxyd-test.example:9092: resolve: name "
            "does not resolve") in line, line
    assert "bootstrap 127.0.0.1:%d: connect: Connection refused" % dead \
        in line, line
    boot = k.stats()["bootstrap"]
    faults = sorted(b["last_fault"] for b in boot)
    assert faults == ["connect", "resolve"], boot
    assert k.stop() == 0


# --------------------------------------------------------------------------
# File descriptors

def test_fd_exhaustion_broker_bounce(t):
    """1,100 idle clients under a 1,024 descriptor limit, the broker
    bounces (socket() then fails with EMFILE), then the clients close:
    delivery resumes within one backoff."""
    if os.environ.get("KPROXYD_WRAPPER"):
        raise Skip("valgrind keeps descriptors of its own")
    n = 1100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 300:
        if hard != resource.RLIM_INFINITY and hard < n + 300:
            raise Skip("RLIMIT_NOFILE hard limit %d" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 300, hard))
    fk = fake(t, {"fd": 1})
    node = fk.node_ids[0]
    conf = {"max_clients": 5000, "producer": {"linger_ms": 0}}
    if supported(t, "max_clients_per_uid", 5000):
        conf["max_clients_per_uid"] = 5000
    k = t.kproxyd(fk, conf)
    assert send(k.sock, b"fd warm\n")["delivered"] == 1
    stats_quiet(k)
    _, khard = resource.prlimit(k.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(k.proc.pid, resource.RLIMIT_NOFILE, (1024, khard))
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(k.sock)
            except (BlockingIOError, OSError):
                pass
            socks.append(s)
        wait_for(lambda: len(os.listdir("/proc/%d/fd" % k.proc.pid)) >= 1020,
                 30, "kproxyd at its descriptor limit")
        # The listener may take the descriptor the bounce frees before
        # the broker reconnects: bounce again until the broker meets
        # EMFILE.
        for _ in range(10):
            fk.stop_broker(node)
            fk.start_broker(node)
            try:
                wait_for(lambda: "socket: Too many open files" in
                         k.log_text(), 3, "EMFILE on the broker connection")
                break
            except AssertionError:
                pass
        assert "socket: Too many open files" in k.log_text(), k.log_tail()
        time.sleep(1.0)   # a few attempts meet EMFILE
    finally:
        for s in socks:
            s.close()
    t0 = time.monotonic()
    deadline = t0 + tmo(30)
    r = None
    while time.monotonic() < deadline:
        try:
            r = send(k.sock, b"fd after\n", timeout=tmo(30))
            break
        except OSError:
            time.sleep(0.1)
    took = time.monotonic() - t0
    print("fd exhaustion: %d clients, limit 1024; after they closed, a "
          "message was delivered in %.1f s (%r)" % (n, took, r))
    check(r == {"delivered": 1, "failed": 0, "rejected": 0}, r)
    check(took < tmo(13), "recovery took %.1f s (more than a backoff)"
          % took)
    resource.prlimit(k.proc.pid, resource.RLIMIT_NOFILE, (khard, khard))
    assert k.stop() == 0


# --------------------------------------------------------------------------
# Hostile Metadata

def hostile_metadata(t, kind, what, count=None, **kw):
    """Common run: a good topic keeps being served while Metadata answers
    are hostile (every one for 4 s, or the next `count`); then the
    answers are good again and the topic that waited for metadata is
    delivered."""
    fk = fake(t, {"good": 1}, brokers=1)
    k = t.kproxyd(fk, {"producer": {"linger_ms": 0,
                                    "request_timeout_ms": 2000}})
    assert send(k.sock, b"good warm\n")["delivered"] == 1
    stats_quiet(k)
    base = proc_status(k.proc.pid)
    fk.add_topic("late", 2)
    fk.hostile_metadata(kind, count=count, **kw)
    sampler = Sampler(k.proc.pid).start()
    late = connect(k.sock, timeout=tmo(60))
    late.sendall(b"".join(b"late l%d\n" % i for i in range(20)))
    late.shutdown(socket.SHUT_WR)
    done = {}

    def reader():
        try:
            done["summary"] = read_summary(late)
        except (OSError, AssertionError) as e:
            done["error"] = e
        done["t"] = time.monotonic()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    rtts, ctl = [], []
    deadline = time.monotonic() + 4.0
    i = 0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            k.control("stats", timeout=30)
        except (OSError, AssertionError) as e:
            print("  control: %r" % e)
        ctl.append(time.monotonic() - t0)
        r, rtt = timed_send(k.sock, b"good g%d\n" % i)
        check(r["delivered"] == 1, r)
        rtts.append(rtt)
        i += 1
        time.sleep(0.05)
    sampler.stop()
    seen = what in k.log_text()
    t0 = time.monotonic()
    if count is None:
        fk.hostile_metadata(None)   # the next answer is good
    else:
        t0 = sampler.t0             # `count` hostile answers, then good
    th.join(tmo(60))
    r = done.get("summary")
    if "error" in done:
        print("  late client: %r" % done["error"])
    recover = done.get("t", time.monotonic()) - t0
    late.close()
    idle = Sampler(k.proc.pid).start()
    time.sleep(1.0)
    idle.stop()
    after = proc_status(k.proc.pid)
    print("hostile metadata (%s): while hostile %.1f s: kproxyd CPU %.0f%%, "
          "RSS %.1f MiB -> peak %.1f MiB (VmHWM %.1f MiB); other topic "
          "round trip p50 %.1f ms max %.0f ms; stats max %.0f ms; "
          "recovered %.2f s after the first good answer (%r); idle CPU "
          "after %.0f%%"
          % (kind, sampler.elapsed, sampler.cpu * 100, base["VmRSS"] / MIB,
             sampler.peak_rss / MIB, after["VmHWM"] / MIB,
             pct(rtts, .5) * 1e3, max(rtts) * 1e3, max(ctl) * 1e3, recover,
             r, idle.cpu * 100))
    check(seen, "%r not logged" % what)
    check(r == {"delivered": 20, "failed": 0, "rejected": 0}, r)
    check(recover < tmo(5), "recovered in %.1f s" % recover)
    if not asan(t) and not os.environ.get("KPROXYD_WRAPPER"):
        check(after["VmHWM"] - base["VmRSS"] < 32 * MIB,
              "RSS grew %.1f MiB" % ((after["VmHWM"] - base["VmRSS"]) / MIB))
    check(max(ctl) < tmo(1.0), "the loop stalled %.1f s" % max(ctl))
    check(idle.cpu < 0.10, "CPU %.0f%% when idle" % (idle.cpu * 100))
    if not MEASURE_ONLY:
        assert sorted(v.decode() for v in fk.values("late")) == sorted(
            "l%d" % i for i in range(20))
        assert fk.errors == [], fk.errors
    return k, fk


def test_hostile_metadata_sparse_partition(t):
    """Every topic listed with one partition entry of index 999999: the
    entry is ignored (no million partitions), the topic stays as it was."""
    k, fk = hostile_metadata(t, "sparse_partition",
                             "partition ids are not 0..n-1")
    st = k.stats()
    if not MEASURE_ONLY:
        assert st["metadata_guard"]["topics_skipped"] > 0, st
        parts = {name: len(tp["partitions"])
                 for name, tp in st["topics"].items()}
        assert parts.get("late") == 2 and parts.get("good") == 1, parts
        assert k.stop() == 0


def test_hostile_metadata_many_brokers(t):
    """100,000 extra brokers with absurd hosts and ports: the answer is
    refused before it is decoded; the loop keeps serving."""
    k, fk = hostile_metadata(t, "many_brokers",
                             "lists 100001 brokers, more than")
    if not MEASURE_ONLY:
        st = k.stats()
        assert st["metadata_guard"]["answers_refused"] > 0, st
        assert len(st["brokers"]) == 1, st["brokers"]
        assert k.stop() == 0


def test_hostile_metadata_endless(t):
    """An answer whose size claims 60 MiB and stops after 64 KiB: the
    request times out, nothing of the claim is allocated."""
    k, fk = hostile_metadata(t, "endless", "request timed out", count=1)
    # recovery here counts from the hostile answer: the request timeout
    # (2 s) is the wait
    if not MEASURE_ONLY:
        assert fk.event_list("endless_answer"), fk.events
        assert k.stop() == 0


def test_metadata_absurd_broker_entries(t):
    """2,000 absurd broker entries (under the cap): each is skipped, the
    log lines are rate-limited, the real broker stays in use; brokers
    that leave the cluster are forgotten."""
    fk = fake(t, {"ab": 2}, brokers=2)
    k = t.kproxyd(fk, {"producer": {"linger_ms": 0}})
    assert send(k.sock, b"ab warm\n")["delivered"] == 1
    fk.hostile_metadata("many_brokers", count=1, n=2000)
    fk.add_topic("ab2", 1)
    assert send(k.sock, b"ab2 x\n")["delivered"] == 1
    st = k.stats()
    assert st["metadata_guard"]["brokers_skipped"] >= 1600, \
        st["metadata_guard"]
    valid = [b for b in st["brokers"] if b["id"] >= 100000]
    # "h<i>.example" entries with port 9092 or 65535 are believable.
    assert len(valid) <= 400, len(valid)
    lines = k.log_text().count("(impossible id, host or port)")
    print("absurd broker entries: %d skipped, %d log lines, %d believable "
          "kept" % (st["metadata_guard"]["brokers_skipped"], lines,
                    len(valid)))
    assert lines <= 20, lines
    # The next answer lists the two real brokers only: the rest leave.
    fk.add_topic("ab3", 1)
    assert send(k.sock, b"ab3 y\n")["delivered"] == 1
    wait_for(lambda: len(k.stats()["brokers"]) == 2, 10,
             "the absurd brokers to leave")
    assert k.stats()["metadata_guard"]["brokers_left"] == len(valid)
    assert k.stop() == 0


# --------------------------------------------------------------------------
# address_map

def test_address_map_mock_cluster(t):
    """The mock cluster is reached only through forwarded ports: every
    advertised host:port is mapped to its forwarder, and delivery is exact
    and ordered."""
    c = t.cluster(brokers=3, topics={"am": 6})
    fws = [Forwarder(c.broker_addr(i)) for i in (1, 2, 3)]
    for fw in fws:
        t.clusters.append(fw)
    amap = {"%s:%d" % c.broker_addr(i): fws[i - 1].addr for i in (1, 2, 3)}
    k = t.kproxyd(None, {"brokers": [fws[0].addr], "address_map": amap,
                         "listeners": [{"path": "am.sock",
                                        "format": "topic,key,value"}]})
    n = 3000
    data = b"".join(b"am k%d c0-%d\n" % (i % 50, i) for i in range(n))
    r = send(k.sock, data)
    assert r == {"delivered": n, "failed": 0, "rejected": 0}, r
    st = stats_quiet(k)
    up = [b for b in st["brokers"] if b["state"] == "up"]
    assert len(up) >= 2, st["brokers"]     # the leaders of the 6 partitions
    for b in up:
        want = amap["%s:%d" % (b["host"], b["port"])]
        assert b["connect_to"] == want and b["address"] == want, b
        fw = fws[[x.addr for x in fws].index(want)]
        assert fw.connections >= 1 and fw.bytes > 0, want
    print("address_map: %s; forwarders saw %r connections, %r bytes"
          % (amap, [fw.connections for fw in fws], [fw.bytes for fw in fws]))
    msgs = t.consume(c, "am", expected=n)
    expected = {(0, i): ("am", b"k%d" % (i % 50), b"c0-%d" % i)
                for i in range(n)}
    check_delivery(msgs, expected,
                   lambda m: (0, int(m["value"].split(b"-")[1])),
                   partitions={"am": 6})
    assert k.stop() == 0


# --------------------------------------------------------------------------
# Backoff

def delays(k):
    """The reconnect delays kproxyd logged, in ms."""
    return [int(m.group(1)) for _, m in
            log_events(k, r"reconnecting in (\d+) ms")]


def test_reconnect_backoff(t):
    """A dead broker: attempts double from retry_backoff_ms (100) to
    reconnect_backoff_max_ms (10 s by default; 1 s for the third daemon),
    each delay within +-20% of its step; two daemons started alike draw
    different jitter."""
    port = dead_port()
    ks = [t.kproxyd(None, {"brokers": ["127.0.0.1:%d" % port]},
                    name="dead%d" % i) for i in (1, 2)]
    kcs = []
    if supported(t, "reconnect_backoff_max_ms", 1000):
        kcs.append(t.kproxyd(None, {"brokers": ["127.0.0.1:%d" % port],
                                    "reconnect_backoff_max_ms": 1000},
                             name="dead3"))
    time.sleep(8.0)   # measuring: attempts over 8 s
    for k in ks + kcs:
        ev = log_events(k, r"(\S+) -> connecting")
        print("%s: %d connection attempts in 8 s; delays %r"
              % (k.name, len(ev), delays(k)))
    a, b = delays(ks[0]), delays(ks[1])
    c = delays(kcs[0]) if kcs else []
    attempts = len(log_events(ks[0], r"(\S+) -> connecting"))
    check(4 <= attempts <= 9, "%d attempts in 8 s" % attempts)
    for d in (a, b):
        for i, ms in enumerate(d):
            step = min(100 * 2 ** i, 10000)
            check(0.8 * step - 1 <= ms <= 1.2 * step + 1,
                  "delay %d: %d ms for a %d ms step" % (i, ms, step))
    check(a != b, "the same jitter in two runs: %r" % a)
    for i, ms in enumerate(c):
        step = min(100 * 2 ** i, 1000)
        check(0.8 * step - 1 <= ms <= 1.2 * step + 1,
              "capped delay %d: %d ms" % (i, ms))
    check(len(c) >= 9, "%d attempts with a 1 s cap" % len(c))
    for k in ks + kcs:
        assert k.stop() == 0


def test_backoff_not_reset_by_apiversions(t):
    """A broker that answers ApiVersions and then garbage: each connection
    comes up and is closed, and the reconnects still back off (they are
    not reset by the handshake)."""
    fb = FakeBroker(["bad_corr"] * 200, linger=0.5)
    try:
        k = t.kproxyd(None, {"brokers": [fb.addr]})
        time.sleep(5.0)   # measuring: connections over 5 s
        conns = fb.conns
        print("garbage after ApiVersions: %d connections in 5 s" % conns)
        check(conns <= 9, "%d connections in 5 s" % conns)
        check("unexpected response (correlation id" in k.log_text(),
              "the garbage was not reported")
        assert k.stop() == 0
    finally:
        fb.stop()


def test_broker_keeps_dropping(t):
    """A broker that closes every connection right after its first
    request beyond ApiVersions: a warning says it keeps dropping."""
    fk = fake(t, {"kd": 1})
    fk.close_after_requests(2, times=1000)
    k = t.kproxyd(fk, {"reconnect_backoff_max_ms": 500}
                  if supported(t, "reconnect_backoff_max_ms", 500) else {})
    line = wait_for(lambda: [ln for ln in k.log_text().splitlines()
                             if "keeps dropping" in ln], 20,
                    "the keeps-dropping warning")[0]
    print(line)
    assert "warning:" in line, line
    with fk.lock:
        fk._closers = []
    assert send(k.sock, b"kd ok\n")["delivered"] == 1
    assert k.stop() == 0
