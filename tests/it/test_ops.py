"""Operations (issue 6; SPEC "systemd", "Control socket", listener keys):
the sd_notify protocol, socket activation, live reload, uid/gid and topic
allow-lists, peer headers, OpenMetrics parsed by a real parser, the unit's
sandboxing score (`make install` / `make uninstall`: test_install.py)."""

import fcntl
import json
import os
import re
import shutil
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import kptest
from kptest import (Skip, check_delivery, connect, read_summary, send,
                    stats_quiet, tmo, wait_for)
from notify_listener import NotifyListener

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _write_conf(k, conf):
    """Rewrites k's configuration file in place (for a reload)."""
    tmp = k.conf_path + ".new"
    with open(tmp, "w") as f:
        json.dump(conf, f, indent=2)
    os.replace(tmp, k.conf_path)
    k.conf = conf


def _conf_with(k, **producer):
    conf = json.loads(json.dumps(k.conf))
    conf.setdefault("producer", {}).update(producer)
    return conf


# --------------------------------------------------------------------------
# systemd notify protocol

def test_notify_protocol(t):
    """READY (with STATUS) once listening, WATCHDOG every half
    WATCHDOG_USEC, STATUS following the counters, RELOADING with
    MONOTONIC_USEC then READY around SIGHUP and `reload`, STOPPING at
    SIGTERM; in that order."""
    c = t.cluster(topics={"nt": 1})
    with NotifyListener(t.path("notify.sock")) as nl:
        k = t.kproxyd(c, env={"NOTIFY_SOCKET": nl.address,
                              "WATCHDOG_USEC": "200000"})
        ready = nl.wait_for(lambda m: m.get("READY") == "1", what="READY=1")
        assert "STATUS" in nl.snapshot()[ready][1], nl.snapshot()[ready]
        # Nothing is sent before READY=1 but watchdog pings.
        for _, m in nl.snapshot()[:ready]:
            assert set(m) <= {"WATCHDOG"}, m

        # WATCHDOG=1 every 100 ms (half of 200 ms), from the loop.
        first = nl.wait_for(lambda m: m.get("WATCHDOG") == "1",
                            what="WATCHDOG=1")
        time.sleep(1.0)
        pings = [ts for ts, m in nl.snapshot()[first:]
                 if m.get("WATCHDOG") == "1"]
        assert len(pings) >= 6, "%d WATCHDOG=1 in ~1 s" % len(pings)
        gaps = sorted(b - a for a, b in zip(pings, pings[1:]))
        median = gaps[len(gaps) // 2]
        assert 0.06 <= median <= 0.15 * kptest.SCALE, gaps
        # A watchdog that fires after 200 ms must never be reached.
        assert gaps[-1] < 0.2 * kptest.SCALE, gaps

        # STATUS= follows the counters (every few seconds, when changed).
        r = send(k.sock, b"".join(b"nt v%d\n" % i for i in range(10)))
        assert r == {"delivered": 10, "failed": 0, "rejected": 0}, r
        st = nl.wait_for(lambda m: "delivered 10," in m.get("STATUS", ""),
                         start=ready + 1, timeout=6, what="STATUS update")

        # SIGHUP: RELOADING=1 with MONOTONIC_USEC (CLOCK_MONOTONIC), READY.
        before = time.monotonic()
        k.send_signal(signal.SIGHUP)
        rel1 = nl.wait_for(lambda m: m.get("RELOADING") == "1",
                           start=st + 1, what="RELOADING=1 (SIGHUP)")
        after = time.monotonic()
        usec = int(nl.snapshot()[rel1][1]["MONOTONIC_USEC"])
        assert before * 1e6 - 1e5 <= usec <= after * 1e6 + 1e5, \
            (before, usec, after)
        rdy1 = nl.wait_for(lambda m: m.get("READY") == "1", start=rel1 + 1,
                           what="READY=1 after SIGHUP")
        # The control command goes through the same steps.
        assert k.control("reload") == "ok"
        rel2 = nl.wait_for(lambda m: m.get("RELOADING") == "1",
                           start=rdy1 + 1, what="RELOADING=1 (reload)")
        assert "MONOTONIC_USEC" in nl.snapshot()[rel2][1]
        rdy2 = nl.wait_for(lambda m: m.get("READY") == "1", start=rel2 + 1,
                           what="READY=1 after reload")

        assert k.stop() == 0
        stop = nl.wait_for(lambda m: m.get("STOPPING") == "1",
                           start=rdy2 + 1, what="STOPPING=1")
        later = [m for _, m in nl.snapshot()[stop + 1:]]
        assert not any("READY" in m or "RELOADING" in m for m in later), \
            later
        assert ready < st < rel1 < rdy1 < rel2 < rdy2 < stop
    # Under systemd, log lines carry a syslog priority and no timestamp.
    lines = [ln for ln in k.log_text().splitlines() if ln]
    assert lines and all(re.match(r"^<[3467]>", ln) for ln in lines), \
        lines[:5]


def test_notify_abstract_socket_no_watchdog(t):
    """An abstract "@" NOTIFY_SOCKET works; WATCHDOG_USEC meant for another
    process (WATCHDOG_PID) sends no pings."""
    c = t.cluster(topics={"na": 1})
    addr = "@kpit-notify-%d-%d" % (os.getpid(), int(time.time() * 1000))
    with NotifyListener(addr) as nl:
        k = t.kproxyd(c, env={"NOTIFY_SOCKET": addr,
                              "WATCHDOG_USEC": "100000",
                              "WATCHDOG_PID": "1"})
        ready = nl.wait_for(lambda m: m.get("READY") == "1", what="READY=1")
        r = send(k.sock, b"na x\n")
        assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
        time.sleep(0.5)   # five watchdog periods: no ping may come
        assert k.stop() == 0
        stop = nl.wait_for(lambda m: m.get("STOPPING") == "1",
                           start=ready + 1, what="STOPPING=1")
        msgs = [m for _, m in nl.snapshot()]
        assert not any("WATCHDOG" in m for m in msgs), msgs
        assert ready < stop


# --------------------------------------------------------------------------
# Socket activation

# Runs as the process systemd would start: puts the sockets at fds 3, 4, ...
# and sets LISTEN_PID to its own pid (which exec keeps) before exec'ing
# kproxyd. argv: fds (comma-separated), "self" or a pid, command...
ACTIVATE = r"""
import os, sys
fds = [int(x) for x in sys.argv[1].split(",")]
for i, fd in enumerate(fds):
    os.dup2(fd, 3 + i)
for fd in fds:
    os.close(fd)
os.environ["LISTEN_PID"] = (str(os.getpid()) if sys.argv[2] == "self"
                            else sys.argv[2])
os.environ["LISTEN_FDS"] = str(len(fds))
os.execv(sys.argv[3], sys.argv[3:])
"""


def _listening_unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(64)
    return s


def _start_activated(k, socks, names, listen_pid="self", env=None):
    """Starts k (created with start=False) with socks handed over as
    systemd does; fds above 100 so the dup2s cannot collide."""
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100) for s in socks]
    env = dict(k.env, LISTEN_FDNAMES=":".join(names), **(env or {}))
    try:
        with open(k.log_path, "ab") as err, open(k.out_path, "ab") as out:
            k.proc = subprocess.Popen(
                [sys.executable, "-c", ACTIVATE, ",".join(map(str, high)),
                 listen_pid, k.binary, "-c", k.conf_path],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                pass_fds=high)
    finally:
        for fd in high:
            os.close(fd)


