#!/usr/bin/env python3
"""bench.py - `make bench`: kproxyd beside librdkafka on the same mock cluster.

    python3 tests/bench/bench.py --kproxyd build/kproxyd --tools build/tools
        [--messages 1000000] [--size 100] [--codec none,lz4] [--acks 1,all]
        [--clients 1] [--repeat 3] [--rate 10000] [--latency-seconds 3]
        [--seed 1] [--linger-ms 5] [--json FILE]

What is measured (every process runs alone, one after the other: the machine
this is written for has two cores, and the mock cluster needs one of them):

* Input: one file of N lines `bench <payload>` (kproxyd's `topic,value`
  format), payload S bytes of log-like text (timestamp, level, counters,
  words) drawn from --seed, so compression has realistic work to do. It is
  cached under build/bench/.

* Throughput, for each configuration (--codec x --acks, see pairs()):
  - kproxyd: a fresh mock cluster (kp_mock, 3 brokers, topic `bench` with 6
    partitions) and a fresh kproxyd. One warm-up line is sent and confirmed
    first (metadata, connections, producer id). The clock runs from the
    first byte written to kproxyd's socket until the last half-close
    summary `delivered=N failed=F rejected=R` arrives; with --clients K the
    file is split at line boundaries across K connections written
    concurrently. CPU is utime+stime from /proc/PID/stat read before and
    after the timed part; peak RSS is VmHWM from /proc/PID/status read just
    before SIGTERM. kproxyd must then exit 0.
  - librdkafka: a fresh mock cluster and rdk_bench (tests/bench/rdk_bench.c)
    producing the same payloads from the same file with the same settings
    (linger.ms, acks, idempotence, compression; librdkafka's defaults
    otherwise), also after one warm-up message; it reports its own elapsed
    time, getrusage CPU of the timed part, and ru_maxrss.
  msgs/s = N / elapsed, MB/s = N*S / elapsed / 1e6 (payload bytes).

* Memory: kproxyd with buffer_bytes = 32 MB (acks=1, no compression): its
  peak RSS (VmHWM).

* Latency at --rate msgs/s for --latency-seconds, with the defaults
  acks=all + idempotence. Method (kproxyd has no per-message ack a client
  can see other than the half-close summary): every millisecond a burst of
  rate/1000 lines is written in one write() to its own connection (taken
  from a pool connected beforehand, so connect/accept are not timed), which
  is then half-closed; the latency of every line of the burst is the time
  from that write until the summary line arrives, i.e. until kproxyd knows
  the last of them is acknowledged. That is exact for the burst's
  last-acknowledged line and an upper bound for the others. Percentiles are
  over lines (each burst weighs its line count). librdkafka is measured at
  the same rate and burst shape by rdk_bench -r: produce() -> delivery
  report, per message, reports served at once by a thread blocked in
  rd_kafka_poll().

Each measurement is repeated --repeat times; the table shows medians. The
targets are printed as PASS/MISS; a miss does not fail the run. The exit
status is 1 if a message was lost (delivered != sent, or failed/rejected
!= 0) or a process failed (start-up, crash, non-zero exit), 2 on a usage
error, 0 otherwise. Every process is started in its own process group and
killed on the way out, whatever happened.
"""

import argparse
import collections
import ctypes
import gc
import json
import os
import platform
import random
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOPIC = "bench"
PARTITIONS = 6
BROKERS = 3
MEM_BUFFER = 32 * 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets from issue 7.
TARGET_THR_NONE = 2.0
TARGET_THR_LZ4 = 1.5
TARGET_CPU = 0.5
TARGET_RSS_MB = 32.0
TARGET_LAT_SLACK_MS = 2.0


class BenchError(Exception):
    """A lost message or a failed process: the run exits 1."""


# --------------------------------------------------------------------------
# Processes: each in its own group, all killed on the way out.

_procs = []


def spawn(argv, **kw):
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    _procs.append(p)
    return p


