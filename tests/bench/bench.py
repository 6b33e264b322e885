#!/usr/bin/env python3
"""bench.py - `make bench`: kproxyd beside librdkafka, one row per shape
of traffic, on the same mock cluster.

    python3 tests/bench/bench.py --kproxyd build/kproxyd --tools build/tools
        [--rows 100B,w100,...|all] [--side both|kproxyd|librdkafka]
        [--messages 1000000] [--repeat 3] [--rate 10000]
        [--latency-seconds 3] [--linger-ms 5] [--seed 1] [--profile]
        [--json FILE]

Rows (ROWS below; --rows picks some, `--list` prints them). Every row is a
shape of the same job: lines `bench <payload>` of S bytes of log-like text
produced to topic `bench` on a mock cluster (kp_mock, 3 brokers, 6
partitions unless the row says otherwise), linger_ms 5, no compression,
acks=1 without idempotence, one writer, unless the row changes one of
these. A row's message count is --messages times its `scale` (so the 1 KB
and 10 KB rows move a few hundred MB, not 10 GB).

For each row and each of --repeat runs, both sides run one after the other
(the order alternates between runs, so drift hits both alike), each on a
fresh mock cluster:

* kproxyd: a fresh daemon; one warm-up line is sent and confirmed first
  (metadata, connections, producer id) except in the cold row. The writer
  is kp_writers (tests/bench/kp_writers.c): it opens the row's N
  connections first, then writes each its share of the input file at once
  from one epoll loop, half-closes each and reads every summary; the clock
  runs from its first write to the last summary. kproxyd's CPU is read
  from /proc/PID/task/*/schedstat (ns) just before the writer is let go and
  just after its result arrives; its peak RSS is VmHWM just before
  SIGTERM, after which it must exit 0. The writer's own CPU (getrusage) is
  reported apart.
* librdkafka: rdk_bench (tests/bench/rdk_bench.c) produces the same
  payloads from the same file with the same settings, after one warm-up
  message (cold row: none, and the clock starts before rd_kafka_new); its
  clock stops at the last delivery report. CPU is its getrusage over the
  timed part (every librdkafka thread), RSS its VmHWM (ru_maxrss would
  carry this Python process's size over fork and exec).
* The mock: CPU of all its threads over the same window (schedstat), and
  "busy": its busiest thread's CPU / the window. librdkafka's mock cluster
  serves every broker from one thread, so busy near 100% means the mock,
  not the client, sets the pace; the throughput target is then not judged
  (verdict MOCK).
* Counts: the writer's summaries (or rdk_bench's delivery reports) must
  say every message delivered, none failed or rejected; and the mock's
  high watermarks, summed over the topic's partitions (rdk_bench -W:
  ListOffsets), must equal the messages sent plus the warm-up - so a
  message lost or appended twice (a retried batch) fails the run.

Latency row (`latency`): --rate msgs/s for --latency-seconds, acks=all with
idempotence. kp_writers -r -R writes a burst of rate/1000 lines every
millisecond, each burst on its own pre-connected connection (listener
receipts "each"); a line's latency is its write -> its `ok` receipt, exact
per line, as librdkafka's is: rdk_bench -r produces at the same rate and
burst shape, produce -> delivery report.

Table (medians of --repeat): msgs/s, MB/s (payload), CPU s per million
messages and per GB of payload, peak RSS, the mock's CPU and busy share,
the writer's CPU per million; then the ratios kproxyd/librdkafka and the
issue's targets as PASS/MISS (a miss does not fail the run):
  - every row: CPU per message <= 0.5x librdkafka's;
  - every row: msgs/s >= 2x librdkafka's where the mock is not the limit
    (1,000 writers: >= 1.5x);
  - 100 writers: CPU per message within 1.3x of the one-writer 100 B row;
  - cold: msgs/s within 15% of the warm 100 B row, peak RSS <= 48 MB at
    the default buffer_bytes;
  - latency: p99 no worse than librdkafka's.
The load average is printed at the start and at the end: the machine is
shared, so the ratios matter more than the absolute figures.

--profile (`make bench PROFILE=1`): after a row's measured runs, one more
kproxyd run (not in the medians) under `perf record -e cpu-clock
--call-graph dwarf` attached to the daemon's pid after the warm-up: time by
DSO, kernel time by entry (syscall, page fault), time by kproxyd function
(with the libc and kernel work it calls), the hottest code, and kproxyd's
functions by inclusive time are printed and kept in
build/bench/profile/ROW.txt with the perf.data beside. Where perf cannot
record, valgrind --tool=callgrind runs the daemon instead (instruction
counts, start-up included; far slower).

TLS rows (`tls`, disabled until kproxyd's `security` is wired): the mock's
brokers speak plaintext, so start_tls_terminators() puts one stunnel
(server mode, a throwaway certificate from tests/it/certs.py) in front of
each broker and returns the map advertised address -> terminator; kproxyd
gets `security` (ssl, the CA) and `address_map`, rdk_bench gets --ssl-ca
and --map (resolve_cb). `--rows tls --side librdkafka` runs its librdkafka
half today.

Exit status: 0 whatever the targets say; 1 when a message was lost or
duplicated, or a process failed (the logs of that run are kept in
/tmp/kpbench.*); 2 on bad arguments. Every process runs in its own process
group and is killed on the way out, whatever happened.
"""

import argparse
import json
import os
import platform
import random
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "it"))

TOPIC = "bench"
BROKERS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets (issue "Performance, round two").
TARGET_CPU = 0.5          # kproxyd CPU/msg <= this x librdkafka's
TARGET_THR = 2.0          # msgs/s >= this x librdkafka's ...
TARGET_THR_W1000 = 1.5    # ... with 1,000 writers
TARGET_W100_CPU = 1.3     # 100 writers' CPU/msg <= this x one writer's
TARGET_COLD = 0.85        # cold msgs/s >= this x warm
TARGET_RECEIPTS = 0.9     # receipts-on msgs/s >= this x receipts-off
TARGET_THR_SPOOL = 1.5    # spool.mode always: msgs/s >= this x librdkafka's
TARGET_COLD_RSS_MB = 48.0
MOCK_BUSY_LIMIT = 0.85    # the mock's thread this busy: the mock is the limit