def _proc_fd_inode(pid, fd):
    """The socket inode behind /proc/PID/fd/FD, or None."""
    try:
        link = os.readlink("/proc/%d/fd/%d" % (pid, fd))
    except OSError:
        return None
    m = re.match(r"^socket:\[(\d+)\]$", link)
    return int(m.group(1)) if m else None


def _proc_socket_inodes(pid):
    """Inodes of every socket process pid holds."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        ino = _proc_fd_inode(pid, int(fd))
        if ino is not None:
            inodes.add(ino)
    return inodes


def test_socket_activation(t):
    """Sockets passed with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES serve the
    listener and control socket with the same paths, unbound and not
    unlinked by kproxyd; an extra one is closed; fds meant for another pid
    are ignored (the live socket then makes binding fail)."""
    c = t.cluster(topics={"sa": 1})
    data_path, ctl_path = t.path("act.sock"), t.path("actctl.sock")
    data, ctl = _listening_unix(data_path), _listening_unix(ctl_path)
    extra = _listening_unix(t.path("extra.sock"))
    try:
        ino = os.stat(data_path).st_ino
        k = t.kproxyd(c, {"listeners": [{"path": data_path,
                                         "format": "topic,value"}],
                          "control": ctl_path}, start=False)
        # The sockets accept before kproxyd runs: READY=1 says it is up.
        with NotifyListener(t.path("notify.sock")) as nl:
            _start_activated(k, [data, ctl, extra],
                             ["kproxyd", "control", "extra"],
                             env={"NOTIFY_SOCKET": nl.address})
            nl.wait_for(lambda m: m.get("READY") == "1", timeout=15,
                        what="READY=1")
        pid = k.proc.pid
        # kproxyd serves the very sockets it was given at fds 3 and 4 ...
        assert _proc_fd_inode(pid, 3) == os.fstat(data.fileno()).st_ino
        assert _proc_fd_inode(pid, 4) == os.fstat(ctl.fileno()).st_ino
        # ... closed the one no listener wanted (its fd may be reused) ...
        extra_ino = os.fstat(extra.fileno()).st_ino
        assert extra_ino not in _proc_socket_inodes(pid)
        # ... and never re-bound the path.
        assert os.stat(data_path).st_ino == ino
        r = send(data_path, b"".join(b"sa a%d\n" % i for i in range(50)))
        assert r == {"delivered": 50, "failed": 0, "rejected": 0}, r
        assert k.stats()["delivered"] == 50
        assert k.stop() == 0
        # The socket files belong to systemd: still there, still ours.
        assert os.stat(data_path).st_ino == ino
        assert os.path.exists(ctl_path)
        probe = connect(data_path, 5)   # lands in our backlog
        probe.close()
        msgs = t.consume(c, "sa", expected=50)
        assert sorted(m["value"] for m in msgs) == \
            sorted(b"a%d" % i for i in range(50))

        # LISTEN_PID of another process: the fds are not for kproxyd.
        k2 = t.kproxyd(c, {"listeners": [{"path": data_path,
                                          "format": "topic,value"}],
                           "control": None}, start=False)
        _start_activated(k2, [data], ["kproxyd"], listen_pid="1")
        assert k2.wait(15) == 1, k2.log_tail()
        assert os.stat(data_path).st_ino == ino
    finally:
        data.close()
        ctl.close()
        extra.close()


# --------------------------------------------------------------------------
# Live reload

KEYED_RE = re.compile(rb"^s(\d+)$")


def test_reload_mid_stream(t):
    """One connection streams 6000 keyed lines; meanwhile `reload` switches
    linger 5 -> 50 ms and none -> gzip, then SIGHUP sets linger 20 and a
    per-topic zstd. Nothing is lost, duplicated or reordered; stats show
    the new settings and batches of each codec; after the last reload and
    a flush, new batches use only the new codec."""
    c = t.cluster(topics={"rl": 3})
    k = t.kproxyd(c, {"listeners": [{"path": "rl.sock",
                                     "format": "topic,key,value"}],
                      "producer": {"linger_ms": 5, "compression": "none"}})
    total = 6000
    lines = [b"rl k%d s%d\n" % (i % 7, i) for i in range(total)]
    s = connect(k.sock)
    result = {}

    def writer():
        for i in range(0, total, 100):
            s.sendall(b"".join(lines[i:i + 100]))
            time.sleep(0.015)  # pacing, so the reloads land mid-stream
        s.shutdown(socket.SHUT_WR)
        result["summary"] = read_summary(s)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        wait_for(lambda: k.stats()["received"] >= 1500, 20, "1500 lines")
        _write_conf(k, _conf_with(k, linger_ms=50, compression="gzip"))
        assert k.control("reload") == "ok"
        mid = k.stats()
        assert mid["received"] < total, "reload after the stream ended"
        wait_for(lambda: k.stats()["received"] >= 3500, 20, "3500 lines")
        conf = _conf_with(k, linger_ms=20)
        conf["topics"] = {"rl": {"compression": "zstd", "linger_ms": 20}}
        _write_conf(k, conf)
        k.send_signal(signal.SIGHUP)
        wait_for(lambda: k.stats()["config"]["reloads"] == 2, 10,
                 "the SIGHUP reload")
        assert k.stats()["received"] < total, "reload after the stream"
        th.join(tmo(60))
        assert not th.is_alive(), "writer stuck"
    finally:
        s.close()
    assert result["summary"] == {"delivered": total, "failed": 0,
                                 "rejected": 0}, result

    st = stats_quiet(k)
    cfg = st["config"]
    assert cfg["reloads"] == 2 and cfg["reload_failures"] == 0, cfg
    assert cfg["producer"]["linger_ms"] == 20, cfg
    assert cfg["producer"]["compression"] == "gzip", cfg
    assert cfg["topics"]["rl"]["compression"] == "zstd", cfg
    codecs = {n: v["batches"] for n, v in st["batch"]["by_codec"].items()}
    for codec in ("none", "gzip", "zstd"):
        assert codecs[codec] > 0, codecs
    assert sum(codecs.values()) == st["batches"], (codecs, st["batches"])

    # Open batches were all sealed by now: new ones are zstd only.
    assert k.control("flush").startswith("ok ")
    before = {n: v["batches"] for n, v in
              k.stats()["batch"]["by_codec"].items()}
    r = send(k.sock, b"".join(b"rl k%d t%d\n" % (i % 7, i)
                              for i in range(500)))
    assert r == {"delivered": 500, "failed": 0, "rejected": 0}, r
    after = {n: v["batches"] for n, v in
             k.stats()["batch"]["by_codec"].items()}
    assert after["zstd"] > before["zstd"], (before, after)
    for codec in ("none", "gzip", "lz4"):
        assert after[codec] == before[codec], (codec, before, after)
    # The effective configuration (-t) agrees.
    p = subprocess.run([k.binary, "-t", "-c", k.conf_path],
                       stdout=subprocess.PIPE, timeout=tmo(20))
    eff = json.loads(p.stdout)
    assert eff["producer"]["linger_ms"] == 20, eff["producer"]
    assert eff["topics"]["rl"]["compression"] == "zstd", eff["topics"]

    msgs = t.consume(c, "rl", expected=total + 500)
    expected = {(0, i): ("rl", b"k%d" % (i % 7), b"s%d" % i)
                for i in range(total)}

    def ident(m):
        mo = KEYED_RE.match(m["value"] or b"")
        return (0, int(mo.group(1))) if mo else None

    check_delivery([m for m in msgs if not m["value"].startswith(b"t")],
                   expected, ident, c.partitions)
    assert k.log_text().count("reload: configuration applied") == 2
    assert k.stop() == 0


def test_reload_invalid_keeps_old_config(t):
    """An invalid file is rejected whole: `reload` answers `error: ...`
    naming every problem, SIGHUP logs them, the old settings stay and
    delivery goes on. A listener change is applied only on restart (and
    said so)."""
    c = t.cluster(topics={"ri": 1})
    k = t.kproxyd(c, {"producer": {"linger_ms": 5, "compression": "none"}})
    good = json.loads(json.dumps(k.conf))
    bad = json.loads(json.dumps(good))
    bad["producer"].update(linger_ms="soon", compression="lz4",
                           no_such_key=1)
    _write_conf(k, bad)
    reply = k.control("reload")
    assert reply.startswith("error: "), reply
    assert "linger_ms" in reply and "no_such_key" in reply, reply
    st = k.stats()
    assert st["config"]["producer"]["linger_ms"] == 5, st["config"]
    assert st["config"]["producer"]["compression"] == "none", st["config"]
    assert st["config"]["reload_failures"] == 1, st["config"]
    assert st["config"]["last_reload_ok"] is False, st["config"]

    k.send_signal(signal.SIGHUP)
    wait_for(lambda: k.stats()["config"]["reload_failures"] == 2, 10,
             "the SIGHUP reload to be rejected")
    log = k.log_text()
    assert log.count("no_such_key") >= 2, k.log_tail()
    r = send(k.sock, b"".join(b"ri v%d\n" % i for i in range(100)))
    assert r == {"delivered": 100, "failed": 0, "rejected": 0}, r
    st = stats_quiet(k)
    assert st["batch"]["by_codec"]["lz4"]["batches"] == 0, st["batch"]
    assert st["batch"]["by_codec"]["none"]["batches"] > 0, st["batch"]

    # A valid file that moves the listener: logged as needing a restart;
    # the running listener stays where it was.
    moved = json.loads(json.dumps(good))
    moved["listeners"][0]["path"] = t.path("moved.sock")
    moved["producer"]["linger_ms"] = 7
    _write_conf(k, moved)
    assert k.control("reload") == "ok"
    st = k.stats()
    assert st["config"]["producer"]["linger_ms"] == 7, st["config"]
    assert st["config"]["last_reload_ok"] is True, st["config"]
    assert re.search(r"listeners.*restart", k.log_text()), k.log_tail()
    assert not os.path.exists(t.path("moved.sock"))
    r = send(good["listeners"][0]["path"], b"ri after\n")
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    assert len(t.consume(c, "ri", expected=101)) == 101
    assert k.stop() == 0


# --------------------------------------------------------------------------
# Who may write what

NOBODY = 65534

# Run under another uid (setpriv): connects, writes argv[2], half-closes,
# prints what came back as JSON.
CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
out = {"connected": False, "reply": None, "error": None}
try:
    s.connect(sys.argv[1])
    out["connected"] = True
    s.sendall(sys.argv[2].encode())
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    out["reply"] = buf.decode()
except OSError as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out))
"""