def reap(p, timeout):
    """Waits for p with os.wait4; returns (exit code, rusage) or raises
    subprocess.TimeoutExpired. The Popen object is marked as reaped."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            rc = os.waitstatus_to_exitcode(status)
            p.returncode = rc
            return rc, ru
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(p.args, timeout)
        time.sleep(0.005)


def kill_group(p):
    if p.returncode is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        reap(p, 5)
    except (subprocess.TimeoutExpired, ChildProcessError):
        pass


def kill_all():
    while _procs:
        kill_group(_procs.pop())


def _on_signal(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


# --------------------------------------------------------------------------
# Input file

_LEVELS = ["INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"]
_WORDS = ("request served user session cache miss hit order payment shipped "
          "retry timeout upstream downstream queue worker commit rollback "
          "token refresh login logout invoice created updated deleted "
          "customer account balance region eu-west us-east ap-south "
          "latency backend frontend gateway auth ok failed slow").split()
_PATHS = ["/api/v1/orders", "/api/v1/users", "/api/v2/cart", "/health",
          "/api/v1/payments", "/static/app.js", "/api/v2/search",
          "/api/v1/inventory"]


def gen_input(path, n, size, seed):
    """Writes n lines `bench PAYLOAD\\n`, each payload exactly size bytes of
    deterministic log-like text."""
    rng = random.Random(seed)
    # A pool of word tails, so lines vary without a rng call per word.
    tails = []
    for _ in range(4096):
        words = []
        length = 0
        while length < size + 16:
            w = rng.choice(_WORDS)
            words.append(w)
            length += len(w) + 1
        tails.append(" ".join(words))
    users = ["user%04d" % rng.randrange(10000) for _ in range(512)]
    base_ms = 1767225600000  # 2026-01-01T00:00:00Z
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        out = []
        t = base_ms
        for i in range(n):
            bits = rng.getrandbits(48)
            t += bits & 7
            sec, ms = divmod(t, 1000)
            tm = time.gmtime(sec) if i % 1000 == 0 or i == 0 else tm
            # The time string changes every line; recompute cheaply.
            ts = "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (
                tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour,
                (sec // 60) % 60, sec % 60, ms)
            line = "%s %s [w-%d] seq=%d %s %s st=%d %dms %s" % (
                ts, _LEVELS[(bits >> 3) & 7], (bits >> 6) & 7, i,
                users[(bits >> 9) & 511], _PATHS[(bits >> 18) & 7],
                200 if (bits >> 21) & 15 else 500, (bits >> 25) & 255,
                tails[(bits >> 33) & 4095])
            if len(line) < size:
                line = (line + " " + tails[(bits >> 12) & 4095]) * (
                    size // len(line) + 1)
            out.append("bench ")
            out.append(line[:size])
            out.append("\n")
            if len(out) >= 30000:
                f.write("".join(out))
                out = []
        f.write("".join(out))
    os.replace(tmp, path)


def input_file(args):
    d = os.path.join("build", "bench")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "lines-%d-%d-%d.txt" % (args.messages, args.size,
                                                   args.seed))
    want = args.messages * (len(TOPIC) + 2 + args.size)
    if not (os.path.exists(path) and os.path.getsize(path) == want):
        t = time.monotonic()
        gen_input(path, args.messages, args.size, args.seed)
        print("input: wrote %s in %.1f s" % (path, time.monotonic() - t),
              flush=True)
    return path


# --------------------------------------------------------------------------
# Mock cluster

class Mock:
    def __init__(self, tools, tmpdir):
        self.log = open(os.path.join(tmpdir, "kp_mock.log"), "ab")
        self.proc = spawn([os.path.join(tools, "kp_mock"), "-b", str(BROKERS),
                           "-t", "%s:%d" % (TOPIC, PARTITIONS)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=self.log)
        self.bootstrap = None
        deadline = time.monotonic() + 15
        buf = b""
        while b"READY\n" not in buf:
            left = deadline - time.monotonic()
            sel = selectors.DefaultSelector()
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = sel.select(max(left, 0))
            sel.close()
            if not ready:
                raise BenchError("kp_mock did not start within 15 s")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise BenchError("kp_mock exited during start-up")
            buf += chunk
        for line in buf.decode().splitlines():
            if line.startswith("BOOTSTRAP "):
                self.bootstrap = line.split(" ", 1)[1].strip()
        if not self.bootstrap:
            raise BenchError("kp_mock printed no BOOTSTRAP line")
        self.rusage = None

    def stop(self):
        """Closes stdin (kp_mock exits at EOF); returns its CPU seconds."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc, ru = reap(self.proc, 10)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            raise BenchError("kp_mock did not exit at stdin EOF")
        finally:
            self.proc.stdout.close()
            self.log.close()
        if rc != 0:
            raise BenchError("kp_mock exited with %d" % rc)
        return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------
