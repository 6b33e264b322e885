#!/usr/bin/env python3
"""measure_net.py - before/after figures of issue 17's red-team cases that
the tests cannot take from an older binary in one piece (standard library
only; not a test). Usage, from the repository root:

    python3 tests/it/measure_net.py KPROXYD hostile sparse_partition
    python3 tests/it/measure_net.py KPROXYD hostile many_brokers
    python3 tests/it/measure_net.py KPROXYD jitter

hostile: ONE hostile Metadata answer (fake_kafka.hostile_metadata, count
1), then good ones: how long the first message of a new topic and the next
message of a healthy topic take, RSS before/after, CPU during and over
the 5 s after. jitter: two daemons started alike against a dead port for
8 s: their connection attempts and the gaps between them.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kptest  # noqa: E402
from fake_kafka import FakeKafka  # noqa: E402
from netkit import Sampler, proc_status  # noqa: E402


def hostile(binary, kind):
    tmp = tempfile.mkdtemp(prefix="kpmeasure-")
    fk = FakeKafka("modern", {"good": 1}, keep_frames=False).start()
    k = kptest.Kproxyd(binary, fk, {"producer": {"linger_ms": 0},
                                    "log_level": "info"}, tmp)
    try:
        assert kptest.send(k.sock, b"good warm\n")["delivered"] == 1
        base = proc_status(k.proc.pid)["VmRSS"]
        fk.add_topic("late", 2)
        fk.hostile_metadata(kind, count=1)
        s = Sampler(k.proc.pid).start()
        t0 = time.monotonic()
        r = kptest.send(k.sock, b"late l0\n", timeout=300)
        t_late = time.monotonic() - t0
        t1 = time.monotonic()
        kptest.send(k.sock, b"good g1\n", timeout=300)
        t_good = time.monotonic() - t1
        s.stop()
        idle = Sampler(k.proc.pid).start()
        time.sleep(5)
        idle.stop()
        st = proc_status(k.proc.pid)
        print("%s: new topic %r after %.2f s; healthy topic %.3f s; RSS "
              "%.1f -> %.1f MiB (VmHWM %.1f); CPU %.0f%% during, %.0f%% "
              "in the 5 s after"
              % (kind, r, t_late, t_good, base / 2**20, st["VmRSS"] / 2**20,
                 st["VmHWM"] / 2**20, s.cpu * 100, idle.cpu * 100))
    finally:
        k.kill()
        fk.stop()


def jitter(binary):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    tmp = tempfile.mkdtemp(prefix="kpmeasure-")
    procs = []
    for i in (1, 2):
        conf = os.path.join(tmp, "k%d.json" % i)
        with open(conf, "w") as f:
            f.write('{"brokers": ["127.0.0.1:%d"], "listeners": [{"path": '
                    '"%s/k%d.sock"}], "control": null, "log_level": "debug"}'
                    % (port, tmp, i))
        procs.append(subprocess.Popen(
            [binary, "-c", conf],
            stderr=open(os.path.join(tmp, "k%d.log" % i), "w")))
    time.sleep(8)
    for p in procs:
        p.send_signal(signal.SIGTERM)
        p.wait()
    for i in (1, 2):
        ts = [datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
              for line in open(os.path.join(tmp, "k%d.log" % i))
              if re.search(r"-> connecting", line)]
        print("run %d: %d attempts in 8 s, gaps (ms) %s" % (
            i, len(ts), [int((b - a) * 1000) for a, b in zip(ts, ts[1:])]))


if __name__ == "__main__":
    if sys.argv[2] == "hostile":
        hostile(os.path.abspath(sys.argv[1]), sys.argv[3])
    else:
        jitter(os.path.abspath(sys.argv[1]))