def _system_python():
    for p in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(p, os.X_OK):
            return p
    return None


def _run_as_nobody(path, data):
    """(pid, reply dict) of CLIENT run as uid/gid 65534."""
    py = _system_python()
    p = subprocess.Popen(
        ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
         "--clear-groups", py, "-c", CLIENT, path, data],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=tmo(60))
    assert p.returncode == 0, err.decode("utf-8", "replace")
    return p.pid, json.loads(out)


def _run_as_me(path, data):
    """What comes back from a connection writing data (closed at once by
    a listener that refuses us: nothing)."""
    s = connect(path)
    buf = b""
    try:
        s.sendall(data.encode())
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    return buf.decode()


def test_uid_gid_allow_lists(t):
    """allow_uids / allow_gids checked with SO_PEERCRED at accept: other
    peers are closed before anything is read, and counted; an allowed
    peer under another uid gets its peer.uid/gid/pid headers."""
    if os.getuid() != 0:
        raise Skip("needs root to run a client under another uid")
    if not shutil.which("setpriv") or not _system_python():
        raise Skip("needs setpriv and /usr/bin/python3")
    os.chmod(t.tmpdir, 0o755)   # let uid 65534 reach the sockets
    c = t.cluster(topics={"ug": 1})
    k = t.kproxyd(c, {"listeners": [
        {"path": "uid.sock", "format": "topic,value", "mode": "0666",
         "allow_uids": [0]},
        {"path": "gid.sock", "format": "topic,value", "mode": "0666",
         "allow_gids": [NOBODY], "peer_headers": True}]})
    uid_sock, gid_sock = k.listener_paths
    assert os.stat(uid_sock).st_mode & 0o777 == 0o666

    # Allowed: root on the uid listener, nobody on the gid listener.
    assert _run_as_me(uid_sock, "ug root\n") == \
        "delivered=1 failed=0 rejected=0\n"
    pid, out = _run_as_nobody(gid_sock, "ug nobody\n")
    assert out["reply"] == "delivered=1 failed=0 rejected=0\n", out
    s0 = k.stats()

    # Refused: nobody on the uid listener, root on the gid listener.
    _, out = _run_as_nobody(uid_sock, "ug refused1\n")
    assert out["connected"] and not out["reply"], out
    assert _run_as_me(gid_sock, "ug refused2\n") == ""
    s1 = stats_quiet(k)
    assert s1["clients_refused"] - s0["clients_refused"] == 2, s1
    assert s1["clients_refused_peer"] - s0["clients_refused_peer"] == 2, s1
    # Closed before any read: nothing of theirs was received.
    assert s1["received"] == s0["received"] == 2, (s0, s1)
    assert s1["delivered"] == 2, s1

    msgs = {m["value"]: m for m in t.consume(c, "ug", expected=2)}
    assert set(msgs) == {b"root", b"nobody"}, msgs
    assert msgs[b"root"]["headers"] == [], msgs[b"root"]
    assert dict(msgs[b"nobody"]["headers"]) == {
        "peer.uid": b"%d" % NOBODY, "peer.gid": b"%d" % NOBODY,
        "peer.pid": b"%d" % pid}, msgs[b"nobody"]
    assert k.stop() == 0