# kproxyd

def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # utime, stime: fields 14 and 15 of stat(5), i.e. 12 and 13 after comm.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise BenchError("no VmHWM for pid %d" % pid)


class Kproxyd:
    _seq = 0

    def __init__(self, binary, mock, tmpdir, producer, buffer_bytes=None):
        Kproxyd._seq += 1
        name = "k%d" % Kproxyd._seq
        self.sock = os.path.join(tmpdir, name + ".sock")
        conf = {
            "brokers": mock.bootstrap.split(","),
            "listeners": [{"path": self.sock, "format": "topic,value"}],
            "control": None,
            "log_level": "info",
            "shutdown_timeout_ms": 10000,
            "producer": producer,
        }
        if buffer_bytes:
            conf["buffer_bytes"] = buffer_bytes
        self.conf_path = os.path.join(tmpdir, name + ".json")
        with open(self.conf_path, "w") as f:
            json.dump(conf, f)
        self.log_path = os.path.join(tmpdir, name + ".log")
        env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC"):
            env.pop(k, None)
        with open(self.log_path, "ab") as log:
            self.proc = spawn([binary, "-c", self.conf_path],
                              stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=log, env=env)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise BenchError("kproxyd exited with %s at start-up:\n%s"
                                 % (self.proc.returncode, self.log_tail()))
            try:
                s = connect(self.sock)
                s.close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError("kproxyd never listened:\n" +
                                 self.log_tail())
            time.sleep(0.01)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchError("kproxyd died (exit %s):\n%s"
                             % (self.proc.returncode, self.log_tail()))

    def stop(self):
        """SIGTERM; returns the peak RSS (kB) read just before it."""
        self.check_alive()
        hwm = proc_hwm_kb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc, _ = reap(self.proc, 20)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            raise BenchError("kproxyd did not exit after SIGTERM:\n" +
                             self.log_tail())
        if rc != 0:
            raise BenchError("kproxyd exited with %d:\n%s"
                             % (rc, self.log_tail()))
        return hwm


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(path)
    except OSError:
        s.close()
        raise
    return s


def parse_summary(data):
    """`delivered=N failed=F rejected=R\\n` -> dict, or raise."""
    try:
        text = data.decode()
        assert text.endswith("\n") and text.count("\n") == 1
        d = dict(kv.split("=") for kv in text.split())
        return {k: int(d[k]) for k in ("delivered", "failed", "rejected")}
    except (UnicodeDecodeError, AssertionError, ValueError, KeyError):
        raise BenchError("bad summary from kproxyd: %r" % data)


def read_summary(s, timeout):
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            raise BenchError("no summary from kproxyd within %d s" % timeout)
        if not chunk:
            break
        data += chunk
    return parse_summary(data)


def check_counts(what, got, sent):
    if got["delivered"] != sent or got["failed"] or got["rejected"]:
        raise BenchError("%s: sent %d lines, kproxyd says %s: messages lost"
                         % (what, sent, got))