class Row:
    """One shape of traffic. Adding one (TLS, receipts, keys, ...) is a
    line in ROWS: the runners read these fields and nothing else."""

    def __init__(self, name, what, size=100, scale=1.0, writers=1,
                 partitions=6, codec="none", acks="1", cold=False, keys=0,
                 tls=False, receipts=False, spool=None, enabled=True,
                 note="", relay=False):
        self.name = name
        self.what = what
        self.size = size            # payload bytes per message
        self.scale = scale          # messages = --messages x scale
        self.writers = writers      # concurrent kproxyd connections
        self.partitions = partitions
        self.codec = codec
        self.acks = acks            # "1" (no idempotence) or "all" (on)
        self.cold = cold            # no warm-up; librdkafka timed from new
        self.keys = keys            # 0: key-less; K: keys k0..k<K-1>
        self.tls = tls              # through stunnel terminators
        self.receipts = receipts    # listener receipts "each"
        self.spool = spool          # spool.mode ("always", "overflow")
        self.enabled = enabled      # run by default (else --rows NAME)
        self.note = note
        self.relay = relay          # also time kp_relay, the bare floor

    def messages(self, args):
        return max(self.writers, int(args.messages * self.scale))


REF_ROW = "100B"   # the one-writer row others are judged against

ROWS = [
    Row("20B", "1 writer, 20 B", size=20, scale=2.0),
    Row(REF_ROW, "1 writer, 100 B"),
    Row("1KB", "1 writer, 1 KB", size=1024, scale=0.4, relay=True),
    Row("10KB", "1 writer, 10 KB", size=10240, scale=0.05, relay=True),
    Row("p600", "1 writer, 100 B, 600 partitions", partitions=600),
    Row("w100", "100 writers, 100 B", writers=100),
    Row("w1000", "1,000 writers, 100 B", writers=1000),
    Row("cold", "cold daemon, 100 B (no metadata yet)", cold=True),
    Row("lz4", "1 writer, 100 B, lz4", codec="lz4"),
    Row("zstd", "1 writer, 100 B, zstd", codec="zstd"),
    Row("acks-all", "1 writer, 100 B, acks=all + idempotence", acks="all"),
    Row("keyed", "1 writer, 100 B, 1,000 keys", keys=1000, enabled=False,
        note="optional shape"),
    Row("tls", "1 writer, 100 B, TLS through stunnel terminators",
        tls=True),
    Row("receipts", "1 writer, 100 B, receipts each", receipts=True),
    Row("spool", "1 writer, 100 B, disk spool always", spool="always"),
]
LATENCY_ROW = "latency"


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


