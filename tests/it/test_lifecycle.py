"""Start-up, configuration check and shutdown (SPEC "Command line",
"Delivery semantics": SIGTERM / SIGINT)."""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

from kptest import (SANITIZER_PATTERNS, check_delivery, connect,
                    read_summary, send, tmo, wait_for)
from test_basic import ident


def _run(t, args, timeout=30):
    """kproxyd with args, to completion; no sanitizer report allowed."""
    p = subprocess.run([t.kproxyd_binary] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=tmo(timeout),
                       env=dict(os.environ,
                                ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
                                UBSAN_OPTIONS="print_stacktrace=1:"
                                              "halt_on_error=1"))
    err = p.stderr.decode("utf-8", "replace")
    for pat in SANITIZER_PATTERNS:
        assert pat not in err, "kproxyd %s:\n%s" % (" ".join(args), err)
    return p


def _write_conf(t, name, conf):
    path = t.path(name)
    with open(path, "w") as f:
        json.dump(conf, f)
    return path


def _dl_value(d):
    """A dead-letter line's value: `value` or `value_base64` (json format)."""
    if "value_base64" in d:
        return base64.b64decode(d["value_base64"])
    return d["value"].encode()


def test_idle_start_stop(t):
    c = t.cluster(topics={"x": 1})
    k = t.kproxyd(c)
    k.stats()
    assert k.stop(signal.SIGTERM) == 0


def test_sigint_stops(t):
    c = t.cluster(topics={"x": 1})
    k = t.kproxyd(c)
    assert send(k.sock, b"x one\n") == {"delivered": 1, "failed": 0,
                                        "rejected": 0}
    assert k.stop(signal.SIGINT) == 0


def test_sigterm_delivers_what_was_written(t):
    """SIGTERM right after clients wrote (without waiting for their
    summaries): every line already written is delivered, exit 0. A long
    linger (20 s) keeps batches open, so shutdown has to send them at
    once."""
    c = t.cluster(topics={"sd": 3})
    k = t.kproxyd(c, {"producer": {"linger_ms": 20000}})
    clients, lines = 3, 700
    socks = [connect(k.sock) for _ in range(clients)]
    expected = {}
    try:
        # One line each first, so every connection is surely accepted
        # before the signal (a connection still in the listen backlog is
        # not "already written" to kproxyd).
        for ci, s in enumerate(socks):
            s.sendall(b"sd c%d s0\n" % ci)
            expected[(ci, 0)] = ("sd", None, b"c%d s0" % ci)
        wait_for(lambda: k.stats()["received"] >= clients, 15,
                 "the first line of each client")
        for ci, s in enumerate(socks):
            data = []
            for seq in range(1, lines):
                value = b"c%d s%d" % (ci, seq)
                data.append(b"sd " + value + b"\n")
                expected[(ci, seq)] = ("sd", None, value)
            s.sendall(b"".join(data))
        # Client 0 half-closes, client 1 closes both ways, client 2 keeps
        # its connection open.
        socks[0].shutdown(socket.SHUT_WR)
        socks[1].close()
        t_sig = time.monotonic()
        k.send_signal(signal.SIGTERM)
        rc = k.wait(30)
        elapsed = time.monotonic() - t_sig
    finally:
        for s in socks:
            s.close()
    assert rc == 0, k.log_tail()
    k.check_log()
    # Open batches are sent at once, not after their 20 s linger.
    assert elapsed < tmo(5), elapsed
    msgs = t.consume(c, "sd", expected=len(expected))
    check_delivery(msgs, expected, ident, c.partitions)


def test_sigterm_with_broker_down_exits_in_time(t):
    """With no broker reachable, SIGTERM waits at most shutdown_timeout_ms,
    then fails what is left and exits 3 (SPEC: a shutdown that had to fail
    messages)."""
    c = t.cluster(brokers=1, topics={"dn": 1})
    k = t.kproxyd(c, {"shutdown_timeout_ms": 1000,
                      "producer": {"delivery_timeout_ms": 60000}},
                  dead_letter=True)
    assert send(k.sock, b"dn known\n")["delivered"] == 1  # its metadata
    c.cmd("down 1")
    s = connect(k.sock)
    try:
        s.sendall(b"dn stuck1\ndn stuck2\n")
        wait_for(lambda: k.stats()["received"] >= 2, 15, "2 lines read")
        t0 = time.monotonic()
        k.send_signal(signal.SIGTERM)
        rc = k.wait(30)
    finally:
        s.close()
    assert rc == 3, (rc, k.log_tail())
    k.check_log()
    assert time.monotonic() - t0 < tmo(10)
    # What is left is dead-lettered with error "shutdown".
    dl = k.dead_letter_lines()
    assert sorted(_dl_value(d) for d in dl) == [b"stuck1", b"stuck2"], dl
    for d in dl:
        assert d.get("error") == "shutdown" and d.get("topic") == "dn", d
        assert "failed_at" in d, d