def split_lines(data, k):
    """k slices of data (memoryview), cut after a newline."""
    parts = []
    start = 0
    for i in range(1, k):
        cut = data.find(b"\n", len(data) * i // k)
        cut = len(data) if cut < 0 else cut + 1
        parts.append((start, max(cut, start)))
        start = max(cut, start)
    parts.append((start, len(data)))
    return parts


def producer_conf(args, codec, acks):
    return {"acks": "all" if acks == "all" else int(acks),
            "idempotence": acks == "all",
            "compression": codec,
            "linger_ms": args.linger_ms}


def run_kproxyd_thr(args, tmpdir, data, codec, acks, buffer_bytes=None):
    mock = Mock(args.tools, tmpdir)
    try:
        k = Kproxyd(args.kproxyd, mock, tmpdir,
                    producer_conf(args, codec, acks), buffer_bytes)
        first = data[:data.find(b"\n") + 1]
        s = connect(k.sock)
        s.sendall(first)
        s.shutdown(socket.SHUT_WR)
        check_counts("warm-up", read_summary(s, 30), 1)
        s.close()

        parts = split_lines(data, args.clients)
        socks = [connect(k.sock) for _ in parts]
        results = [None] * len(parts)
        ends = [0.0] * len(parts)
        errors = []
        barrier = threading.Barrier(len(parts) + 1)
        mv = memoryview(data)

        def writer(i):
            try:
                barrier.wait()
                sk = socks[i]
                # A kproxyd that stops reading for this long is stuck.
                sk.settimeout(120)
                a, b = parts[i]
                sk.sendall(mv[a:b])
                sk.shutdown(socket.SHUT_WR)
                results[i] = read_summary(sk, 300)
                ends[i] = time.monotonic()
            except Exception as e:  # reported by the main thread
                errors.append(e)
            finally:
                socks[i].close()

        threads = [threading.Thread(target=writer, args=(i,))
                   for i in range(len(parts))]
        for t in threads:
            t.start()
        cpu0 = proc_cpu_s(k.proc.pid)
        t0 = time.monotonic()
        barrier.wait()
        for t in threads:
            t.join()
        cpu1 = proc_cpu_s(k.proc.pid)
        if errors:
            time.sleep(0.1)
            k.check_alive()  # a dead kproxyd explains a broken pipe
            raise errors[0] if isinstance(errors[0], BenchError) else \
                BenchError("writer: %r" % errors[0])
        elapsed = max(ends) - t0
        total = {"delivered": 0, "failed": 0, "rejected": 0}
        for r in results:
            for key in total:
                total[key] += r[key]
        check_counts("kproxyd %s acks=%s" % (codec, acks), total,
                     args.messages)
        hwm = k.stop()
    finally:
        mock_cpu = None
        try:
            mock_cpu = mock.stop()
        finally:
            kill_all()
    return {"elapsed_s": elapsed, "cpu_s": cpu1 - cpu0, "rss_kb": hwm,
            "mock_cpu_s": mock_cpu}


def run_kproxyd_lat(args, tmpdir, data):
    """Paced bursts on their own connections; see the module comment."""
    mock = Mock(args.tools, tmpdir)
    try:
        k = Kproxyd(args.kproxyd, mock, tmpdir,
                    producer_conf(args, "none", "all"))
        want = int(args.rate * args.latency_seconds)
        end = -1
        for _ in range(want):
            end = data.find(b"\n", end + 1)
            if end < 0:
                break
        lines = (data[:end] if end >= 0 else data.rstrip(b"\n")).split(b"\n")
        total = min(want, len(lines))
        s = connect(k.sock)
        s.sendall(lines[0] + b"\n")
        s.shutdown(socket.SHUT_WR)
        check_counts("warm-up", read_summary(s, 30), 1)
        s.close()

        pool = collections.deque(connect(k.sock) for _ in range(64))
        for c in pool:
            c.setblocking(False)
        time.sleep(0.1)  # let kproxyd accept the pool
        sel = selectors.DefaultSelector()
        lat = []  # (seconds, lines)
        per_ms = args.rate / 1000.0
        due = 0.0
        i = 0
        pending = 0
        # A collection pausing the paced loop would show as latency.
        gc.disable()
        t0 = time.monotonic()
        tick = t0
        while i < total or pending:
            now = time.monotonic()
            if i < total and now >= tick:
                due += per_ms
                n = min(int(due) - i, total - i) if due >= i + 1 else 0
                if n > 0:
                    c = pool.popleft()
                    c.setblocking(True)
                    burst = b"\n".join(lines[i:i + n]) + b"\n"
                    sent_at = time.monotonic()
                    c.sendall(burst)
                    c.shutdown(socket.SHUT_WR)
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ,
                                 [sent_at, n, b"", None])
                    pending += 1
                    i += n
                    nc = connect(k.sock)
                    nc.setblocking(False)
                    pool.append(nc)
                tick += 0.001
                continue
            if i < total:
                timeout = max(tick - time.monotonic(), 0)
            else:
                timeout = 30
                if now - t0 > args.latency_seconds + 60:
                    raise BenchError("latency: summaries missing")
            for key, _ in sel.select(timeout):
                st = key.data
                try:
                    chunk = key.fileobj.recv(4096)
                except BlockingIOError:
                    continue
                if chunk:
                    # The summary line is the acknowledgement; the close
                    # that follows it is not timed.
                    if st[3] is None and b"\n" in chunk:
                        st[3] = time.monotonic()
                    st[2] += chunk
                    continue
                if st[3] is None:
                    raise BenchError("latency: connection closed without "
                                     "a summary")
                lat.append((st[3] - st[0], st[1]))
                check_counts("latency burst", parse_summary(st[2]), st[1])
                sel.unregister(key.fileobj)
                key.fileobj.close()
                pending -= 1
        gc.enable()
        sel.close()
        for c in pool:
            c.close()
        k.stop()
    finally:
        gc.enable()
        try:
            mock.stop()
        finally:
            kill_all()
    return weighted_pcts(lat, total)