def test_topic_acl_and_peer_headers(t):
    """allow_topics (exact names and prefix*) rejects other lines, counted
    as topic_denied; peer_headers adds this process's uid, gid and pid to
    every record, after a json line's own headers."""
    c = t.cluster(topics={"orders": 1, "logs.app": 1, "logs.db": 1})
    k = t.kproxyd(c, {"listeners": [
        {"path": "acl.sock", "format": "topic,value",
         "allow_topics": ["orders", "logs.*"], "peer_headers": True},
        {"path": "aclj.sock", "format": "json",
         "allow_topics": ["orders"], "peer_headers": True}]})
    data = (b"orders o1\nlogs.app a1\nother x\nordersx x\nlog x\n"
            b"logs.db d1\norders o2\n")
    r = send(k.listener_paths[0], data)
    assert r == {"delivered": 4, "failed": 0, "rejected": 3}, r
    r = send(k.listener_paths[1],
             b'{"topic":"orders","value":"j1","headers":{"h":"v"}}\n'
             b'{"topic":"logs.app","value":"jx"}\n')
    assert r == {"delivered": 1, "failed": 0, "rejected": 1}, r
    st = k.stats()
    assert st["rejected_by"]["topic_denied"] == 4, st["rejected_by"]
    assert st["rejected"] == 4, st

    msgs = t.consume(c, ["orders", "logs.app", "logs.db"], expected=5)
    got = {(m["topic"], m["value"]) for m in msgs}
    assert got == {("orders", b"o1"), ("orders", b"o2"),
                   ("logs.app", b"a1"), ("logs.db", b"d1"),
                   ("orders", b"j1")}, got
    peer = [("peer.uid", b"%d" % os.getuid()),
            ("peer.gid", b"%d" % os.getgid()),
            ("peer.pid", b"%d" % os.getpid())]
    for m in msgs:
        if m["value"] == b"j1":
            assert m["headers"] == [("h", b"v")] + peer, m
        else:
            assert m["headers"] == peer, m
    assert k.stop() == 0