def test_config_check_prints_effective_config(t):
    """-t: exit 0, the effective configuration with defaults as JSON."""
    conf = {"brokers": ["127.0.0.1:9092"],
            "listeners": [{"path": t.path("l.sock")}],
            "control": t.path("c.sock")}
    path = _write_conf(t, "check.json", conf)
    p = _run(t, ["-t", "-c", path, "-X", "producer.linger_ms=20"])
    assert p.returncode == 0, p.stderr
    eff = json.loads(p.stdout)
    assert eff["brokers"] == ["127.0.0.1:9092"], eff
    assert eff["client_id"] == "kproxyd", eff
    assert eff["buffer_bytes"] == 268435456, eff
    assert eff["shutdown_timeout_ms"] == 30000, eff
    assert eff["max_clients"] == 10000, eff
    assert eff["auto_create_topics"] is False, eff
    assert eff["log_level"] == "info", eff
    assert eff["listeners"][0]["path"] == t.path("l.sock"), eff
    assert eff["listeners"][0]["format"] == "topic,value", eff
    assert eff["listeners"][0]["separator"] == " ", eff
    prod = eff["producer"]
    assert prod["linger_ms"] == 20, prod             # from -X
    assert prod["batch_bytes"] == 1048576, prod
    assert prod["batch_messages"] == 10000, prod
    assert prod["compression"] == "none", prod
    assert prod["partitioner"] == "murmur2", prod
    assert prod["max_in_flight"] == 5, prod
    assert prod["message_max_bytes"] == 1048576, prod
    assert prod["idempotence"] is True, prod
    # -t does not start anything.
    assert not os.path.exists(t.path("l.sock"))


def test_config_errors_listed(t):
    """-t on a bad file: exit 1 and every problem named by its key path."""
    conf = {"brokers": ["127.0.0.1:9092"],
            "bogus_key": 1,
            "max_clients": "many",
            "producer": {"acks": 1, "idempotence": True},
            "listeners": [{"path": t.path("l.sock"), "format": "nonsense"}]}
    path = _write_conf(t, "bad.json", conf)
    p = _run(t, ["-t", "-c", path])
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    for key in ("bogus_key", "max_clients", "idempotence", "format"):
        assert key in out, "%r not named in:\n%s" % (key, out)


def test_config_syntax_error_position(t):
    path = t.path("syntax.json")
    with open(path, "w") as f:
        f.write('{\n  "brokers": ["127.0.0.1:9092"],\n  "control": ,\n}\n')
    p = _run(t, ["-t", "-c", path])
    assert p.returncode == 1, p
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    # The line of the error, however it is worded.
    assert re.search(r"(line 3\b|:3:|line: 3\b)", out), out


def test_bad_config_exits_1(t):
    c = t.cluster(topics={"x": 1})
    k = t.kproxyd(c, {"listeners": [{"path": "bad.sock",
                                     "format": "nonsense"}]}, wait=False)
    assert k.wait(30) == 1, k.log_tail()
    k.check_log()


def test_version(t):
    p = _run(t, ["-V"])
    assert p.returncode == 0, p
    assert p.stdout.strip() or p.stderr.strip()


def test_stale_socket_replaced_live_one_refused(t):
    c = t.cluster(topics={"so": 1})
    stale = t.path("stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()                      # a socket file nobody listens on
    k = t.kproxyd(c, {"listeners": [{"path": stale}]})
    assert send(k.sock, b"so v\n")["delivered"] == 1
    # A second daemon on the same (live) listener path is a start-up error.
    k2 = t.kproxyd(c, {"listeners": [{"path": stale}]}, wait=False)
    assert k2.wait(30) == 1, k2.log_tail()
    # ... and did not take the first one's socket away.
    assert send(k.sock, b"so w\n")["delivered"] == 1
    assert k.stop() == 0


def test_sigterm_reads_writers_to_their_eof(t):
    """SIGTERM while writers are still sending: kproxyd reads on until
    each writer's EOF, so every line written before the signal — and the
    ones written after it, up to the writer's half-close — is delivered,
    and each summary counts all of them (before: lines written after the
    drain's snapshot were left unread, and the summary, sent before the
    writer's own EOF, counted fewer than it had sent)."""
    c = t.cluster(topics={"sw": 3})
    k = t.kproxyd(c, {"producer": {"linger_ms": 50}})
    writers, chunks, per_chunk = 3, 30, 100
    results = [None] * writers
    signalled = threading.Event()
    written_before = [0] * writers

    def writer(ci):
        s = connect(k.sock)
        sent = 0
        for chunk in range(chunks):
            data = b"".join(b"sw c%d s%d\n" % (ci, sent + i)
                            for i in range(per_chunk))
            s.sendall(data)
            sent += per_chunk
            if not signalled.is_set():
                written_before[ci] = sent
            time.sleep(0.01)
        s.shutdown(socket.SHUT_WR)
        results[ci] = (sent, read_summary(s))
        s.close()

    threads = [threading.Thread(target=writer, args=(ci,))
               for ci in range(writers)]
    for th in threads:
        th.start()
    wait_for(lambda: k.stats()["received"] >= writers * per_chunk * 3,
             tmo(15), "writers under way")
    signalled.set()
    k.send_signal(signal.SIGTERM)
    for th in threads:
        th.join(tmo(60))
    assert k.wait(tmo(30)) == 0, k.log_tail()
    for ci, (sent, summary) in enumerate(results):
        assert summary == {"delivered": sent, "failed": 0, "rejected": 0}, \
            (ci, sent, written_before[ci], summary)
    expected = {(ci, s): ("sw", None, b"c%d s%d" % (ci, s))
                for ci in range(writers) for s in range(chunks * per_chunk)}
    msgs = t.consume(c, "sw", expected=len(expected))
    check_delivery(msgs, expected, ident, c.partitions)