def weighted_pcts(lat, total):
    lat.sort()
    count = sum(n for _, n in lat)
    if count != total:
        raise BenchError("latency: %d of %d lines confirmed" % (count, total))

    def pct(p):
        rank = (count - 1) * p // 100
        acc = 0
        for v, n in lat:
            acc += n
            if acc > rank:
                return v * 1000
        return lat[-1][0] * 1000

    return {"p50_ms": pct(50), "p99_ms": pct(99), "max_ms": lat[-1][0] * 1000,
            "messages": count}


# --------------------------------------------------------------------------
# librdkafka

def run_rdk(args, tmpdir, path, codec, acks, rate=None):
    mock = Mock(args.tools, tmpdir)
    try:
        argv = [os.path.join(args.tools, "rdk_bench"), "-b", mock.bootstrap,
                "-f", path, "-t", TOPIC, "-a", acks,
                "-i", "1" if acks == "all" else "0", "-z", codec,
                "-l", str(args.linger_ms)]
        if rate:
            argv += ["-r", str(rate), "-d", str(args.latency_seconds)]
        errp = os.path.join(tmpdir, "rdk_bench.err")
        with open(errp, "wb") as err:
            p = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=err)
        try:
            out, _ = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            raise BenchError("rdk_bench did not finish within 300 s")
        with open(errp, "rb") as f:
            errtext = f.read().decode("utf-8", "replace")
        if p.returncode != 0:
            raise BenchError("rdk_bench exited with %d:\n%s"
                             % (p.returncode, errtext))
        try:
            r = json.loads(out)
        except ValueError:
            raise BenchError("rdk_bench printed %r\n%s" % (out, errtext))
        want = r["messages"] if rate else args.messages
        if r["messages"] != want or r["delivered"] != want or r["failed"]:
            raise BenchError("rdk_bench %s acks=%s: %s: messages lost\n%s"
                             % (codec, acks, r, errtext))
    finally:
        mock_cpu = None
        try:
            mock_cpu = mock.stop()
        finally:
            kill_all()
    if rate:
        return {"p50_ms": r["lat_p50_ms"], "p99_ms": r["lat_p99_ms"],
                "max_ms": r["lat_max_ms"], "messages": r["messages"]}
    return {"elapsed_s": r["elapsed_s"],
            "cpu_s": r["cpu_user_s"] + r["cpu_sys_s"],
            "rss_kb": r["maxrss_kb"], "mock_cpu_s": mock_cpu,
            "version": r["version"]}