# --------------------------------------------------------------------------
# Metrics

PARSE = r"""
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "unit": f.unit,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"""


def _openmetrics_parse(text):
    """Families parsed by prometheus_client's strict OpenMetrics parser,
    with whichever python has it (Debian's python3-prometheus-client
    installs into the system python)."""
    tried = []
    for py in (sys.executable, "/usr/bin/python3"):
        if not os.access(py, os.X_OK) or py in tried:
            continue
        tried.append(py)
        probe = subprocess.run([py, "-c", "import prometheus_client"],
                               stderr=subprocess.DEVNULL)
        if probe.returncode != 0:
            continue
        p = subprocess.run([py, "-c", PARSE], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=60)
        assert p.returncode == 0, "OpenMetrics parser rejected the " \
            "exposition:\n%s" % p.stderr.decode("utf-8", "replace")[-2000:]
        return {f["name"]: f for f in json.loads(p.stdout)}
    raise Skip("prometheus_client not installed (Debian package "
               "python3-prometheus-client)")


def _value(fams, sample, **labels):
    name = sample
    for suffix in ("_total", "_bucket", "_count", "_sum", "_info"):
        if sample.endswith(suffix) and sample[:-len(suffix)] in fams:
            name = sample[:-len(suffix)]
    for s_name, s_labels, value in fams[name]["samples"]:
        if s_name == sample and s_labels == labels:
            return value
    raise AssertionError("no sample %s%r in %r" % (sample, labels,
                                                   fams[name]["samples"]))