def read_line(p, timeout, what):
    """One line from p's stdout (raw reads: nothing is left buffered in
    the file object for communicate() to miss)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        ready = sel.select(max(left, 0))
        sel.close()
        if not ready:
            raise BenchError("%s: nothing within %d s" % (what, timeout))
        chunk = os.read(p.stdout.fileno(), 1)
        if not chunk:
            raise BenchError("%s exited early" % what)
        buf += chunk
    return buf.decode().strip()


# --------------------------------------------------------------------------
# Input files

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
            # Flush by lines and by bytes, so a 10 KB file does not
            # swell this process (which every measured one is forked from).
            if len(out) >= 30000 or len(out) * size >= (12 << 20):
                f.write("".join(out))
                out = []
        f.write("".join(out))
    os.replace(tmp, path)


def input_file(args, n, size):
    d = os.path.join("build", "bench")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "lines-%d-%d-%d.txt" % (n, size, args.seed))
    want = n * (len(TOPIC) + 2 + size)
    if not (os.path.exists(path) and os.path.getsize(path) == want):
        t = time.monotonic()
        gen_input(path, n, size, args.seed)
        print("input: wrote %s in %.1f s" % (path, time.monotonic() - t),
              flush=True)
    return path


# --------------------------------------------------------------------------
# CPU, memory

def tasks_cpu_ns(pid):
    """{tid: on-CPU ns} of every thread of pid: schedstat's first field
    (ns, exact), else utime+stime from stat (clock ticks)."""
    out = {}
    base = "/proc/%d/task" % pid
    try:
        tids = os.listdir(base)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("%s/%s/schedstat" % (base, tid)) as f:
                out[tid] = int(f.read().split()[0])
                continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open("%s/%s/stat" % (base, tid)) as f:
                data = f.read()
            fields = data[data.rindex(")") + 2:].split()
            out[tid] = (int(fields[11]) + int(fields[12])) * \
                10 ** 9 // CLK_TCK
        except (OSError, ValueError, IndexError):
            pass
    return out


def cpu_delta(before, after):
    """(total CPU s, busiest thread's CPU s) between two tasks_cpu_ns."""
    d = [after[t] - before.get(t, 0) for t in after]
    return (sum(d) / 1e9, max(d) / 1e9) if d else (0.0, 0.0)


def proc_minflt(pid):
    """Minor page faults of pid so far (every thread): each is a page
    touched for the first time, which costs dearly in a VM."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
        return int(data[data.rindex(")") + 2:].split()[7])
    except (OSError, ValueError, IndexError):
        return 0


def proc_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise BenchError("no VmHWM for pid %d" % pid)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------
# Mock cluster

class Mock:
    def __init__(self, tools, tmpdir, partitions):
        self.log = open(os.path.join(tmpdir, "kp_mock.log"), "ab")
        self.proc = spawn([os.path.join(tools, "kp_mock"), "-b", str(BROKERS),
                           "-t", "%s:%d" % (TOPIC, partitions)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=self.log)
        self.pid = self.proc.pid
        self.bootstrap = None
        while True:
            line = read_line(self.proc, 15, "kp_mock")
            if line.startswith("BOOTSTRAP "):
                self.bootstrap = line.split(" ", 1)[1].strip()
            elif line == "READY":
                break
        if not self.bootstrap:
            raise BenchError("kp_mock printed no BOOTSTRAP line")
        self.brokers = self.bootstrap.split(",")

    def stop(self):
        """Closes stdin (kp_mock exits at EOF)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc, _ = reap(self.proc, 10)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            raise BenchError("kp_mock did not exit at stdin EOF")
        finally:
            self.proc.stdout.close()
            self.log.close()
        if rc != 0:
            raise BenchError("kp_mock exited with %d" % rc)


def check_records(args, mock, want, what):
    """The mock's high watermarks summed over the topic: every record it
    appended (offsets are never reused), so a lost or twice-appended
    message shows here even when the client's count looks right."""
    p = subprocess.run([os.path.join(args.tools, "rdk_bench"), "-b",
                        mock.bootstrap, "-t", TOPIC, "-W"],
                       capture_output=True, timeout=60)
    try:
        got = json.loads(p.stdout)["records"]
    except (ValueError, KeyError):
        raise BenchError("%s: rdk_bench -W failed: %s" % (
            what, p.stderr.decode("utf-8", "replace")))
    if got != want:
        raise BenchError("%s: the mock holds %d records, %d were sent: "
                         "messages %s" % (what, got, want,
                                          "lost" if got < want else
                                          "duplicated"))


# --------------------------------------------------------------------------
# TLS terminators (for the TLS rows)

def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Terminators:
    """One stunnel per broker, TLS in front, plaintext to the broker.

    .map    {advertised "host:port": terminator "127.0.0.1:port"} - for
            kproxyd's `address_map` and rdk_bench --map
    .addrs  the terminators, in broker order (a TLS bootstrap list)
    .ca     the CA file that signed their certificate (CN localhost, SAN
            DNS:localhost, IP:127.0.0.1)
    """

    def __init__(self, mock, tmpdir):
        import certs  # tests/it/certs.py
        exe = shutil.which("stunnel") or shutil.which("stunnel4")
        if not exe:
            raise BenchError("stunnel is missing (Debian package stunnel4)")
        c = certs.make(tmpdir, "bench-certs")
        self.ca = c.ca
        self.map = {}
        self.addrs = []
        self.procs = []
        for i, (broker, port) in enumerate(zip(mock.brokers,
                                               free_ports(len(mock.brokers)))):
            conf = os.path.join(tmpdir, "stunnel-%d.conf" % (i + 1))
            with open(conf, "w") as f:
                f.write("foreground = yes\npid =\nsyslog = no\n"
                        "output = %s\ndebug = notice\n[b%d]\n"
                        "accept = 127.0.0.1:%d\nconnect = %s\ncert = %s\n"
                        "key = %s\n" % (
                            os.path.join(tmpdir, "stunnel-%d.log" % (i + 1)),
                            i + 1, port, broker, c.server, c.server_key))
            self.procs.append(spawn([exe, conf], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL))
            addr = "127.0.0.1:%d" % port
            self.map[broker] = addr
            self.addrs.append(addr)
        for p, addr in zip(self.procs, self.addrs):
            wait_listening(p, addr, "stunnel")

    def stop(self):
        for p in self.procs:
            kill_group(p)


def wait_listening(p, addr, what):
    host, port = addr.rsplit(":", 1)
    deadline = time.monotonic() + 15
    while True:
        if p.poll() is not None:
            raise BenchError("%s exited with %s at start-up"
                             % (what, p.returncode))
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError("%s never listened on %s" % (what, addr))
        time.sleep(0.02)


def start_tls_terminators(mock, tmpdir):
    """See Terminators."""
    return Terminators(mock, tmpdir)


# --------------------------------------------------------------------------
# kproxyd

def kproxyd_conf(args, row, mock, sock, tls):
    listener = {"path": sock,
                "format": "topic,key,value" if row.keys else "topic,value"}
    if row.receipts:
        listener["receipts"] = "each"
    conf = {
        "brokers": mock.brokers,
        "listeners": [listener],
        "control": None,
        "log_level": "info",
        "shutdown_timeout_ms": 10000,
        "producer": {"acks": "all" if row.acks == "all" else int(row.acks),
                     "idempotence": row.acks == "all",
                     "compression": row.codec,
                     "linger_ms": args.linger_ms},
    }
    if row.writers > 500:
        conf["max_clients_per_uid"] = row.writers * 2 + 16
    if row.spool:
        # a fresh directory per run: nothing replayed from an earlier one
        conf["spool"] = {"dir": tempfile.mkdtemp(
            prefix="spool-", dir=os.path.dirname(sock)), "mode": row.spool}
    if tls:
        conf["brokers"] = tls.addrs
        conf["address_map"] = tls.map
        conf["security"] = {"protocol": "ssl", "tls": {"ca_file": tls.ca}}
    for item in args.set or ():
        key, _, val = item.partition("=")
        conf[key] = json.loads(val)
    return conf


class Kproxyd:
    _seq = 0

    def __init__(self, binary, conf, tmpdir, wrapper=()):
        Kproxyd._seq += 1
        name = "k%d" % Kproxyd._seq
        self.sock = conf["listeners"][0]["path"]
        self.conf_path = os.path.join(tmpdir, name + ".json")
        with open(self.conf_path, "w") as f:
            json.dump(conf, f)
        self.log_path = os.path.join(tmpdir, name + ".log")
        env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC"):
            env.pop(k, None)
        with open(self.log_path, "ab") as log:
            self.proc = spawn(list(wrapper) + [binary, "-c", self.conf_path],
                              stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=log, env=env)
        self.pid = self.proc.pid
        deadline = time.monotonic() + (120 if wrapper else 15)
        while True:
            if self.proc.poll() is not None:
                raise BenchError("kproxyd exited with %s at start-up:\n%s"
                                 % (self.proc.returncode, self.log_tail()))
            try:
                connect(self.sock).close()
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

    def stop(self, timeout=20):
        """SIGTERM; returns the peak RSS (kB) read just before it."""
        self.check_alive()
        hwm = proc_hwm_kb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc, _ = reap(self.proc, timeout)
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


def warm_up(k, path, row):
    """One line (the file's first, keyed like the rest) and its summary."""
    with open(path, "rb") as f:
        line = f.readline()
    if row.keys:
        topic, value = line.split(b" ", 1)
        line = topic + b" k0 " + value
    s = connect(k.sock)
    try:
        s.sendall(line)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise BenchError("warm-up: %s" % e)
    finally:
        s.close()
    last = data.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if last[0] != "delivered=1 failed=0 rejected=0":
        raise BenchError("warm-up: kproxyd answered %r" % data)


def check_counts(what, r, sent):
    if (r["messages"] != sent or r["delivered"] != sent or
            r.get("failed") or r.get("rejected")):
        raise BenchError("%s: sent %d, got %s: messages lost" % (
            what, sent, {k: r.get(k) for k in ("messages", "delivered",
                                                "failed", "rejected")}))


# --------------------------------------------------------------------------
# The two sides of a row

def run_gated(argv, tmpdir, name, pids, timeout):
    """Starts argv (a tool run with -g: it prints READY when set up and
    waits for a line), samples the CPU of pids, lets it go and waits for
    its JSON. Returns (result, window s, {pid: (cpu s, busiest thread s,
    minor page faults)}) with the window from the go to the result."""
    errp = os.path.join(tmpdir, name + ".err")
    with open(errp, "wb") as err:
        p = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                  stderr=err)

    def errtext():
        with open(errp, "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    try:
        line = read_line(p, 300, name)
    except BenchError as e:
        raise BenchError("%s\n%s" % (e, errtext()))
    if line != "READY":
        raise BenchError("%s said %r\n%s" % (name, line, errtext()))
    before = {pid: tasks_cpu_ns(pid) for pid in pids}
    flt0 = {pid: proc_minflt(pid) for pid in pids}
    t0 = time.monotonic()
    p.stdin.write(b"go\n")
    p.stdin.flush()
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s did not finish within %d s" % (name, timeout))
    window = time.monotonic() - t0
    after = {pid: tasks_cpu_ns(pid) for pid in pids}
    flt = {pid: proc_minflt(pid) - flt0[pid] for pid in pids}
    if p.returncode != 0:
        raise BenchError("%s exited with %d:\n%s" % (name, p.returncode,
                                                     errtext()))
    try:
        r = json.loads(out)
    except ValueError:
        raise BenchError("%s printed %r\n%s" % (name, out, errtext()))
    return r, window, {pid: cpu_delta(before[pid], after[pid]) + (flt[pid],)
                       for pid in pids}


def side_result(r, n, size, window, cpu_s, rss_kb, mock_cpu, minflt):
    el = r["elapsed_s"]
    out = {"messages": n, "elapsed_s": el, "msgs_s": n / el,
           "mb_s": n * size / el / 1e6, "cpu_s": cpu_s,
           "cpu_s_per_m": cpu_s / (n / 1e6),
           "cpu_s_per_gb": cpu_s / (n * size / 1e9),
           "rss_mb": rss_kb / 1024.0, "mock_cpu_s": mock_cpu[0],
           "faults_per_m": minflt / (n / 1e6),
           "mock_busy": mock_cpu[1] / window if window > 0 else 0.0}
    for k in ("lat_p50_ms", "lat_p99_ms", "lat_max_ms"):
        if k in r:
            out[k] = r[k]
    return out


def run_kproxyd(args, row, path, n, tmpdir, prof=None, rate=None,
                loops=1):
    mock = Mock(args.tools, tmpdir, row.partitions)
    tls = None
    try:
        if row.tls:
            tls = start_tls_terminators(mock, tmpdir)
        sock = os.path.join(tmpdir, "k.sock")
        conf = kproxyd_conf(args, row, mock, sock, tls)
        k = Kproxyd(args.kproxyd, conf, tmpdir,
                    prof.wrapper(row) if prof else ())
        if not row.cold:
            warm_up(k, path, row)
        argv = [os.path.join(args.tools, "kp_writers"), "-s", sock, "-f",
                path, "-g", "-n", str(n)]
        if rate:
            argv += ["-r", str(rate), "-d", str(args.latency_seconds)]
        else:
            argv += ["-c", str(row.writers), "-l", str(loops)]
        if row.keys:
            argv += ["-k", str(row.keys)]
        if row.receipts:
            argv.append("-R")
        perf = prof.attach(row, k.pid) if prof else None
        r, window, cpu = run_gated(argv, tmpdir, "kp_writers",
                                   [k.pid, mock.pid], 900)
        if perf:
            prof.detach(perf)
        k.check_alive()
        sent = r["messages"]
        check_counts("kproxyd %s" % row.name, r, sent)
        check_records(args, mock, sent + (0 if row.cold else 1),
                      "kproxyd %s" % row.name)
        hwm = k.stop(timeout=300 if prof else 20)
    finally:
        try:
            mock.stop()
        finally:
            if tls:
                tls.stop()
            kill_all()
    out = side_result(r, sent, row.size, window, cpu[k.pid][0], hwm,
                      cpu[mock.pid], cpu[k.pid][2])
    out["writer_cpu_s_per_m"] = (r["cpu_user_s"] + r["cpu_sys_s"]) / (
        sent / 1e6)
    return out


def run_relay(args, row, path, n, tmpdir):
    """The same writer against kp_relay (tests/bench/kp_relay.c): a UNIX
    socket read and a loopback TCP write of the same bytes, no Kafka. Its
    "mock" CPU is its sink's."""
    sock = os.path.join(tmpdir, "relay.sock")
    p = spawn([os.path.join(args.tools, "kp_relay"), "-s", sock],
              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        line = read_line(p, 15, "kp_relay").split()
        if len(line) != 3 or line[0] != "READY":
            raise BenchError("kp_relay said %r" % " ".join(line))
        relay, sink = int(line[1]), int(line[2])
        argv = [os.path.join(args.tools, "kp_writers"), "-s", sock, "-f",
                path, "-g", "-n", str(n), "-c", str(row.writers)]
        r, window, cpu = run_gated(argv, tmpdir, "kp_writers",
                                   [relay, sink], 900)
        sent = r["messages"]
        check_counts("kp_relay %s" % row.name, r, sent)
        hwm = proc_hwm_kb(relay)
    finally:
        kill_all()
    out = side_result(r, sent, row.size, window, cpu[relay][0], hwm,
                      cpu[sink], cpu[relay][2])
    out["writer_cpu_s_per_m"] = (r["cpu_user_s"] + r["cpu_sys_s"]) / (
        sent / 1e6)
    return out


def run_rdk(args, row, path, n, tmpdir, rate=None):
    mock = Mock(args.tools, tmpdir, row.partitions)
    tls = None
    try:
        argv = [os.path.join(args.tools, "rdk_bench"), "-b", mock.bootstrap,
                "-f", path, "-t", TOPIC, "-a", row.acks,
                "-i", "1" if row.acks == "all" else "0", "-z", row.codec,
                "-l", str(args.linger_ms), "-g"]
        if row.tls:
            tls = start_tls_terminators(mock, tmpdir)
            argv[2] = ",".join(tls.addrs)
            argv += ["--map", ",".join("%s=%s" % kv for kv in
                                       sorted(tls.map.items())),
                     "--ssl-ca", tls.ca]
        if row.cold:
            argv.append("-C")
        if row.keys:
            argv += ["-k", str(row.keys)]
        if rate:
            argv += ["-r", str(rate), "-d", str(args.latency_seconds)]
        r, window, cpu = run_gated(argv, tmpdir, "rdk_bench", [mock.pid],
                                   900)
        want = r["messages"] if rate else n
        if r["messages"] != want or r["delivered"] != want or r["failed"]:
            raise BenchError("rdk_bench %s: %s: messages lost" % (
                row.name, r))
        check_records(args, mock, want + (0 if row.cold else 1),
                      "librdkafka %s" % row.name)
    finally:
        try:
            mock.stop()
        finally:
            if tls:
                tls.stop()
            kill_all()
    return side_result(r, want, row.size, window,
                       r["cpu_user_s"] + r["cpu_sys_s"], r["maxrss_kb"],
                       cpu[mock.pid], r.get("minflt", 0))


# --------------------------------------------------------------------------
# Profiles (--profile)

def add(d, k, v):
    d[k] = d.get(k, 0) + v


def short_dso(dso):
    if dso == "[kernel.kallsyms]":
        return "kernel"
    return os.path.basename(dso)


def perf_samples(data):
    """[(period ns, [(symbol, dso), ...leaf first])] from perf script,
    physical frames only (--no-inline keeps every frame's own dso)."""
    import re
    frame_re = re.compile(r"^\s+[0-9a-f]+ (.*) \((.*)\)$")
    p = subprocess.run(["perf", "script", "-i", data, "-F",
                        "comm,period,ip,sym,dso", "--no-inline"],
                       capture_output=True, timeout=600)
    out, cur = [], None
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            cur = (int(line.split()[-1]), [])
            out.append(cur)
            continue
        m = frame_re.match(line)
        if m and cur is not None:
            sym, dso = m.group(1), short_dso(m.group(2))
            if sym == "[unknown]" or sym.startswith("0x"):
                sym = "(no symbols)"
            cur[1].append((sym, dso))
    return out


_ENTRIES = {"ksys_read": "read", "ksys_write": "write",
            "do_writev": "writev", "do_readv": "readv",
            "asm_exc_page_fault": "page faults",
            "asm_sysvec_apic_timer_interrupt": "timer irq",
            "asm_common_interrupt": "irq"}


def kernel_entry(frames):
    """How a kernel sample was entered: the outermost syscall or
    exception frame (the one nearest user space)."""
    entry = "other"
    for sym, dso in frames:
        if dso != "kernel":
            break
        if sym.startswith("__x64_sys_"):
            entry = sym[len("__x64_sys_"):]
        elif sym in _ENTRIES:
            entry = _ENTRIES[sym]
        elif sym.startswith("asm_sysvec_"):
            entry = "irq " + sym[len("asm_sysvec_"):]
    return entry


def perf_inclusive(data, me, top):
    """kproxyd's functions by inclusive time, inlined ones included
    (perf report resolves them), without the loop's roots."""
    p = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g",
                        "none", "--sort", "dso,sym", "--children",
                        "--percent-limit", "1"], capture_output=True,
                       timeout=600)
    roots = {"_start", "main", "kp_run", "kp_ctx_run"}
    out = []
    for ln in p.stdout.decode("utf-8", "replace").splitlines():
        f = ln.split()
        if (len(f) >= 5 and not ln.startswith("#") and f[2] == me and
                f[4] not in roots):
            out.append("%8s %8s  %s%s" % (f[0], f[1], f[4],
                                          " (inlined)" if "inlined" in ln
                                          else ""))
    return out[:top]