# --------------------------------------------------------------------------
# Report

def median_of(runs):
    out = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        out[key] = statistics.median(vals) if vals else runs[0][key]
    return out


def machine_info(args):
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        lib = ctypes.CDLL("librdkafka.so.1")
        lib.rd_kafka_version_str.restype = ctypes.c_char_p
        rdk = lib.rd_kafka_version_str().decode()
    except OSError:
        rdk = "?"
    try:
        kv = subprocess.run([args.kproxyd, "-V"], capture_output=True,
                            timeout=10).stdout.decode().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        kv = "?"
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    return {"cpu": model, "nproc": os.cpu_count(), "loadavg": load,
            "kernel": platform.release(), "librdkafka": rdk, "kproxyd": kv}


def pairs(args):
    """(codec, acks) configurations: the first codec with every --acks,
    the other codecs with the first --acks."""
    out = [(args.codecs[0], a) for a in args.acks]
    out += [(c, args.acks[0]) for c in args.codecs[1:]]
    return out


def label(codec, acks):
    return "%s acks=%s idemp=%s" % (codec, acks,
                                    "on" if acks == "all" else "off")


def verdict(ok):
    if ok is None:
        return "n/a "
    return "PASS" if ok else "MISS"


def report(args, info, thr, mem, lat):
    n = args.messages
    mb = n * args.size / 1e6
    print()
    print("== results (median of %d; %d msgs x %d B payload, %d client%s, "
          "linger_ms %d)" % (args.repeat, n, args.size, args.clients,
                             "" if args.clients == 1 else "s",
                             args.linger_ms))
    hdr = "%-42s %10s %8s %8s %8s %9s %8s %8s" % (
        "measurement", "msgs/s", "MB/s", "time s", "CPU s", "CPU s/M",
        "RSS MB", "mock CPU")
    print(hdr)
    print("-" * len(hdr))

    def row(name, r):
        print("%-42s %10.0f %8.1f %8.3f %8.2f %9.2f %8.1f %8.2f" % (
            name, n / r["elapsed_s"], mb / r["elapsed_s"], r["elapsed_s"],
            r["cpu_s"], r["cpu_s"] / (n / 1e6), r["rss_kb"] / 1024,
            r["mock_cpu_s"] or 0))

    ratios = {}
    for codec, acks in pairs(args):
        kp, rk = thr[(codec, acks)]
        row("kproxyd    " + label(codec, acks), kp)
        row("librdkafka " + label(codec, acks), rk)
        rt = {"thr": rk["elapsed_s"] / kp["elapsed_s"],
              "cpu": kp["cpu_s"] / rk["cpu_s"] if rk["cpu_s"] else None,
              "rss": kp["rss_kb"] / rk["rss_kb"]}
        ratios[(codec, acks)] = rt
        print("%-42s %9.2fx %8s %8s %8s %8sx %7.2fx" % (
            "  ratio kproxyd/librdkafka", rt["thr"], "", "", "",
            "%.2f" % rt["cpu"] if rt["cpu"] is not None else "-",
            rt["rss"]))
    row("kproxyd    none acks=1 buffer_bytes=32MB", mem)
    print()
    print("== latency at %d msgs/s for %g s (acks=all, idempotence, "
          "linger_ms %d)" % (args.rate, args.latency_seconds,
                             args.linger_ms))
    print("%-42s %8s %8s %8s" % ("", "p50 ms", "p99 ms", "max ms"))
    for name, r in (("kproxyd (write -> half-close summary)", lat[0]),
                    ("librdkafka (produce -> delivery report)", lat[1])):
        print("%-42s %8.2f %8.2f %8.2f" % (name, r["p50_ms"], r["p99_ms"],
                                           r["max_ms"]))
    print("  kproxyd method: every 1 ms a burst of %g lines in one write on "
          "its own pre-connected\n  connection, half-closed; each line's "
          "latency = write -> summary line (upper bound\n  for all but the "
          "burst's last-acknowledged line)." % (args.rate / 1000.0))

    print()
    print("== targets")
    targets = []
    r = ratios.get(("none", "1"))
    targets.append(("throughput >= %.1fx librdkafka (none, acks=1)"
                    % TARGET_THR_NONE,
                    "%.2fx" % r["thr"] if r else "not run",
                    r["thr"] >= TARGET_THR_NONE if r else None))
    r = ratios.get(("lz4", "1"))
    targets.append(("throughput >= %.1fx librdkafka (lz4, acks=1)"
                    % TARGET_THR_LZ4,
                    "%.2fx" % r["thr"] if r else "not run",
                    r["thr"] >= TARGET_THR_LZ4 if r else None))
    r = ratios.get(("none", "1"))
    ok = r["cpu"] <= TARGET_CPU if r and r["cpu"] is not None else None
    targets.append(("CPU/M msgs <= %.1fx librdkafka (none, acks=1)"
                    % TARGET_CPU,
                    "%.2fx" % r["cpu"] if ok is not None else "not run", ok))
    rss = mem["rss_kb"] / 1024
    targets.append(("peak RSS <= %d MB with buffer_bytes 32 MB"
                    % TARGET_RSS_MB, "%.1f MB" % rss, rss <= TARGET_RSS_MB))
    lim = args.linger_ms + TARGET_LAT_SLACK_MS
    targets.append(("latency p99 <= linger_ms + %g = %g ms at %d/s"
                    % (TARGET_LAT_SLACK_MS, lim, args.rate),
                    "%.2f ms" % lat[0]["p99_ms"], lat[0]["p99_ms"] <= lim))
    for name, val, ok in targets:
        print("  %s  %-52s %s" % (verdict(ok), name, val))
    return {"ratios": {"%s/%s" % k: v for k, v in ratios.items()},
            "targets": [{"target": t, "value": v, "pass": ok}
                        for t, v, ok in targets]}


# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description="kproxyd vs librdkafka")
    ap.add_argument("--kproxyd", default="build/kproxyd")
    ap.add_argument("--tools", default="build/tools")
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--codec", default="none,lz4",
                    help="comma list; the first is run with every --acks, "
                    "the others with the first --acks (default none,lz4)")
    ap.add_argument("--acks", default="1,all",
                    help="comma list of 1 (idempotence off) and all "
                    "(idempotence on); default 1,all")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate", type=int, default=10000,
                    help="latency run: messages per second")
    ap.add_argument("--latency-seconds", type=float, default=3.0)
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=os.path.join("build", "bench",
                                                   "results.json"),
                    help="where to write the results as JSON")
    args = ap.parse_args(argv)
    args.codecs = [c.strip() for c in args.codec.split(",") if c.strip()]
    args.acks = [a.strip() for a in args.acks.split(",") if a.strip()]
    bad = [a for a in args.acks if a not in ("1", "all")]
    badc = [c for c in args.codecs
            if c not in ("none", "gzip", "lz4", "zstd", "snappy")]
    if (bad or badc or not args.codecs or not args.acks or
            args.messages < 1 or args.size < 1 or args.clients < 1 or
            args.repeat < 1 or args.rate < 1000 or args.clients >
            args.messages):
        ap.error("bad --acks/--codec/--messages/--size/--clients/--repeat/"
                 "--rate (rate >= 1000)")
    for exe in (args.kproxyd, os.path.join(args.tools, "kp_mock"),
                os.path.join(args.tools, "rdk_bench")):
        if not os.access(exe, os.X_OK):
            ap.error("%s is missing (make all tools build/tools/rdk_bench)"
                     % exe)
    return args