def test_metrics_openmetrics(t):
    """`metrics` parses with prometheus_client's OpenMetrics parser (TYPE
    and HELP before samples, _total counters, histograms complete, no
    family twice, # EOF) and agrees with `stats`."""
    c = t.cluster(topics={"m1": 2, "m2": 1})
    k = t.kproxyd(c, {"producer": {"compression": "gzip"}})
    data = b"".join(b"m1 %s\n" % (b"value %d " % i * 20) for i in range(300))
    data += b"".join(b"m2 v%d\n" % i for i in range(20))
    data += b"bad/topic x\nnosep\n"
    r = send(k.sock, data)
    assert r == {"delivered": 320, "failed": 0, "rejected": 2}, r
    st = stats_quiet(k)
    text = "\n".join(k.control_lines("metrics", until="# EOF")) + "\n"
    assert text.endswith("\n# EOF\n")
    fams = _openmetrics_parse(text)

    assert not [f for f in fams.values() if f["type"] == "unknown"], \
        [f["name"] for f in fams.values() if f["type"] == "unknown"]
    for f in fams.values():
        assert f["name"].startswith(("kproxyd_", "process_")), f["name"]
        if f["type"] == "counter":
            assert all(s[0] in (f["name"] + "_total", f["name"] + "_created")
                       for s in f["samples"]), f
        for unit in ("seconds", "bytes", "ratio"):
            if f["name"].endswith("_" + unit):
                assert f["unit"] == unit, f
    want = {
        "kproxyd_received_messages": "counter",
        "kproxyd_delivered_messages": "counter",
        "kproxyd_failed_messages": "counter",
        "kproxyd_rejected_lines": "counter",
        "kproxyd_retries": "counter",
        "kproxyd_metadata_refreshes": "counter",
        "kproxyd_broker_reconnects": "counter",
        "kproxyd_request_latency_seconds": "histogram",
        "kproxyd_batch_messages": "histogram",
        "kproxyd_batch_size_bytes": "histogram",
        "kproxyd_batch_fill_ratio": "histogram",
        "kproxyd_compression_ratio": "gauge",
        "kproxyd_queued_bytes": "gauge",
        "kproxyd_inflight_bytes": "gauge",
        "kproxyd_backpressure_seconds": "counter",
        "kproxyd_clients": "gauge",
        "kproxyd_connections_refused": "counter",
        "kproxyd_partition_delivered_messages": "counter",
        "kproxyd_partition_queued_messages": "gauge",
        "kproxyd_topic_failed_messages": "counter",
        "kproxyd_config_reloads": "counter",
    }
    for name, typ in want.items():
        assert name in fams, "no %s in %s" % (name, sorted(fams))
        assert fams[name]["type"] == typ, fams[name]

    assert _value(fams, "kproxyd_delivered_messages_total") == \
        st["delivered"] == 320
    assert _value(fams, "kproxyd_rejected_lines_total",
                  reason="bad_topic") == st["rejected_by"]["bad_topic"] == 1
    per_part = {(s[1]["topic"], s[1]["partition"]): s[2] for s in
                fams["kproxyd_partition_delivered_messages"]["samples"]}
    assert per_part.get(("m2", "0")) == 20, per_part
    assert per_part[("m1", "0")] + per_part[("m1", "1")] == 300, per_part
    assert _value(fams, "kproxyd_batch_messages_count") == st["batches"]
    assert _value(fams, "kproxyd_batch_messages_sum") == 320
    assert _value(fams, "kproxyd_batch_messages_bucket", le="+Inf") == \
        st["batches"]
    # Repetitive values compress well with gzip.
    assert _value(fams, "kproxyd_compression_ratio") > 2.0
    assert _value(fams, "kproxyd_codec_batches_total", codec="gzip") == \
        st["batches"]
    # Produce latency per broker: a leader of m1/m2 answered requests.
    lat = [s for s in fams["kproxyd_request_latency_seconds"]["samples"]
           if s[0].endswith("_count") and s[1]["api"] == "produce"]
    assert lat and sum(s[2] for s in lat) >= 1, lat
    for s in lat:
        b = [x for x in st["brokers"] if str(x["id"]) == s[1]["broker"]]
        assert b, (s, st["brokers"])
    assert _value(fams, "kproxyd_queued_bytes") == 0
    assert _value(fams, "kproxyd_inflight_bytes") == 0
    assert k.stop() == 0


