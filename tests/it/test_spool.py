"""The disk spool (issue 15, SPEC "Disk spool"): nothing kproxyd has read
is lost to a crash, a kill or a long outage.

- `always`: every message read is in the spool before it is batched;
  SIGKILL at random moments (a seeded series; `make crash` runs a longer
  one) and a restart with the same configuration: per connection, Kafka
  holds a gap-free prefix of what was written, in order per partition,
  duplicates only of what was in flight at a kill, and the spool ends
  empty;
- a torn or damaged newest segment: start succeeds, nothing corrupt is
  produced, the cut is counted;
- `overflow`: every broker down, buffer_bytes 2 MiB, a writer writes
  20 MiB without blocking; the brokers return, everything arrives in
  order, the spool empties and its files go;
- a spool on a full file system (a small tmpfs) or an unwritable one:
  backpressure and a clear error, no loss;
- shutdown: what is not acknowledged stays in the spool and goes after
  the next start.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from kptest import (Skip, by_partition, connect, read_summary, send,
                    stats_quiet, tmo, wait_for)

MIB = 1 << 20
FAST = {"linger_ms": 5, "request_timeout_ms": 2000, "retry_backoff_ms": 20,
        "retry_backoff_max_ms": 200}


def _spool_conf(t, mode="always", **kw):
    conf = {"dir": t.path("spool"), "mode": mode}
    conf.update(kw)
    return conf


def _spool_files(t):
    d = t.path("spool")
    return sorted(f for f in os.listdir(d)) if os.path.isdir(d) else []


def _quiet_spool(k, timeout=60):
    """stats once nothing is queued, in flight or waiting in the spool."""
    def quiet():
        st = k.stats()
        sp = st.get("spool", {})
        return st if (st["queued_messages"] == 0 and
                      st["inflight_requests"] == 0 and
                      sp.get("backlog_messages", 0) == 0 and
                      sp.get("waiting_messages", 0) == 0) else None
    return wait_for(quiet, tmo(timeout), "nothing left in the spool")


def test_spool_always_round_trip(t):
    """`always`: every message goes through the spool (appended before it
    is batched, acknowledged once Kafka has it); receipts and summaries
    keep their meaning; stats and metrics show the spool and its
    fdatasync rounds (fsync_ms); a clean stop leaves no file behind."""
    c = t.cluster(brokers=1, topics={"sp": 3})
    k = t.kproxyd(c, {"spool": _spool_conf(t, fsync_ms=20),
                      "producer": FAST,
                      "listeners": [{"path": "r.sock", "receipts": "each"}]})
    s = connect(k.sock)
    s.sendall(b"".join(b"sp v%d\n" % i for i in range(2000)))
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    lines = data.decode().splitlines()
    assert lines[-1] == "delivered=2000 failed=0 rejected=0", lines[-3:]
    assert sum(ln.startswith("ok ") for ln in lines) == 2000
    st = _quiet_spool(k)
    sp = st["spool"]
    assert sp["mode"] == "always" and sp["appended"] == 2000, sp
    assert sp["acked"] == 2000 and sp["backlog_messages"] == 0, sp
    sp = wait_for(lambda: (lambda x: x if x["fsyncs"] else None)(
        k.stats()["spool"]), tmo(10), "an fdatasync round")
    assert sp["fsync_errors"] == 0 and sp["fsync_max_us"] > 0, sp
    metrics = "\n".join(k.control_lines("metrics", until="# EOF"))
    for fam in ("kproxyd_spool_bytes", "kproxyd_spool_segments",
                "kproxyd_spool_backlog_messages 0",
                "kproxyd_spool_replayed_messages_total 0",
                "kproxyd_spool_torn_records_total 0",
                "kproxyd_spool_fsync_seconds_total"):
        assert fam in metrics, fam
    assert k.stop() == 0
    assert _spool_files(t) == [], _spool_files(t)


# ---- crashes ----

def _crash_writer(k, conn, stop, state):
    """Streams keyed lines `cr kN conn:i` until stop or the connection
    dies; state["attempted"]: lines handed to the socket so far (an upper
    bound of what kproxyd read)."""
    try:
        s = connect(k.sock)
    except OSError:
        return
    i = 0
    try:
        while not stop.is_set():
            chunk = b"".join(b"cr k%d %d:%d\n" % ((i + j) % 16, conn, i + j)
                             for j in range(100))
            state["attempted"] = i + 100
            s.sendall(chunk)
            i += 100
            time.sleep(0.001)
    except OSError:
        pass
    finally:
        s.close()


def _check_prefixes(msgs, attempted):
    """Per connection a gap-free prefix of what it wrote, in order per
    partition; returns (messages, duplicates)."""
    seen = {}
    dupes = 0
    for (_, part), ms in by_partition(msgs).items():
        last = {}
        for m in ms:
            conn, i = (int(x) for x in m["value"].decode().split(":"))
            key = (conn, i)
            if key in seen:
                dupes += 1
                continue
            seen[key] = part
            assert i > last.get(conn, -1), \
                "partition %d: %d:%d after %d:%d" % (part, conn, i, conn,
                                                      last[conn])
            last[conn] = i
            assert m["key"] in (b"k%d" % (i % 16), b"k%d" % (i % 64)), m
    per_conn = {}
    for conn, i in seen:
        per_conn.setdefault(conn, set()).add(i)
    for conn, got in per_conn.items():
        n = max(got) + 1
        if len(got) != n:
            missing = sorted(set(range(n)) - got)
            print("connection %d missing: %s ... %s" % (conn, missing[:20],
                                                        missing[-5:]))
        assert len(got) == n, "connection %d: %d gap(s) below %d" % (
            conn, n - len(got), n)
        assert n <= attempted.get(conn, 0), (conn, n, attempted.get(conn))
    return len(seen), dupes


def _crash_series(t, runs, seed):
    rnd = random.Random(seed)
    print("crash series: seed %d, %d SIGKILLs (KP_CRASH_SEED=%d to repeat)"
          % (seed, runs, seed))
    c = t.cluster(brokers=1, topics={"cr": 4})
    k = t.kproxyd(c, {
        "spool": _spool_conf(t, max_bytes=512 * MIB),
        "producer": dict(FAST, acks="all"),
        "listeners": [{"path": "cr.sock", "format": "topic,key,value"}]})
    attempted = {}
    torn = 0
    for run in range(runs):
        stop, state = threading.Event(), {}
        th = threading.Thread(target=_crash_writer,
                              args=(k, run, stop, state), daemon=True)
        th.start()
        time.sleep(rnd.uniform(0.02, 0.8))
        k.proc.kill()  # SIGKILL: nothing is flushed, closed or said
        k.proc.wait()
        stop.set()
        th.join(tmo(10))
        attempted[run] = state.get("attempted", 0)
        k.start()  # the same configuration and spool
        torn += k.stats()["spool"]["torn"]
    _quiet_spool(k, 120)
    assert k.stop() == 0
    # what each start found to send again (an upper bound of what it did)
    replayed = sum(int(n) for n in re.findall(
        r"spool: (\d+) message\(s\) of an earlier run to send first",
        k.log_text()))
    assert _spool_files(t) == [], _spool_files(t)
    msgs = t.consume(c, "cr", idle_ms=2000)
    unique, dupes = _check_prefixes(msgs, attempted)
    print("crash series: %d lines attempted, %d delivered (%d unique, %d "
          "duplicates: in flight or acknowledged but not journaled at a "
          "kill), %d records to send again found at restarts, %d torn cut"
          % (sum(attempted.values()), len(msgs), unique, dupes, replayed,
             torn))
    # a duplicate can only be a message sent again after a restart: one
    # Kafka had got before its ack reached the spool's journal (in flight
    # at the kill, or acknowledged in the last moments)
    assert dupes <= replayed, (dupes, replayed)
    assert unique > 0


def test_spool_crash_sigkill_series(t):
    """`always`: a writer streams keyed lines, kproxyd is SIGKILLed at a
    random moment and restarted with the same configuration, KP_CRASH_RUNS
    times (5 here; `make crash` runs 20 or more). Per connection Kafka has
    a gap-free prefix of what was written, in order per partition, with
    duplicates only of what was in flight at a kill; the spool ends empty.
    The seed is printed (KP_CRASH_SEED repeats a series)."""
    runs = int(os.environ.get("KP_CRASH_RUNS", "5"))
    seed = int(os.environ.get("KP_CRASH_SEED", str(random.randrange(1 << 30))))
    _crash_series(t, runs, seed)


def _kill_with_backlog(t, n, mode="always"):
    """Every broker down; n keyed lines read (in the spool, unsent); then
    SIGKILL. Returns (cluster, kproxyd not running)."""
    c = t.cluster(brokers=1, topics={"tt": 2})
    k = t.kproxyd(c, {"spool": _spool_conf(t, mode=mode),
                      "producer": dict(FAST, delivery_timeout_ms=600000),
                      "listeners": [{"path": "tt.sock",
                                     "format": "topic,key,value"}]})
    assert send(k.sock, b"tt warm 0:-1\n")["delivered"] == 1
    c.cmd("down 1")
    s = connect(k.sock)
    s.sendall(b"".join(b"tt k%d 0:%d\n" % (i % 16, i) for i in range(n)))
    wait_for(lambda: k.stats()["received"] == n + 1, tmo(20), "all read")
    wait_for(lambda: k.stats()["spool"]["appended"] == n + 1, tmo(10),
             "all spooled")
    time.sleep(0.2)  # a loop iteration: appended records reach the file
    k.proc.kill()
    k.proc.wait()
    s.close()
    return c, k


def test_spool_torn_tail_cut_and_counted(t):
    """A kill leaves the spool with a backlog; its newest segment is then
    truncated at a random offset and has bytes flipped at random offsets
    (seeded). The next start succeeds, cuts the damaged tail and counts it
    (stats spool.torn), and what it sends is exactly messages that were
    written (no garbage), a gap-free prefix in order per partition."""
    seed = int(os.environ.get("KP_CRASH_SEED", str(random.randrange(1 << 30))))
    rnd = random.Random(seed)
    n = 5000
    c, k = _kill_with_backlog(t, n)
    segs = sorted(f for f in _spool_files(t) if f.endswith(".seg"))
    newest = os.path.join(t.path("spool"), segs[-1])
    size = os.path.getsize(newest)
    cut = rnd.randrange(size // 2, size)
    flips = sorted(rnd.randrange(32, cut) for _ in range(3))
    with open(newest, "r+b") as f:
        f.truncate(cut)
        for off in flips:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x5a]))
    print("torn tail (seed %d): %s of %d bytes truncated at %d, bytes "
          "flipped at %s" % (seed, segs[-1], size, cut, flips))
    c.cmd("up 1")
    k.start()
    st = _quiet_spool(k)
    assert st["spool"]["torn"] >= 1, st["spool"]
    assert k.stop() == 0
    assert _spool_files(t) == []
    msgs = [m for m in t.consume(c, "tt", idle_ms=2000)
            if m["value"] != b"0:-1"]
    unique, dupes = _check_prefixes(msgs, {0: n})
    print("torn tail: %d of %d messages sent after the cut, torn %d"
          % (unique, n, st["spool"]["torn"]))
    assert dupes == 0 and unique < n, (unique, dupes)
    assert "torn" in k.log_text() or "cut" in k.log_text()


def test_spool_restart_sends_what_was_left_first(t):
    """A kill with 3,000 messages in the spool; after the restart a new
    writer writes more for the same partitions: the earlier run's
    messages go first (replayed before new ones), all of them."""
    n = 3000
    c, k = _kill_with_backlog(t, n)
    c.cmd("up 1")
    k.start()
    r = send(k.sock, b"".join(b"tt k%d 1:%d\n" % (i % 16, i)
                              for i in range(1000)))
    assert r == {"delivered": 1000, "failed": 0, "rejected": 0}, r
    st = _quiet_spool(k)
    assert st["spool"]["replayed"] >= n, st["spool"]
    assert k.stop() == 0
    msgs = [m for m in t.consume(c, "tt", idle_ms=2000)
            if m["value"] != b"0:-1"]
    unique, dupes = _check_prefixes(msgs, {0: n, 1: 1000})
    assert unique == n + 1000 and dupes == 0, (unique, dupes)
    for part, ms in by_partition(msgs).items():
        conns = [int(m["value"].split(b":")[0]) for m in ms]
        assert conns == sorted(conns), "new before replayed in %s" % (part,)


# ---- overflow ----

def test_spool_overflow_brokers_down(t):
    """`overflow`, every broker down, buffer_bytes 2 MiB, spool 64 MiB: a
    writer writes 20 MiB and is never blocked (the spool takes what memory
    cannot); the brokers return; everything arrives, in order per
    partition; the spool empties and its files are removed."""
    # 32 partitions: librdkafka's mock keeps about 5 MiB per partition log
    c = t.cluster(brokers=3, topics={"ov": 32})
    k = t.kproxyd(c, {"buffer_bytes": 2 * MIB,
                      "spool": _spool_conf(t, mode="overflow",
                                           max_bytes=64 * MIB),
                      "producer": dict(FAST, delivery_timeout_ms=600000),
                      "listeners": [{"path": "ov.sock",
                                     "format": "topic,key,value"}]})
    assert send(k.sock, b"ov warm 0:-1\n")["delivered"] == 1
    for b in (1, 2, 3):
        c.cmd("down %d" % b)
    n, size = 20480, 1024  # 20 MiB
    lines = []
    for i in range(n):
        head = b"ov k%d 0:%d " % (i % 64, i)
        lines.append(head[:-1] + b"-" + b"x" * (size - len(head) - 1) + b"\n")
    s = connect(k.sock, timeout=tmo(30))
    t0 = time.monotonic()
    s.sendall(b"".join(lines))
    s.shutdown(socket.SHUT_WR)
    wait_for(lambda: k.stats()["received"] == n + 1, tmo(30), "all read")
    took = time.monotonic() - t0
    st = k.stats()
    print("overflow: 20 MiB written and read in %.2f s with every broker "
          "down; spool %s" % (took, st["spool"]))
    assert not st["backpressure"], st
    assert st["queued_bytes"] <= 2 * MIB + MIB, st["queued_bytes"]
    assert st["spool"]["backlog_messages"] >= n // 2, st["spool"]
    for b in (1, 2, 3):
        c.cmd("up %d" % b)
    assert read_summary(s) == {"delivered": n, "failed": 0, "rejected": 0}
    s.close()
    st = _quiet_spool(k, 120)
    assert st["spool"]["backlog_messages"] == 0, st["spool"]
    assert k.stop() == 0
    assert _spool_files(t) == [], _spool_files(t)
    msgs = [m for m in t.consume(c, "ov", expected=n + 1, idle_ms=3000)
            if not m["value"].startswith(b"0:-1")]
    for m in msgs:
        m["value"] = m["value"].split(b"-", 1)[0]
    unique, dupes = _check_prefixes(msgs, {0: n})
    assert unique == n and dupes == 0, (unique, dupes)


# ---- a full or unwritable spool directory ----

def _tmpfs_wrapper(t, size, d=None):
    """A command prefix running kproxyd in a private mount namespace with
    a tmpfs of `size` at d (spool/ by default); Skip where that is
    refused. Its files are seen at /proc/PID/root while kproxyd runs."""
    if not shutil.which("unshare") or os.getuid() != 0:
        raise Skip("needs root and unshare(1)")
    d = d or t.path("spool")
    os.makedirs(d, mode=0o700, exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs -o size=64k,mode=0700 tmpfs \"$0\"", d],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if probe.returncode != 0:
        raise Skip("cannot mount a tmpfs in a private namespace: %s"
                   % probe.stderr.decode().strip())
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            "mount -t tmpfs -o size=%d,mode=0700 tmpfs \"$0\" && exec "
            "\"$@\"" % size, d]


def test_spool_full_file_system(t):
    """The spool on a 2 MiB tmpfs (a private mount namespace), every
    broker down, a writer writes 8 MiB: once the file system is full the
    writer is paused (backpressure) with a clear error in the log, and
    nothing is lost; the brokers return and every message is delivered."""
    c = t.cluster(brokers=1, topics={"fs": 4})
    k = t.kproxyd(c, {"buffer_bytes": MIB,
                      "spool": _spool_conf(t, mode="always",
                                           max_bytes=256 * MIB),
                      "producer": dict(FAST, delivery_timeout_ms=600000),
                      "listeners": [{"path": "fs.sock",
                                     "format": "topic,key,value"}]},
                  wrapper=_tmpfs_wrapper(t, 2 * MIB))
    assert send(k.sock, b"fs warm 0:-1\n")["delivered"] == 1
    c.cmd("down 1")
    n = 8192
    data = b"".join(b"fs k%d 0:%d-%s\n" % (i % 16, i, b"y" * 1000)
                    for i in range(n))
    res = {}

    def writer():
        s = connect(k.sock, timeout=tmo(120))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        res["summary"] = read_summary(s)
        s.close()
    th = threading.Thread(target=writer, daemon=True)
    th.start()
    wait_for(lambda: k.stats()["backpressure"], tmo(30), "backpressure")
    got = k.stats()["received"]
    time.sleep(0.5)
    st = k.stats()
    assert st["backpressure"] and st["received"] == got, st
    assert st["spool"]["blocked"] and st["spool"]["write_errors"] >= 1, \
        st["spool"]
    assert re.search(r"spool .*: (write|create): No space left on device",
                     k.log_text()), k.log_tail()
    print("full tmpfs: writer paused after %d of %d lines; spool %s"
          % (got, n, st["spool"]))
    c.cmd("up 1")
    th.join(tmo(120))
    assert res.get("summary") == {"delivered": n, "failed": 0,
                                  "rejected": 0}, res
    _quiet_spool(k)
    assert k.stop() == 0
    msgs = [m for m in t.consume(c, "fs", expected=n + 1, idle_ms=3000)
            if m["value"] != b"0:-1"]
    for m in msgs:
        m["value"] = m["value"].split(b"-", 1)[0]
    unique, dupes = _check_prefixes(msgs, {0: n})
    assert unique == n and dupes == 0, (unique, dupes)


def test_spool_dead_letter_full_keeps_records(t):
    """`always`, every broker down, the dead letter file on a 64 KiB tmpfs
    (a private mount namespace): 2,000 messages fail at their delivery
    timeout, and the dead letter takes only some of them. Those it could
    not take are counted (dead_letter_errors) and not acknowledged in the
    spool: the next start (brokers back) delivers exactly them. Nothing is
    lost, nothing is both dead-lettered and delivered."""
    c = t.cluster(brokers=1, topics={"dx": 2})
    dl_dir = t.path("dl")
    os.makedirs(dl_dir, mode=0o700)
    over = {"spool": _spool_conf(t),
            "dead_letter": os.path.join(dl_dir, "dead.jsonl"),
            "producer": dict(FAST, delivery_timeout_ms=2500,
                             batch_messages=50),
            "listeners": [{"path": "dx.sock", "format": "topic,key,value"}]}
    k = t.kproxyd(c, over, wrapper=_tmpfs_wrapper(t, 64 * 1024, dl_dir))
    assert send(k.sock, b"dx warm 0:-1\n")["delivered"] == 1
    c.cmd("down 1")
    n = 2000
    r = send(k.sock, b"".join(b"dx k%d 0:%d-%s\n" % (i % 16, i, b"z" * 100)
                              for i in range(n)), timeout=tmo(60))
    assert r == {"delivered": 0, "failed": n, "rejected": 0}, r
    st = k.stats()
    errors = st["dead_letter_errors"]
    with open("/proc/%d/root%s" % (k.proc.pid, over["dead_letter"])) as f:
        dead = [json.loads(ln) for ln in f]
    print("dead letter on a full tmpfs: %d lines written, %d messages it "
          "could not take; spool backlog %d"
          % (len(dead), errors, st["spool"]["backlog_messages"]))
    assert errors > 0 and len(dead) + errors == n, (len(dead), errors)
    assert st["spool"]["backlog_messages"] == errors, st["spool"]
    assert re.search(r"dead_letter .*: write: No space left on device",
                     k.log_text()), k.log_tail()
    assert k.stop() == 0
    c.cmd("up 1")
    k2 = t.kproxyd(c, dict(over, dead_letter=t.path("dead2.jsonl")))
    st = _quiet_spool(k2)
    assert st["spool"]["replayed"] == errors, st["spool"]
    assert k2.stop() == 0
    sent = {m["value"].split(b"-")[0].decode()
            for m in t.consume(c, "dx", idle_ms=2000)
            if m["value"] != b"0:-1"}
    dead_vals = {d["value"].split("-")[0] for d in dead}
    assert len(sent) == errors and not sent & dead_vals, (len(sent), errors)
    assert sent | dead_vals == {"0:%d" % i for i in range(n)}


def test_spool_unwritable_directory(t):
    """A spool directory kproxyd cannot write to (a read-only mount, or a
    directory that is not its own): start-up fails at once with a clear
    error naming it (exit 1)."""
    d = t.path("spool")
    os.makedirs(d, mode=0o755)
    os.chown(d, 65534, 65534) if os.getuid() == 0 else os.chmod(d, 0o500)
    k = t.kproxyd(None, {"spool": _spool_conf(t)}, wait=False)
    assert k.wait(tmo(15)) == 1
    log = k.log_text()
    assert re.search(r"spool dir %s: (owned by uid|open|mkdir|Permission)"
                     % re.escape(d), log), k.log_tail()
    assert "start-up failed" in log, k.log_tail()


# ---- shutdown ----

def test_spool_sigterm_keeps_what_is_left(t):
    """SIGTERM while writers are still sending and no broker answers: every
    line a writer wrote is read, nothing is dead-lettered (what Kafka has
    not acknowledged stays in the spool: exit 0); the next start sends all
    of it."""
    c = t.cluster(brokers=1, topics={"sg": 3})
    over = {"spool": _spool_conf(t), "shutdown_timeout_ms": 1500,
            "producer": dict(FAST, delivery_timeout_ms=600000),
            "listeners": [{"path": "sg.sock", "format": "topic,key,value"}]}
    k = t.kproxyd(c, over, dead_letter=True)
    assert send(k.sock, b"sg warm 9:-1\n")["delivered"] == 1
    c.cmd("down 1")
    writers, chunks, per = 3, 20, 100
    sent = [0] * writers

    def writer(ci):
        s = connect(k.sock)
        try:
            for _ in range(chunks):
                s.sendall(b"".join(b"sg k%d %d:%d\n" % (i % 16, ci, i)
                                   for i in range(sent[ci],
                                                  sent[ci] + per)))
                sent[ci] += per
                time.sleep(0.01)
            s.shutdown(socket.SHUT_WR)
            s.recv(100)
        except OSError:
            pass
        s.close()
    ths = [threading.Thread(target=writer, args=(ci,), daemon=True)
           for ci in range(writers)]
    for th in ths:
        th.start()
    wait_for(lambda: k.stats()["received"] >= 1 + writers * per * 3,
             tmo(15), "writers under way")
    k.send_signal(signal.SIGTERM)
    for th in ths:
        th.join(tmo(30))
    assert k.wait(tmo(30)) == 0, k.log_tail()
    assert k.dead_letter_lines() == []
    assert re.search(r"shutdown: \d+ message\(s\) left in the spool",
                     k.log_text()), k.log_tail()
    c.cmd("up 1")
    k2 = t.kproxyd(c, over, dead_letter=True)
    _quiet_spool(k2)
    assert k2.stop() == 0
    msgs = [m for m in t.consume(c, "sg", idle_ms=2000)
            if m["value"] != b"9:-1"]
    unique, dupes = _check_prefixes(msgs, dict(enumerate(sent)))
    assert unique == sum(sent), (unique, sent)


def test_spool_overflow_shutdown_keeps_order(t):
    """`overflow`, shutdown with messages in memory only: a topic with
    nothing in the spool has them appended there (kept for the next
    start, in order); they are not dead-lettered."""
    c = t.cluster(brokers=1, topics={"ok": 2})
    over = {"spool": _spool_conf(t, mode="overflow"),
            "shutdown_timeout_ms": 1000,
            "producer": dict(FAST, delivery_timeout_ms=600000),
            "listeners": [{"path": "o.sock", "format": "topic,key,value"}]}
    k = t.kproxyd(c, over, dead_letter=True)
    assert send(k.sock, b"ok warm 9:-1\n")["delivered"] == 1
    c.cmd("down 1")
    s = connect(k.sock)
    s.sendall(b"".join(b"ok k%d 0:%d\n" % (i % 16, i) for i in range(500)))
    wait_for(lambda: k.stats()["received"] == 501, tmo(10), "read")
    st = k.stats()
    assert st["spool"]["appended"] == 0, st["spool"]  # memory only
    s.close()
    assert k.stop() == 0
    assert k.dead_letter_lines() == []
    c.cmd("up 1")
    k2 = t.kproxyd(c, over, dead_letter=True)
    st = _quiet_spool(k2)
    assert st["spool"]["replayed"] == 500, st["spool"]
    assert k2.stop() == 0
    msgs = [m for m in t.consume(c, "ok", idle_ms=2000)
            if m["value"] != b"9:-1"]
    unique, dupes = _check_prefixes(msgs, {0: 500})
    assert unique == 500, unique