def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    info = machine_info(args)
    print("== machine: %s, nproc %s, kernel %s, load average %s"
          % (info["cpu"], info["nproc"], info["kernel"], info["loadavg"]))
    print("== librdkafka %s, %s" % (info["librdkafka"], info["kproxyd"]))
    path = input_file(args)
    with open(path, "rb") as f:
        data = f.read()
    tmpdir = tempfile.mkdtemp(prefix="kpbench.")
    t_start = time.monotonic()
    try:
        thr = {}
        for codec, acks in pairs(args):
            kp_runs, rk_runs = [], []
            for rep in range(args.repeat):
                # Alternate which goes first, so drift hits both alike.
                order = ("kp", "rk") if rep % 2 == 0 else ("rk", "kp")
                for who in order:
                    if who == "kp":
                        r = run_kproxyd_thr(args, tmpdir, data, codec, acks)
                        kp_runs.append(r)
                    else:
                        r = run_rdk(args, tmpdir, path, codec, acks)
                        rk_runs.append(r)
                    print("  %-10s %-28s run %d: %8.0f msgs/s  CPU %.2f s  "
                          "RSS %.1f MB" % (
                              "kproxyd" if who == "kp" else "librdkafka",
                              label(codec, acks), rep + 1,
                              args.messages / r["elapsed_s"], r["cpu_s"],
                              r["rss_kb"] / 1024), flush=True)
            thr[(codec, acks)] = (median_of(kp_runs), median_of(rk_runs))
        mem_runs = []
        for rep in range(args.repeat):
            r = run_kproxyd_thr(args, tmpdir, data, "none", "1", MEM_BUFFER)
            mem_runs.append(r)
            print("  %-10s %-28s run %d: %8.0f msgs/s  peak RSS %.1f MB" % (
                "kproxyd", "buffer_bytes=32MB", rep + 1,
                args.messages / r["elapsed_s"], r["rss_kb"] / 1024),
                flush=True)
        mem = median_of(mem_runs)
        lat_kp, lat_rk = [], []
        for rep in range(args.repeat):
            lat_kp.append(run_kproxyd_lat(args, tmpdir, data))
            lat_rk.append(run_rdk(args, tmpdir, path, "none", "all",
                                  rate=args.rate))
            print("  latency run %d: kproxyd p99 %.2f ms, librdkafka p99 "
                  "%.2f ms" % (rep + 1, lat_kp[-1]["p99_ms"],
                               lat_rk[-1]["p99_ms"]), flush=True)
        lat = (median_of(lat_kp), median_of(lat_rk))
        summary = report(args, info, thr, mem, lat)
        print("\n(benchmark took %.0f s)" % (time.monotonic() - t_start))
        if args.json:
            os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
            with open(args.json, "w") as f:
                json.dump({"machine": info,
                           "args": {k: v for k, v in vars(args).items()},
                           "throughput": {"%s/%s" % k: {"kproxyd": v[0],
                                                        "librdkafka": v[1]}
                                          for k, v in thr.items()},
                           "memory": mem,
                           "latency": {"kproxyd": lat[0],
                                       "librdkafka": lat[1]},
                           **summary}, f, indent=2)
        return 0
    except BenchError as e:
        print("\nbench: FAILED: %s" % e, file=sys.stderr)
        print("(logs in %s)" % tmpdir, file=sys.stderr)
        tmpdir = None
        return 1
    except KeyboardInterrupt:
        print("\nbench: interrupted", file=sys.stderr)
        return 1
    finally:
        kill_all()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