# --------------------------------------------------------------------------
# The unit file and installation

def _unit_keys(path):
    keys = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                k, _, v = line.partition("=")
                keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def test_unit_exposure(t):
    """kproxyd.service: Type=notify, reload, restart, a stop timeout above
    the default shutdown_timeout_ms, and `systemd-analyze security` exposure
    <= 2.0; kproxyd.socket listens where the default listener is."""
    unit = os.path.join(REPO, "kproxyd.service")
    keys = _unit_keys(unit)
    assert keys["Type"] == ["notify"], keys.get("Type")
    assert keys.get("ExecReload"), keys
    assert keys["Restart"] == ["on-failure"], keys.get("Restart")
    assert keys["RuntimeDirectory"] == ["kproxyd"], keys
    stop = keys["TimeoutStopSec"][0]
    assert stop.isdigit() and int(stop) > 30, stop   # shutdown_timeout 30 s
    assert any("@BINDIR@/kproxyd" in v for v in keys["ExecStart"]), keys
    sock = _unit_keys(os.path.join(REPO, "kproxyd.socket"))
    assert sock["ListenStream"] == ["/run/kproxyd/kproxyd.sock"], sock
    assert sock.get("FileDescriptorName"), sock

    sa = shutil.which("systemd-analyze")
    if not sa:
        raise Skip("systemd-analyze not installed: exposure not checked")
    path = t.path("kproxyd.service")
    with open(unit) as f:
        text = f.read().replace("@BINDIR@", "/usr/local/bin")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([sa, "security", "--offline=true", path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    out = p.stdout.decode("utf-8", "replace")
    m = re.search(r"Overall exposure level for kproxyd\.service: "
                  r"([0-9.]+)", out)
    if not m and "offline" in out and "nrecognized" in out:
        raise Skip("systemd-analyze has no --offline: %s" % out.strip())
    assert m, out
    exposure = float(m.group(1))
    print("exposure %.1f" % exposure)
    assert exposure <= 2.0, out


def test_readme_operations(t):
    """The README's operations section walks from install to a Prometheus
    scrape."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    m = re.search(r"^## Operations\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, "README has no '## Operations' section"
    ops = m.group(1)
    for needle in ("make install", "systemctl enable --now kproxyd",
                   "kproxyd.socket", "metrics", "scrape"):
        assert needle in ops, "README operations: no %r" % needle


# --------------------------------------------------------------------------
# flush

def test_flush_counts_what_it_waited_for(t):
    """`flush` replies with the fates of the messages it waited for: the
    ones read before the command and not yet settled count; those settled
    before it, and those written after it, do not."""
    c = t.cluster(topics={"now": 1, "later": 1})
    c.cmd("leader later 0 -1")  # its lines are read and wait for a leader
    k = t.kproxyd(c)
    assert send(k.sock, b"now early\n")["delivered"] == 1   # settled before
    held = connect(k.sock)
    fs = None
    try:
        held.sendall(b"".join(b"later h%d\n" % i for i in range(5)))
        wait_for(lambda: k.stats()["received"] == 6, 10, "the held lines")
        fs = k._control_sock(60)
        fs.sendall(b"flush\n")
        # The loop has read `flush` once a later control connection is
        # answered (each event of one loop iteration is handled before the
        # next poll, and the later connection needs a later poll).
        k.stats()
        r = send(k.sock, b"".join(b"now after%d\n" % i for i in range(7)))
        assert r == {"delivered": 7, "failed": 0, "rejected": 0}, r
        ready, _, _ = select.select([fs], [], [], 0)
        assert not ready, "flush replied before the held lines settled"
        c.cmd("leader later 0 1")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = fs.recv(100)
            assert chunk, reply
            reply += chunk
        assert reply == b"ok delivered=5 failed=0\n", reply
        held.shutdown(socket.SHUT_WR)
        assert read_summary(held) == {"delivered": 5, "failed": 0,
                                      "rejected": 0}
    finally:
        held.close()
        if fs:
            fs.close()
    assert k.stats()["delivered"] == 13
    assert k.stop() == 0