class Profiler:
    """perf record attached to the daemon after its warm-up, or callgrind
    around the whole daemon where perf cannot record."""

    def __init__(self, args):
        self.args = args
        self.dir = os.path.join("build", "bench", "profile")
        os.makedirs(self.dir, exist_ok=True)
        self.mode = None
        if shutil.which("perf"):
            p = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock",
                                "-o", os.path.join(self.dir, "probe.data"),
                                "--", "true"], capture_output=True,
                               timeout=60)
            if p.returncode == 0:
                self.mode = "perf"
        if not self.mode and shutil.which("valgrind"):
            self.mode = "callgrind"
        self.reports = {}

    def data(self, row):
        return os.path.join(self.dir, row.name + (
            ".perf.data" if self.mode == "perf" else ".callgrind.out"))

    def messages(self, n):
        """(lines, loops) of the profile run: perf's runs are made longer
        (--profile-loops times the row's file) for enough samples;
        callgrind is some 50x slower: a tenth of the messages."""
        if self.mode == "perf":
            return n, self.args.profile_loops
        return max(1000, n // 10), 1

    def wrapper(self, row):
        if self.mode != "callgrind":
            return ()
        return ("valgrind", "--tool=callgrind", "--callgrind-out-file=" +
                self.data(row))

    def attach(self, row, pid):
        if self.mode != "perf":
            return None
        log = open(os.path.join(self.dir, row.name + ".perf.log"), "wb")
        ev = self.args.profile_event
        rate = ["-F", str(self.args.profile_freq)] if ev == "cpu-clock" \
            else ["-c", "1"]    # a software event: every one of them
        p = spawn(["perf", "record", "-e", ev] + rate + ["--call-graph",
                   "dwarf,16384", "-p", str(pid), "-o", self.data(row)],
                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        # perf has no "attached" signal; an idle daemon takes no samples,
        # so waiting is free.
        time.sleep(0.5)
        if p.poll() is not None:
            raise BenchError("perf record exited at once (see %s.perf.log)"
                             % row.name)
        return p

    def detach(self, p):
        p.send_signal(signal.SIGINT)
        try:
            reap(p, 120)
        except subprocess.TimeoutExpired:
            kill_group(p)

    def report(self, row, binary):
        """Top functions as text, also kept in ROW.txt."""
        if self.mode == "perf":
            text = self._perf_report(self.data(row), binary)
        else:
            text = self._callgrind_report(self.data(row))
        with open(os.path.join(self.dir, row.name + ".txt"), "w") as f:
            f.write(text)
        self.reports[row.name] = text
        return text

    def _perf_report(self, data, binary):
        me = os.path.basename(binary)
        samples = perf_samples(data)
        total = sum(per for per, _ in samples) or 1
        top = self.args.profile_top

        def pct(d, n):
            return ["%6.2f%%  %s" % (100.0 * v / total, k) for k, v in
                    sorted(d.items(), key=lambda kv: -kv[1])[:n]]

        def inline(d, n):
            return ", ".join("%s %.1f%%" % (k, 100.0 * v / total) for k, v in
                             sorted(d.items(), key=lambda kv: -kv[1])[:n])

        by_dso, by_sym, by_entry, nearest, nearest_self = (
            {}, {}, {}, {}, {})
        for per, frames in samples:
            if not frames:
                continue
            sym, dso = frames[0]
            add(by_dso, dso, per)
            add(by_sym, "%-10s %s" % (dso, sym), per)
            if dso == "kernel":
                add(by_entry, kernel_entry(frames), per)
            mine = [f for f, d in frames if d == me]
            if mine:
                add(nearest, mine[0], per)
                if dso == me:
                    add(nearest_self, mine[0], per)
        near = ["%6.2f%%  %-34s (self %.2f%%)" % (
            100.0 * v / total, k if k != "main" else "main (the libev loop "
            "itself)", 100.0 * nearest_self.get(k, 0) / total)
            for k, v in sorted(nearest.items(), key=lambda kv: -kv[1])[:top]]
        ev = self.args.profile_event
        head = ("  %d samples, %.2f s of CPU (perf cpu-clock, %d Hz)"
                % (len(samples), total / 1e9, self.args.profile_freq)
                if ev == "cpu-clock" else
                "  %d samples (perf %s, every one)" % (len(samples), ev))
        return "\n".join(
            [head,
             "  by dso: " + inline(by_dso, 6),
             "  kernel by entry: " + inline(by_entry, 8),
             "  by kproxyd function (its own code plus the libc and kernel "
             "work it calls,",
             "  up to the next kproxyd frame):"] +
            ["    " + ln for ln in near] +
            ["  self, hottest code anywhere:"] +
            ["    " + ln for ln in pct(by_sym, top)] +
            ["  inclusive, kproxyd functions (inlined ones too; children, "
             "self):"] +
            ["    " + ln for ln in perf_inclusive(data, me, top)]) + "\n"

    def _callgrind_report(self, data):
        out = []
        for inclusive in ("no", "yes"):
            p = subprocess.run(["callgrind_annotate", "--inclusive=" +
                                inclusive, data], capture_output=True,
                               timeout=600)
            lines = p.stdout.decode("utf-8", "replace").splitlines()
            body = [ln for ln in lines if "%" in ln and ":" in ln]
            out.append("  %s (instructions, start-up included):" % (
                "inclusive" if inclusive == "yes" else "self"))
            out += ["    " + ln.strip()
                    for ln in body[:self.args.profile_top]]
        return "\n".join(out) + "\n"


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
        import ctypes
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
    return {"cpu": model, "nproc": os.cpu_count(), "loadavg_start": loadavg(),
            "kernel": platform.release(), "librdkafka": rdk, "kproxyd": kv}


def ratios(kp, rk):
    if not kp or not rk:
        return None
    return {"thr": kp["msgs_s"] / rk["msgs_s"],
            "cpu": kp["cpu_s_per_m"] / rk["cpu_s_per_m"]
            if rk["cpu_s_per_m"] else None,
            "rss": kp["rss_mb"] / rk["rss_mb"] if rk["rss_mb"] else None}


HDR = ("%-9s %-10s %9s %10s %8s %8s %9s %7s %8s %5s %8s" % (
    "row", "side", "messages", "msgs/s", "MB/s", "CPU s/M", "CPU s/GB",
    "RSS MB", "mock CPU", "busy", "wr CPU/M"))


ROW_FMT = "%-9s %-10s %9d %10.0f %8.1f %8.3f %9.2f %7.1f %8.2f %4.0f%% %8s"


def fmt_side(name, side, r):
    return ROW_FMT % (
        name, side, r["messages"], r["msgs_s"], r["mb_s"], r["cpu_s_per_m"],
        r["cpu_s_per_gb"], r["rss_mb"], r["mock_cpu_s"], 100 * r["mock_busy"],
        "%.3f" % r["writer_cpu_s_per_m"] if "writer_cpu_s_per_m" in r
        else "-")


def fmt_ratio(rt):
    def x(v):
        return "%.2fx" % v if v is not None else "-"
    return "%-9s %-10s %9s %10s %8s %8s %9s %7s" % (
        "", "ratio", "", x(rt["thr"]), "", x(rt["cpu"]), "", x(rt["rss"]))


def verdict(ok):
    return {None: "n/a ", True: "PASS", False: "MISS", "mock": "MOCK"}[ok]


def targets(results, lat):
    """[(row, target, value, ok)]: ok True/False/None (not run) or "mock"
    (throughput not judged: the mock's thread was the limit)."""
    out = []
    ref = results.get(REF_ROW, {}).get("kproxyd")
    for name, res in results.items():
        kp, rk, rt = res.get("kproxyd"), res.get("librdkafka"), res["ratios"]
        if rt:
            ok = rt["cpu"] <= TARGET_CPU if rt["cpu"] is not None else None
            out.append((name, "CPU/msg <= %.1fx librdkafka's" % TARGET_CPU,
                        "%.2fx" % rt["cpu"] if ok is not None else "-", ok))
            want = TARGET_THR_W1000 if name == "w1000" else \
                TARGET_THR_SPOOL if name == "spool" else TARGET_THR
            ok = rt["thr"] >= want
            val = "%.2fx" % rt["thr"]
            if not ok and kp["mock_busy"] >= MOCK_BUSY_LIMIT:
                ok = "mock"
                val += " (mock busy %.0f%%)" % (100 * kp["mock_busy"])
            elif not ok:
                val += machine_room(res, want)
            out.append((name, "msgs/s >= %.1fx librdkafka's" % want, val,
                        ok))
        if name == "w100" and kp and ref:
            v = kp["cpu_s_per_m"] / ref["cpu_s_per_m"]
            out.append((name, "CPU/msg <= %.1fx the %s row's"
                        % (TARGET_W100_CPU, REF_ROW), "%.2fx" % v,
                        v <= TARGET_W100_CPU))
        if name == "receipts" and kp and ref:
            v = kp["msgs_s"] / ref["msgs_s"]
            out.append((name, "msgs/s >= %.2fx the %s row's (receipts off)"
                        % (TARGET_RECEIPTS, REF_ROW), "%.2fx" % v,
                        v >= TARGET_RECEIPTS))
        if name == "cold" and kp:
            if ref:
                v = kp["msgs_s"] / ref["msgs_s"]
                out.append((name, "msgs/s >= %.2fx the warm %s row's"
                            % (TARGET_COLD, REF_ROW), "%.2fx" % v,
                            v >= TARGET_COLD))
            out.append((name, "peak RSS <= %.0f MB (default buffer_bytes)"
                        % TARGET_COLD_RSS_MB, "%.1f MB" % kp["rss_mb"],
                        kp["rss_mb"] <= TARGET_COLD_RSS_MB))
    if lat and lat.get("kproxyd") and lat.get("librdkafka"):
        a, b = lat["kproxyd"]["lat_p99_ms"], lat["librdkafka"]["lat_p99_ms"]
        out.append((LATENCY_ROW, "p99 <= librdkafka's p99",
                    "%.2f vs %.2f ms" % (a, b), a <= b))
    return out


def machine_room(res, want):
    """Why a throughput target was missed, in CPU: the machine's cores
    give nproc CPU-seconds a second to kproxyd, the mock and the writer
    together, so `want` x librdkafka's msgs/s leaves kproxyd at most
    nproc / (want x its msgs/s) minus the mock's and the writer's CPU per
    message (their figures from kproxyd's own runs). Beside it, what
    kproxyd spends, kp_relay's bare floor where the row has one, and the
    cores kproxyd's one thread would need at that rate."""
    kp, rk, floor = res["kproxyd"], res["librdkafka"], res.get("relay")
    per_m = kp["messages"] / 1e6
    rate = want * rk["msgs_s"]
    room = ((os.cpu_count() or 1) * 1e6 / rate -
            kp["mock_cpu_s"] / per_m - kp.get("writer_cpu_s_per_m", 0.0))
    text = "; %.1fx leaves kproxyd %.2f CPU s/M, it takes %.2f" % (
        want, room, kp["cpu_s_per_m"])
    if floor:
        text += ", a bare relay %.2f" % floor["cpu_s_per_m"]
    return text + "; its thread would need %.2f cores" % (
        rate * kp["cpu_s_per_m"] / 1e6)


def report(args, results, lat, tl):
    print()
    print("== results: medians of %d runs (payload MB/s; CPU per million "
          "messages and per GB of payload;" % args.repeat)
    print("   mock: its CPU s over the window and its busiest thread's "
          "share; wr: kp_writers' own CPU;")
    print("   relay: kp_relay, the bare UNIX-read + TCP-write floor, and "
          "its sink in the mock columns)")
    print(HDR)
    print("-" * len(HDR))
    for name, res in results.items():
        for side in ("kproxyd", "librdkafka", "relay"):
            if res.get(side):
                print(fmt_side(name, side, res[side]))
        if res["ratios"]:
            print(fmt_ratio(res["ratios"]))
    if lat:
        print()
        print("== latency at %d msgs/s for %g s (acks=all, idempotence, "
              "linger_ms %d), medians of %d" % (
                  args.rate, args.latency_seconds, args.linger_ms,
                  args.repeat))
        print("%-44s %8s %8s %8s %6s" % ("", "p50 ms", "p99 ms", "max ms",
                                         "busy"))
        for side, what in (("kproxyd", "kproxyd (write -> its ok receipt)"),
                           ("librdkafka",
                            "librdkafka (produce -> delivery report)")):
            r = lat.get(side)
            if r:
                print("%-44s %8.2f %8.2f %8.2f %5.0f%%" % (
                    what, r["lat_p50_ms"], r["lat_p99_ms"], r["lat_max_ms"],
                    100 * r["mock_busy"]))
    print()
    print("== targets")
    for name, what, val, ok in tl:
        print("  %s  %-9s %-44s %s" % (verdict(ok), name, what, val))


# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description="kproxyd vs librdkafka, one "
                                 "row per shape of traffic")
    ap.add_argument("--kproxyd", default="build/kproxyd")
    ap.add_argument("--tools", default="build/tools")
    ap.add_argument("--rows", default="all",
                    help="comma list of row names (see --list); `all` = "
                    "every enabled row and the latency row")
    ap.add_argument("--list", action="store_true", help="print the rows")
    ap.add_argument("--side", default="both",
                    choices=("both", "kproxyd", "librdkafka"))
    ap.add_argument("--messages", type=int, default=1000000,
                    help="messages of the 100 B rows; other rows scale it")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate", type=int, default=10000,
                    help="latency row: messages per second")
    ap.add_argument("--latency-seconds", type=float, default=3.0)
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--set", action="append", metavar="KEY=JSON",
                    help="a top-level key of kproxyd's config, e.g. "
                    "--set buffer_bytes=67108864 (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true",
                    help="one more kproxyd run per row under perf "
                    "(or callgrind); prints its top functions")
    ap.add_argument("--profile-freq", type=int, default=2999,
                    help="perf samples per second")
    ap.add_argument("--profile-event", default="cpu-clock",
                    help="perf event to sample, e.g. page-faults (each "
                    "one recorded) to see where memory is first touched")
    ap.add_argument("--profile-loops", type=int, default=3,
                    help="a perf profile run writes the row's messages "
                    "this many times over")
    ap.add_argument("--profile-top", type=int, default=25,
                    help="functions shown per profile")
    ap.add_argument("--json", default=os.path.join("build", "bench",
                                                   "results.json"),
                    help="where to write the results as JSON")
    args = ap.parse_args(argv)
    if args.list:
        for r in ROWS:
            print("%-9s %-44s %s" % (r.name, r.what, "" if r.enabled else
                                     "(off by default: %s)" % r.note))
        print("%-9s %s" % (LATENCY_ROW, "latency at --rate, acks=all"))
        sys.exit(0)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    known = {r.name: r for r in ROWS}
    if names == ["all"]:
        args.row_list = [r for r in ROWS if r.enabled]
        args.latency = True
    else:
        bad = [n for n in names if n not in known and n != LATENCY_ROW]
        if bad:
            ap.error("unknown rows %s (see --list)" % ",".join(bad))
        args.row_list = [known[n] for n in names if n in known]
        args.latency = LATENCY_ROW in names
    if (args.messages < 1000 or args.repeat < 1 or args.rate < 1000 or
            args.latency_seconds <= 0):
        ap.error("bad --messages (>= 1000)/--repeat/--rate (>= 1000)/"
                 "--latency-seconds")
    for exe in (args.kproxyd, os.path.join(args.tools, "kp_mock"),
                os.path.join(args.tools, "rdk_bench"),
                os.path.join(args.tools, "kp_writers"),
                os.path.join(args.tools, "kp_relay")):
        if not os.access(exe, os.X_OK):
            ap.error("%s is missing (make all tools build/tools/rdk_bench "
                     "build/tools/kp_writers build/tools/kp_relay)" % exe)
    return args


