"""Hostile input, bounded memory, backpressure (issue 5; SPEC "Line
formats", "Delivery semantics", `buffer_bytes`, `max_clients`): overlong
lines are rejected whole, odd bytes kept exactly, partial and trickled
lines framed as if written at once, extra clients refused, no spinning
when out of file descriptors, idle clients cheap, a full buffer blocks
writers instead of dropping, and a broker answering garbage is
disconnected and retried without harm. The tests print what they measure
(memory per idle connection, peak RSS under backpressure, ...)."""

import os
import resource
import socket
import threading
import time

from fake_broker import FakeBroker
from kptest import (Skip, check_delivery, connect, is_asan_binary,
                    read_summary, send, stats_quiet, tmo, wait_for)

MIB = 1 << 20


def proc_status(k):
    """kproxyd's /proc/PID/status memory fields, in bytes."""
    out = {}
    with open("/proc/%d/status" % k.proc.pid) as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "VmSize", "VmPeak"):
                out[name] = int(rest.split()[0]) * 1024
    return out


def nofile_limit(k):
    with open("/proc/%d/limits" % k.proc.pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open-files limit for kproxyd")


def asan(t):
    return is_asan_binary(t.kproxyd_binary)


def rss_is_kproxyds(t):
    """Whether kproxyd's RSS is its own: not under a wrapper (valgrind
    runs it on its own heap) nor ASan (quarantine, shadow memory)."""
    return not os.environ.get("KPROXYD_WRAPPER") and not asan(t)


def under_wrapper():
    return bool(os.environ.get("KPROXYD_WRAPPER"))


def values(msgs):
    return [m["value"] for m in msgs]


def test_oversized_then_good(t):
    """An overlong line (in one read, and spread over many reads) is
    rejected whole, never split into messages; the line after it on the
    same connection is delivered; message_max_bytes itself is allowed."""
    c = t.cluster(topics={"ov": 1})
    k = t.kproxyd(c, {"producer": {"message_max_bytes": 1000}})
    exact = b"ov " + b"e" * 997            # 1000 bytes: allowed
    over = b"ov " + b"o" * 998              # 1001 bytes: rejected
    s = connect(k.sock)
    try:
        s.sendall(b"ov first\n" + b"ov " + b"A" * 5000 + b"\nov second\n")
        s.sendall(exact + b"\n" + over + b"\n")
        # 3 MiB in 64 KiB writes, with would-be lines inside it, then
        # the good line in the same write as the overlong line's end.
        s.sendall(b"ov ")
        chunk = (b"B" * 1000 + b" ov inside ") * 64
        for _ in range(3 * MIB // len(chunk)):
            s.sendall(chunk)
        s.sendall(b"\nov third\n")
        s.shutdown(socket.SHUT_WR)
        r = read_summary(s)
    finally:
        s.close()
    assert r == {"delivered": 4, "failed": 0, "rejected": 3}, r
    msgs = t.consume(c, "ov", expected=4)
    assert values(msgs) == [b"first", b"second", exact[3:], b"third"], \
        [v[:40] for v in values(msgs)]
    st = k.stats()
    assert st["rejected_by"]["too_long"] == 3, st["rejected_by"]
    assert k.stop() == 0


def test_100mib_without_newline(t):
    """100 MiB without '\\n': one rejected line, the read buffer stays
    bounded (RSS), and the lines after it on the connection are fine."""
    c = t.cluster(topics={"big": 1})
    k = t.kproxyd(c)   # message_max_bytes 1 MiB
    send(k.sock, b"big warm-up\n")
    base = proc_status(k)
    total = 100 * MIB
    block = memoryview(b"z" * MIB)
    s = connect(k.sock, timeout=120)
    try:
        s.sendall(b"big ")
        for _ in range(total // MIB):
            s.sendall(block)
        s.sendall(b"\nbig after1\nbig after2\n")
        s.shutdown(socket.SHUT_WR)
        r = read_summary(s)
    finally:
        s.close()
    assert r == {"delivered": 2, "failed": 0, "rejected": 1}, r
    # The same, cut by EOF: rejected, nothing delivered.
    s = connect(k.sock, timeout=120)
    try:
        s.sendall(b"big ok\nbig ")
        for _ in range(20):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        r = read_summary(s)
    finally:
        s.close()
    assert r == {"delivered": 1, "failed": 0, "rejected": 1}, r
    after = proc_status(k)
    grew = after["VmHWM"] - base["VmRSS"]
    print("100 MiB line: kproxyd VmRSS %.1f MiB before, VmHWM %.1f MiB "
          "after (+%.1f MiB)" % (base["VmRSS"] / MIB, after["VmHWM"] / MIB,
                                 grew / MIB))
    # One read buffer (message_max_bytes + 256 KiB) at most, not the line.
    if not under_wrapper():
        assert grew < 16 * MIB, grew
    msgs = t.consume(c, "big", expected=4)
    assert values(msgs) == [b"warm-up", b"after1", b"after2", b"ok"], \
        [v[:40] for v in values(msgs)]
    assert k.stop() == 0


def test_odd_bytes_exact(t):
    """NUL, 0xff, CRLF, lone CR, every byte value but '\\n': carried
    byte-exact through `value`, `key,value` and `topic,key,value`."""
    c = t.cluster(topics={"odd": 1, "oddk": 3})
    k = t.kproxyd(c, {"listeners": [
        {"path": "v.sock", "format": "value", "topic": "odd"},
        {"path": "kv.sock", "format": "key,value", "topic": "oddk"},
        {"path": "tkv.sock", "format": "topic,key,value"},
    ]})
    v_sock, kv_sock, tkv_sock = k.listener_paths
    every = bytes(b for b in range(256) if b != 10)
    vals = [b"\x00", b"\xff", b"crlf\r", b"\r", b"\r\r\r", every,
            b"\x00\xff\x00\r", b"mid\rdle", b"\xc3\x28 invalid utf-8",
            b"\xf0\x9f\x92\xa9 valid utf-8"]
    data = b"".join(v + b"\n" for v in vals) + b"\r\n\n\n" + b"\xfflast\r"
    r = send(v_sock, data)
    assert r == {"delivered": len(vals) + 2, "failed": 0, "rejected": 0}, r
    want_v = vals + [b"\r", b"\xfflast\r"]
    pairs = [(b"k\x00ey", b"v\x00al\r"), (b"\xff\xfe", b"\xff"),
             (b"cr\r", b"\r"), (b"", b"null key \x00")]
    r = send(kv_sock, b"".join(kk + b" " + vv + b"\n" for kk, vv in pairs))
    assert r == {"delivered": len(pairs), "failed": 0, "rejected": 0}, r
    r = send(tkv_sock, b"oddk \x01\x02 \x00 \xff\r\n"
                       b"oddk \r \r\n")
    assert r == {"delivered": 2, "failed": 0, "rejected": 0}, r
    msgs = t.consume(c, "odd", expected=len(want_v))
    assert values(msgs) == want_v, values(msgs)
    msgs = t.consume(c, "oddk", expected=len(pairs) + 2)
    got = [(m["key"], m["value"]) for m in msgs]
    want = sorted([(kk or None, vv) for kk, vv in pairs] +
                  [(b"\x01\x02", b"\x00 \xff\r"), (b"\r", b"\r")],
                  key=lambda kv: (kv[0] or b"", kv[1]))
    assert sorted(got, key=lambda kv: (kv[0] or b"", kv[1])) == want, got
    assert k.stop() == 0


def test_client_closes_mid_line(t):
    """A client that disappears mid-line (closing both ways, or with a
    reset) still has its complete lines and its partial last line
    delivered; one that half-closes mid-line is told so."""
    c = t.cluster(topics={"mid": 1})
    k = t.kproxyd(c)
    # Closed both ways: no summary, nothing lost.
    assert send(k.sock, b"mid a1\nmid a2\nmid a-partial",
                half_close=False) is None
    # SO_LINGER 0: close() with an abortive close (a reset where the
    # socket type has one).
    s = connect(k.sock)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.sendall(b"mid b1\nmid b-partial")
    s.close()
    # Half-closed: the summary counts the partial line.
    r = send(k.sock, b"mid c1\nmid c-partial")
    assert r == {"delivered": 2, "failed": 0, "rejected": 0}, r
    msgs = t.consume(c, "mid", expected=7)
    got = sorted(values(msgs))
    assert got == sorted([b"a1", b"a2", b"a-partial", b"b1", b"b-partial",
                          b"c1", b"c-partial"]), got
    # Per connection, in order.
    for p in (b"a", b"b", b"c"):
        seq = [v for v in values(msgs) if v.startswith(p)]
        assert seq[-1].endswith(b"-partial"), seq
    wait_for(lambda: k.stats()["clients"] == 0, 10, "clients to go")
    assert k.stop() == 0


def test_slow_trickle_client(t):
    """One byte a write (with tiny pauses) gives the same messages and the
    same summary as the same bytes written at once - including an
    overlong line, empty lines, bad lines and a last line without '\\n'."""
    c = t.cluster(topics={"tr": 1, "bk": 1})
    k = t.kproxyd(c, {"producer": {"message_max_bytes": 40}})

    def payload(topic):
        return b"".join([
            topic + b" one\n", b"\n", topic + b" two \x00\xff\r\n",
            topic + b" " + b"L" * 100 + b" " + topic + b" in-long\n",
            b"bad/topic x\n", b"nosep\n",
            topic + b" " + b"m" * (39 - len(topic)) + b"\n",  # 40: max
            topic + b" four-last"])

    data = payload(b"tr")
    s = connect(k.sock)
    try:
        for i in range(len(data)):
            s.send(data[i:i + 1])
            time.sleep(0.002)
        s.shutdown(socket.SHUT_WR)
        slow = read_summary(s)
    finally:
        s.close()
    fast = send(k.sock, payload(b"bk"))
    assert slow == fast == {"delivered": 4, "failed": 0, "rejected": 3}, \
        (slow, fast)
    tr = values(t.consume(c, "tr", expected=4))
    bulk = values(t.consume(c, "bk", expected=4))
    assert tr == bulk and len(tr) == 4, (tr, bulk)
    assert tr[-1] == b"four-last", tr
    assert k.stop() == 0


def test_max_clients(t):
    """Beyond max_clients connections are closed at once and counted in
    clients_refused; the admitted clients are served, and a new client is
    admitted once there is room again."""
    c = t.cluster(topics={"mc": 1})
    k = t.kproxyd(c, {"max_clients": 4})
    # The start-up probe's connection, queued before this one, is gone.
    assert send(k.sock, b"") == {"delivered": 0, "failed": 0, "rejected": 0}
    wait_for(lambda: k.stats()["clients"] == 0, 10, "no clients")
    held = [connect(k.sock) for _ in range(4)]
    wait_for(lambda: k.stats()["clients"] == 4, 10, "4 clients")
    extras = [connect(k.sock, timeout=10) for _ in range(6)]
    for e in extras:
        try:
            got = e.recv(100)
        except ConnectionResetError:
            got = b""
        assert got == b"", got      # closed by kproxyd, nothing said
        e.close()
    st = k.stats()
    assert st["clients_refused"] == 6 and st["clients"] == 4, st
    # The admitted clients still work.
    for i, s in enumerate(held):
        s.sendall(b"mc held%d\n" % i)
        s.shutdown(socket.SHUT_WR)
    for s in held:
        assert read_summary(s) == {"delivered": 1, "failed": 0,
                                   "rejected": 0}
        s.close()
    wait_for(lambda: k.stats()["clients"] == 0, 10, "clients to go")
    assert send(k.sock, b"mc later\n") == {"delivered": 1, "failed": 0,
                                           "rejected": 0}
    assert k.stats()["clients_refused"] == 6
    msgs = t.consume(c, "mc", expected=5)
    assert sorted(values(msgs)) == sorted(
        [b"held%d" % i for i in range(4)] + [b"later"]), values(msgs)
    assert k.stop() == 0


def cpu_seconds(k):
    with open("/proc/%d/stat" % k.proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_fds_pauses_accepts(t):
    """With its file descriptors used up (EMFILE), kproxyd pauses accepting
    instead of spinning on the listening (and control) socket, and accepts
    the waiting connections once descriptors are free again."""
    if under_wrapper():
        raise Skip("valgrind keeps descriptors of its own")
    c = t.cluster(topics={"fd": 1})
    k = t.kproxyd(c)
    assert send(k.sock, b"fd warm-up\n")["delivered"] == 1
    stats_quiet(k)
    used = len(os.listdir("/proc/%d/fd" % k.proc.pid))
    _, hard = resource.prlimit(k.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(k.proc.pid, resource.RLIMIT_NOFILE, (used + 8, hard))
    socks = [connect(k.sock) for _ in range(30)]
    try:
        wait_for(lambda: "pausing accepts" in k.log_text(), 10,
                 "EMFILE to be logged")
        # A control connection waiting as well.
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl.settimeout(tmo(30))
        ctl.connect(k.control_path)
        ctl.sendall(b"stats\n")
        socks.append(ctl)
        cpu0 = cpu_seconds(k)
        t0 = time.monotonic()
        time.sleep(1.0)   # measuring: how busy is it while it waits?
        busy = (cpu_seconds(k) - cpu0) / (time.monotonic() - t0)
        print("out of descriptors: kproxyd CPU %.0f%% while accepts pause"
              % (busy * 100))
        assert busy < 0.1, "kproxyd spins at EMFILE (%.0f%% CPU)" % (
            busy * 100)
        for i, s in enumerate(socks[:30]):
            s.sendall(b"fd c%d\n" % i)
            s.shutdown(socket.SHUT_WR)
        for s in socks[:30]:
            assert read_summary(s) == {"delivered": 1, "failed": 0,
                                       "rejected": 0}
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = ctl.recv(65536)
            assert chunk, "control connection closed: %r" % reply
            reply += chunk
        assert reply.startswith(b"{"), reply
    finally:
        for s in socks:
            s.close()
        resource.prlimit(k.proc.pid, resource.RLIMIT_NOFILE, (hard, hard))
    msgs = t.consume(c, "fd", expected=31)
    assert sorted(values(msgs)) == sorted([b"warm-up"] +
                                          [b"c%d" % i for i in range(30)])
    assert k.stop() == 0


def test_thousands_of_idle_clients(t):
    """3000 idle connections (a tenth of them after a line and a partial
    line) cost little memory each; a client is served meanwhile."""
    n = 3000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * n + 200     # ours and kproxyd's (it inherits the limit)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise Skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    c = t.cluster(topics={"idle": 1})
    k = t.kproxyd(c, {"max_clients": n + 100,
                      "max_clients_per_uid": n + 100})
    assert nofile_limit(k) >= n + 100, nofile_limit(k)
    # Warm up: allocate what the first clients and messages allocate.
    assert send(k.sock, b"idle warm\n")["delivered"] == 1
    stats_quiet(k)
    base = proc_status(k)["VmRSS"]
    socks = []
    try:
        for i in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(k.sock)
            if i % 10 == 0:
                s.sendall(b"idle c%d\nidle partial%d" % (i, i))
            socks.append(s)
        wait_for(lambda: k.stats()["clients"] == n, 30, "%d clients" % n)
        stats_quiet(k)
        rss = proc_status(k)["VmRSS"]
        per = (rss - base) / n
        print("idle connections: %d, kproxyd VmRSS %.1f -> %.1f MiB, "
              "%.0f bytes per idle connection"
              % (n, base / MIB, rss / MIB, per))
        # No read buffer per connection (that would be >= 1 MiB each).
        if not under_wrapper():
            assert per < 4096, per
        # Another client is served while they wait.
        assert send(k.sock, b"idle served\n")["delivered"] == 1
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: k.stats()["clients"] == 0, 30, "clients to go")
    msgs = t.consume(c, "idle", expected=2 + 2 * (n // 10))
    assert len(msgs) == 2 + 2 * (n // 10), len(msgs)
    assert k.stop() == 0


def test_backpressure_brokers_down(t):
    """All brokers down, one writer at full speed, buffer_bytes 16 MiB:
    the writer blocks, stats say backpressure, RSS stays within
    buffer_bytes plus a fixed overhead; once the brokers are back every
    message is delivered, exactly once and in order."""
    limit = 16 * MIB
    # 16 partitions: librdkafka's mock keeps at most 5 MB per partition
    # log (it deletes the oldest batches beyond that).
    c = t.cluster(brokers=3, topics={"bp": 16})
    # one topic may hold the whole buffer: this is the daemon-wide limit
    k = t.kproxyd(c, {"buffer_bytes": limit, "topic_buffer_bytes": limit})
    assert send(k.sock, b"bp warm-up\n")["delivered"] == 1
    stats_quiet(k)
    base = proc_status(k)["VmRSS"]
    for b in (1, 2, 3):
        c.cmd("down %d" % b)
    size = 1024
    n = 2 * limit // size                    # 2 x buffer_bytes
    lines = [b"bp c0 s%06d " % i for i in range(n)]
    data = b"".join(ln + b"x" * (size - len(ln) - 1) + b"\n" for ln in lines)
    sent = [0]
    result = {}
    s = connect(k.sock, timeout=120)

    def writer():
        try:
            view = memoryview(data)
            while sent[0] < len(data):
                sent[0] += s.send(view[sent[0]:sent[0] + 65536])
            s.shutdown(socket.SHUT_WR)
            result["summary"] = read_summary(s)
        except BaseException as e:  # noqa: reported by the test
            result["error"] = e

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        st = wait_for(lambda: (lambda x: x if x["backpressure"] else None)(
            k.stats()), 30, "backpressure")
        # The writer is blocked: no progress for a second.
        before = sent[0]
        peak = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            peak = max(peak, proc_status(k)["VmRSS"])
            time.sleep(0.05)
        after = sent[0]
        st = k.stats()
        hwm = proc_status(k)["VmHWM"]
        print("backpressure: writer stalled at %.1f of %.1f MiB; "
              "queued_bytes %.2f MiB; kproxyd VmRSS %.1f MiB before, "
              "peak VmHWM %.1f MiB (+%.1f MiB over buffer_bytes %.0f MiB)"
              % (after / MIB, len(data) / MIB, st["queued_bytes"] / MIB,
                 base / MIB, hwm / MIB, (hwm - base - limit) / MIB,
                 limit / MIB))
        assert st["backpressure"] is True, st
        assert after == before and after < len(data), (before, after)
        assert th.is_alive() and not result, result
        assert st["queued_bytes"] <= limit + MIB, st
        if rss_is_kproxyds(t):
            assert hwm - base < limit + 8 * MIB, (
                "RSS grew %.1f MiB for buffer_bytes %.0f MiB" % (
                    (hwm - base) / MIB, limit / MIB))
    finally:
        for b in (1, 2, 3):
            c.cmd("up %d" % b)
    th.join(tmo(120))
    assert not th.is_alive(), "writer still blocked after brokers came back"
    assert "error" not in result, result.get("error")
    s.close()
    assert result["summary"] == {"delivered": n, "failed": 0,
                                 "rejected": 0}, result
    st = stats_quiet(k)
    assert st["backpressure"] is False, st
    msgs = [m for m in t.consume(c, "bp", expected=n + 1)
            if m["value"] != b"bp warm-up"[3:]]
    expected = {(0, i): ("bp", None, data[i * size + 3:(i + 1) * size - 1])
                for i in range(n)}

    def ident(m):
        v = m["value"]
        return (0, int(v[4:10])) if v.startswith(b"c0 s") else None

    counts = {}
    for m in msgs:
        counts[m["partition"]] = counts.get(m["partition"], 0) + 1
    print("backpressure: consumed per partition %r" % counts)
    check_delivery(msgs, expected, ident)
    assert k.stop() == 0


def test_garbage_broker(t):
    """A broker whose responses have a negative, oversized or too small
    size, an unknown correlation id, an array count beyond the bytes, a
    truncated frame or a 60 MiB claim that never comes: kproxyd closes
    (or times out) that connection with a logged error, reconnects,
    allocates nothing of what the size claims, and delivers what it
    buffered meanwhile once the broker behaves (here: proxied to the
    mock cluster)."""
    c = t.cluster(brokers=1, topics={"gb": 1})
    order = ["av_count_v3", "neg_size", "huge_size", "short_size",
             "bad_corr", "body_count", "truncated", "big_claim"]
    fb = FakeBroker(order, upstream=c.broker_addr(1),
                    linger=tmo(8))
    try:
        # reconnects back off (doubling) after each garbage answer: a low
        # cap keeps the eight scenarios quick
        k = t.kproxyd(None, {"brokers": [fb.addr],
                             "reconnect_backoff_max_ms": 400,
                             "producer": {"request_timeout_ms": 2000}})
        base = proc_status(k)
        # Written while there is no usable broker: waits in the buffer.
        s = connect(k.sock, timeout=120)
        s.sendall(b"".join(b"gb m%d\n" % i for i in range(100)))
        s.shutdown(socket.SHUT_WR)
        results = fb.wait_results(len(order), tmo(60))
        r = read_summary(s)
        s.close()
        assert r == {"delivered": 100, "failed": 0, "rejected": 0}, r
        assert k.running(), "kproxyd died:\n" + k.log_tail()
        for res in results:
            if res["scenario"] != "av_count_v3":
                assert res["handshake"], res
            if SCENARIO_CLOSES[res["scenario"]]:
                assert res["closed_by_peer"], res
        assert [x["scenario"] for x in results] == order, results
        log = k.log_text()
        for what in ["malformed ApiVersions response",
                     "invalid response size -7",
                     "invalid response size %d" % 0x7FFFFFF0,
                     "invalid response size 2",
                     "unexpected response (correlation id"]:
            assert what in log, "%r not logged:\n%s" % (what, k.log_tail())
        after = proc_status(k)
        grew = after["VmHWM"] - base["VmRSS"]
        print("garbage broker: kproxyd VmHWM grew %.1f MiB, VmPeak %.1f "
              "MiB" % (grew / MIB, (after["VmPeak"] - base["VmSize"]) / MIB))
        if not under_wrapper():
            assert grew < 32 * MIB, grew
        if rss_is_kproxyds(t):
            assert after["VmPeak"] - base["VmSize"] < 32 * MIB, (after, base)
        msgs = t.consume(c, "gb", expected=100)
        assert sorted(values(msgs)) == sorted(b"m%d" % i for i in range(100))
        assert k.stop() == 0
    finally:
        fb.stop()


# Scenarios after which kproxyd itself must close the connection.
SCENARIO_CLOSES = {"av_count_v3": True, "neg_size": True, "huge_size": True,
                   "short_size": True, "bad_corr": True, "body_count": False,
                   "truncated": False, "big_claim": True}