def raise_nofile():
    """1,000 writers and the daemon's ends of them: more descriptors than
    a soft limit of 1024 (inherited by every child)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def progress(row, side, rep, r):
    extra = ""
    if "lat_p99_ms" in r:
        extra = "  p50 %.2f ms  p99 %.2f ms" % (r["lat_p50_ms"],
                                                r["lat_p99_ms"])
    print("  %-9s %-10s run %d: %9.0f msgs/s  CPU %.3f s/M  RSS %.1f MB  "
          "faults %.0f/M  mock busy %.0f%%%s" % (
              row, side, rep + 1, r["msgs_s"], r["cpu_s_per_m"], r["rss_mb"],
              r["faults_per_m"], 100 * r["mock_busy"], extra), flush=True)


def measure_row(args, row, tmpdir, prof):
    """Both sides --repeat times, alternating which goes first; then the
    profile run. Returns {"kproxyd": median, "librdkafka": median, ...}."""
    n = row.messages(args)
    path = input_file(args, n, row.size)
    runs = {"kproxyd": [], "librdkafka": [], "relay": []}
    sides = ["kproxyd", "librdkafka"] if args.side == "both" else \
        [args.side]
    if row.relay and "kproxyd" in sides:
        sides.append("relay")
    for rep in range(args.repeat):
        for side in (sides if rep % 2 == 0 else sides[::-1]):
            if side == "kproxyd":
                r = run_kproxyd(args, row, path, n, tmpdir)
            elif side == "relay":
                r = run_relay(args, row, path, n, tmpdir)
            else:
                r = run_rdk(args, row, path, n, tmpdir)
            runs[side].append(r)
            progress(row.name, side, rep, r)
    res = {"what": row.what, "size": row.size, "messages": n,
           "runs": runs}
    for side in ("kproxyd", "librdkafka", "relay"):
        res[side] = median_of(runs[side]) if runs[side] else None
    res["ratios"] = ratios(res["kproxyd"], res["librdkafka"])
    if prof and prof.mode and "kproxyd" in sides:
        pn, loops = prof.messages(n)
        r = run_kproxyd(args, row, path, pn, tmpdir, prof=prof, loops=loops)
        print("  %-9s profile run (%s, %d msgs): %.0f msgs/s" % (
            row.name, prof.mode, r["messages"], r["msgs_s"]), flush=True)
        prof.report(row, args.kproxyd)
    return res


def measure_latency(args, tmpdir):
    row = Row(LATENCY_ROW, "latency", acks="all", receipts=True)
    total = int(args.rate * args.latency_seconds)
    path = input_file(args, total, row.size)
    runs = {"kproxyd": [], "librdkafka": []}
    sides = ["kproxyd", "librdkafka"] if args.side == "both" else \
        [args.side]
    for rep in range(args.repeat):
        for side in (sides if rep % 2 == 0 else sides[::-1]):
            if side == "kproxyd":
                r = run_kproxyd(args, row, path, total, tmpdir,
                                rate=args.rate)
            else:
                r = run_rdk(args, row, path, total, tmpdir, rate=args.rate)
            runs[side].append(r)
            progress(LATENCY_ROW, side, rep, r)
    out = {"runs": runs}
    for side in ("kproxyd", "librdkafka"):
        out[side] = median_of(runs[side]) if runs[side] else None
    return out


def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    raise_nofile()
    info = machine_info(args)
    print("== machine: %s, nproc %s, kernel %s" % (
        info["cpu"], info["nproc"], info["kernel"]))
    print("== librdkafka %s, %s" % (info["librdkafka"], info["kproxyd"]))
    print("== load average at start: %s" % info["loadavg_start"], flush=True)
    prof = Profiler(args) if args.profile else None
    if prof:
        print("== profiling with %s" % (prof.mode or "nothing (neither perf "
                                        "nor valgrind works here)"))
    tmpdir = tempfile.mkdtemp(prefix="kpbench.")
    t_start = time.monotonic()
    try:
        results = {}
        for row in args.row_list:
            if not row.enabled:
                print("  note: row %s is off by default: %s" % (row.name,
                                                                row.note))
            results[row.name] = measure_row(args, row, tmpdir, prof)
        lat = measure_latency(args, tmpdir) if args.latency else None
        info["loadavg_end"] = loadavg()
        tl = targets(results, lat)
        report(args, results, lat, tl)
        if prof and prof.reports:
            print()
            print("== profiles (%s; kept in %s)" % (prof.mode, prof.dir))
            for name, text in prof.reports.items():
                print("-- %s: %s" % (name, results[name]["what"]))
                print(text)
        print("\n== load average at start: %s, at end: %s; the benchmark "
              "took %.0f s" % (info["loadavg_start"], info["loadavg_end"],
                               time.monotonic() - t_start))
        if args.json:
            os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
            with open(args.json, "w") as f:
                json.dump({"machine": info,
                           "args": {k: v for k, v in vars(args).items()
                                    if k != "row_list"},
                           "rows": results, "latency": lat,
                           "targets": [{"row": r, "target": t, "value": v,
                                        "verdict": verdict(ok).strip()}
                                       for r, t, v, ok in tl],
                           "profiles": prof.reports if prof else {}},
                          f, indent=2)
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
