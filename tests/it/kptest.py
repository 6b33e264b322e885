"""kptest - the integration-test harness for kproxyd (standard library only).

A test is a function `test_NAME(t)` in tests/it/test_*.py; run.py calls it
with a `T` (below) holding a fresh temporary directory, and tears down
whatever the test started through it, even when the test fails.

    def test_example(t):
        c = t.cluster(topics={"orders": 3})          # kp_mock, 3 brokers
        k = t.kproxyd(c, {"producer": {"acks": 1}})  # started, listening
        r = send(k.sock, b"orders hello\\n")          # half-close, summary
        assert r == {"delivered": 1, "failed": 0, "rejected": 0}
        msgs = t.consume(c, ["orders"], expected=1)   # kp_consume
        assert msgs[0]["value"] == b"hello"
        assert k.stop() == 0

Pieces:
  Cluster(tools, brokers=3, topics={name: partitions | (partitions, rf)})
      .bootstrap "h:p,h:p"  .brokers ["h:p", ...]  .partitions {name: n}
      .cmd("down 1") -> reply (asserts OK)   .stop()   context manager
  Kproxyd(binary, cluster, overrides, tmpdir, dead_letter=False, ...)
      writes tmpdir/NAME.json, starts `binary -c` it, waits for the
      listeners; .sock (first listener), .listener_paths, .control(cmd),
      .control_lines(cmd, until), .stats(), .send_signal(sig),
      .wait(timeout), .stop(sig, timeout) -> exit code, .log_text(),
      .log_tail(), .check_log(), .dead_letter_lines()
  send(path, data, half_close=True) -> {"delivered","failed","rejected"}
  connect(path) -> socket, read_summary(sock) -> dict (for open clients)
  send_many(path, [data, ...]) -> [summary, ...] (one thread a client)
  run_threads([fn, ...]) -> [result, ...]
  consume(tools, cluster, topics, expected=None) -> [message dict]
      (bring brokers back up first: kp_consume reads from the leaders)
  check_delivery(msgs, expected, ident, partitions): exactly once,
      byte-exact, murmur2 partitions, per-source order
  stats_quiet(k): stats once nothing is queued or in flight
  murmur2(bytes) -> signed int (Java's Utils.murmur2),
  murmur2_partition(key, n) -> the Java producer's partition for a key
  wait_for(predicate, timeout, what)

Timeouts are multiplied by SCALE (3 when the binary is built with ASan, or
$KP_IT_SCALE), because the sanitized daemon is slower.
"""

import base64
import copy
import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
import threading
import time

# Set by run.py (paths of the binaries under test).
KPROXYD = "build/kproxyd"
TOOLS = "build/tools"
SCALE = 1.0

class Skip(Exception):
    """Raised by a test that cannot run here (reported as SKIP)."""


SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "runtime error:",
                      "LeakSanitizer",
                      # valgrind memcheck (make valgrind)
                      "Invalid read of size", "Invalid write of size",
                      "definitely lost in", "indirectly lost in",
                      "uninitialised value", "Invalid free")
SUMMARY_RE = re.compile(rb"^delivered=(\d+) failed=(\d+) rejected=(\d+)\n$")


def configure(kproxyd, tools):
    """Called by run.py: binaries under test and the timeout scale."""
    global KPROXYD, TOOLS, SCALE
    KPROXYD = kproxyd
    TOOLS = tools
    scale = os.environ.get("KP_IT_SCALE")
    if scale:
        SCALE = float(scale)
    elif os.environ.get("KPROXYD_WRAPPER"):
        SCALE = 10.0  # valgrind
    elif is_asan_binary(kproxyd):
        SCALE = 3.0
    else:
        SCALE = 1.0


def is_asan_binary(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"libasan.so" in data or b"__asan_init" in data


def tmo(seconds):
    """A timeout scaled for the build under test."""
    return seconds * SCALE


def wait_for(pred, timeout=10.0, what="condition", interval=0.02):
    """Polls pred() until it returns a true value (returned) or fails."""
    deadline = time.monotonic() + tmo(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


# --------------------------------------------------------------------------
# Java's murmur2 partitioner (org.apache.kafka.common.utils.Utils.murmur2)

def murmur2(data):
    """Java's Utils.murmur2 over bytes, as the signed 32-bit int it returns."""
    m32 = 0xFFFFFFFF
    length = len(data)
    m = 0x5BD1E995
    r = 24
    h = (0x9747B28C ^ length) & m32
    for i in range(length // 4):
        i4 = i * 4
        k = (data[i4] | data[i4 + 1] << 8 | data[i4 + 2] << 16 |
             data[i4 + 3] << 24)
        k = (k * m) & m32
        k ^= k >> r
        k = (k * m) & m32
        h = (h * m) & m32
        h ^= k
    rem = length % 4
    idx = length & ~3
    if rem == 3:
        h ^= data[idx + 2] << 16
    if rem >= 2:
        h ^= data[idx + 1] << 8
    if rem >= 1:
        h ^= data[idx]
        h = (h * m) & m32
    h ^= h >> 13
    h = (h * m) & m32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_partition(key, partitions):
    """The partition the Java producer picks for a non-null key."""
    if isinstance(key, str):
        key = key.encode()
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# Kafka's own vectors (UtilsTest.testMurmur2).
MURMUR2_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


def murmur2_self_test():
    for data, want in MURMUR2_VECTORS:
        got = murmur2(data)
        assert got == want, "murmur2(%r) = %d, want %d" % (data, got, want)


murmur2_self_test()


# --------------------------------------------------------------------------
# Line reader over a pipe with a timeout

class _PipeReader:
    def __init__(self, fileobj):
        self.fd = fileobj.fileno()
        self.buf = b""

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out reading a line")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise AssertionError("unexpected EOF (process died?) "
                                     "after %r" % self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("utf-8", "replace")


# --------------------------------------------------------------------------
# Mock cluster

class Cluster:
    """A kp_mock process: a librdkafka mock cluster driven over stdin."""

    def __init__(self, tools=None, brokers=3, topics=None, tmpdir=None,
                 debug=None):
        tools = tools or TOOLS
        self.partitions = {}
        argv = [os.path.join(tools, "kp_mock"), "-b", str(brokers)]
        for name, spec in (topics or {}).items():
            if isinstance(spec, tuple):
                parts, rf = spec
            else:
                parts, rf = spec, 1
            argv += ["-t", "%s:%d:%d" % (name, parts, rf)]
            self.partitions[name] = parts
        if debug:
            argv += ["-d", debug]
        self.log_path = (os.path.join(tmpdir, "kp_mock.log") if tmpdir
                         else None)
        errf = open(self.log_path, "wb") if self.log_path else None
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=errf if errf else subprocess.DEVNULL)
        finally:
            if errf:
                errf.close()
        self._out = _PipeReader(self.proc.stdout)
        self._lock = threading.Lock()
        line = self._out.readline(tmo(15))
        assert line.startswith("BOOTSTRAP "), "kp_mock said %r" % line
        self.bootstrap = line.split(" ", 1)[1].strip()
        self.brokers = self.bootstrap.split(",")
        line = self._out.readline(tmo(15))
        assert line == "READY", "kp_mock said %r" % line

    def broker_addr(self, broker_id):
        """host, port of broker ID (ids start at 1, in bootstrap order)."""
        host, port = self.brokers[broker_id - 1].rsplit(":", 1)
        return host, int(port)

    def cmd(self, command, ok=True):
        """Sends one command line; returns the reply. Asserts OK unless
        ok=False (then the reply, OK or ERR, is returned as it is)."""
        with self._lock:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
            reply = self._out.readline(tmo(15))
        if ok:
            assert reply == "OK" or reply.startswith("OK "), \
                "kp_mock: %r -> %r" % (command, reply)
        return reply

    def create_topic(self, name, partitions, rf=1):
        self.cmd("create %s %d %d" % (name, partitions, rf))
        self.partitions[name] = partitions

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(tmo(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------
# kproxyd

def _merge(base, over):
    """Deep merge for dicts (producer, topics, ...); other values replace."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


class Kproxyd:
    """A kproxyd process with a generated configuration.

    overrides are merged into the default configuration (dicts deeply,
    other values replace: give `listeners` in full). A listener `path`
    without a '/' is taken relative to tmpdir. dead_letter=True sets
    `dead_letter` to tmpdir/NAME.deadletter.jsonl. `control` is
    tmpdir/NAME.control.sock unless overridden (None disables it).
    """

    _seq = 0

    def __init__(self, binary, cluster, overrides=None, tmpdir=None,
                 dead_letter=False, args=(), env=None, start=True,
                 wait=True, name=None, wrapper=None):
        assert tmpdir, "Kproxyd needs a tmpdir"
        self.wrapper = list(wrapper or [])
        Kproxyd._seq += 1
        self.name = name or ("kproxyd%d" % Kproxyd._seq)
        self.binary = binary or KPROXYD
        self.tmpdir = tmpdir
        self.conf_path = os.path.join(tmpdir, self.name + ".json")
        self.log_path = os.path.join(tmpdir, self.name + ".log")
        self.out_path = os.path.join(tmpdir, self.name + ".out")
        conf = {
            "brokers": list(cluster.brokers) if cluster else
            ["127.0.0.1:1"],
            "listeners": [{
                "path": os.path.join(tmpdir, self.name + ".sock"),
                "format": "topic,value",
            }],
            "control": os.path.join(tmpdir, self.name + ".control.sock"),
            "log_level": "debug",
            "shutdown_timeout_ms": int(tmo(15) * 1000),
        }
        if dead_letter:
            conf["dead_letter"] = os.path.join(
                tmpdir, self.name + ".deadletter.jsonl")
        _merge(conf, overrides or {})
        for lst in conf.get("listeners") or []:
            if "path" in lst and "/" not in lst["path"]:
                lst["path"] = os.path.join(tmpdir, lst["path"])
        self.conf = conf
        with open(self.conf_path, "w") as f:
            json.dump(conf, f, indent=2)
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("JOURNAL_STREAM", None)
        self.env.pop("WATCHDOG_USEC", None)
        self.env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        self.env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        self.env.update(env or {})
        self.proc = None
        self.returncode = None
        if start:
            self.start(wait=wait)

    # properties ---------------------------------------------------------

    @property
    def listener_paths(self):
        return [lst["path"] for lst in self.conf.get("listeners") or []]

    @property
    def sock(self):
        """Path of the first listener."""
        return self.listener_paths[0]

    @property
    def control_path(self):
        return self.conf.get("control")

    @property
    def dead_letter_path(self):
        return self.conf.get("dead_letter")

    # process ------------------------------------------------------------

    def start(self, wait=True):
        with open(self.log_path, "ab") as err, \
                open(self.out_path, "ab") as out:
            # KPROXYD_WRAPPER (make valgrind): a command kproxyd runs under.
            wrapper = self.wrapper or \
                os.environ.get("KPROXYD_WRAPPER", "").split()
            self.proc = subprocess.Popen(
                wrapper + [self.binary, "-c", self.conf_path] + self.args,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=self.env)
        self.returncode = None
        if wait:
            self.wait_ready()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _can_connect(self, path):
        try:
            st = os.stat(path)
        except OSError:
            return False
        if not stat.S_ISSOCK(st.st_mode):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(1)
            s.connect(path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def wait_ready(self, timeout=15):
        """Waits until the control socket and every listener accept."""
        paths = list(self.listener_paths)
        if self.control_path:
            paths.insert(0, self.control_path)
        deadline = time.monotonic() + tmo(timeout)
        while paths:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "kproxyd exited with %d during start-up:\n%s"
                    % (self.proc.returncode, self.log_tail()))
            if self._can_connect(paths[0]):
                paths.pop(0)
                continue
            if time.monotonic() > deadline:
                raise AssertionError("kproxyd: %s never accepted:\n%s"
                                     % (paths[0], self.log_tail()))
            time.sleep(0.02)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        """Waits for the process to exit; returns its exit code."""
        try:
            self.returncode = self.proc.wait(tmo(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("kproxyd did not exit within %ss:\n%s"
                                 % (tmo(timeout), self.log_tail()))
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=30, check_log=True):
        """Sends sig, waits for the exit, checks the log for sanitizer
        reports; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.wait(timeout)
        assert self.proc.poll() is not None, "kproxyd still running"
        if check_log:
            self.check_log()
        return rc

    def kill(self):
        """Cleanup: SIGKILL if still running (no checks)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # logs ---------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=60):
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])

    def sanitizer_report(self):
        text = self.log_text()
        for pat in SANITIZER_PATTERNS:
            i = text.find(pat)
            if i >= 0:
                return text[max(0, i - 200):i + 6000]
        return None

    def check_log(self):
        rep = self.sanitizer_report()
        assert rep is None, "sanitizer report in kproxyd's log:\n" + rep

    def dead_letter_lines(self):
        """The dead-letter file, parsed (one JSON object a line)."""
        if not self.dead_letter_path or \
                not os.path.exists(self.dead_letter_path):
            return []
        with open(self.dead_letter_path, "rb") as f:
            return [json.loads(line) for line in f if line.strip()]

    # control socket -----------------------------------------------------

    def _control_sock(self, timeout):
        assert self.control_path, "no control socket configured"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(tmo(timeout))
        s.connect(self.control_path)
        return s

    def control_lines(self, cmd, until=None, timeout=15):
        """Sends cmd; returns the reply lines (without '\\n'): one line,
        or, with `until`, every line up to and including that one."""
        s = self._control_sock(timeout)
        try:
            s.sendall(cmd.encode() + b"\n")
            buf = b""
            lines = []
            while True:
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    lines.append(line.decode("utf-8", "replace"))
                    if until is None or lines[-1] == until:
                        return lines
                chunk = s.recv(65536)
                if not chunk:
                    raise AssertionError(
                        "control %r: connection closed after %r"
                        % (cmd, lines + [buf]))
                buf += chunk
        finally:
            s.close()

    def control(self, cmd, timeout=15):
        """One command, its one-line reply."""
        return self.control_lines(cmd, timeout=timeout)[0]

    def stats(self):
        reply = self.control("stats")
        try:
            return json.loads(reply)
        except ValueError as e:
            raise AssertionError("stats is not JSON (%s): %r" % (e, reply))


# --------------------------------------------------------------------------
# Clients

def connect(path, timeout=30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(tmo(timeout))
    s.connect(path)
    return s


def read_summary(s):
    """Reads until EOF; asserts exactly one `delivered=N failed=F
    rejected=R` line came; returns it as a dict."""
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    m = SUMMARY_RE.match(buf)
    assert m, "bad or missing summary line: %r" % buf
    return {"delivered": int(m.group(1)), "failed": int(m.group(2)),
            "rejected": int(m.group(3))}


def send(path, data, half_close=True, timeout=60):
    """Connects to the listener at path and writes data. half_close: shut
    the writing side down and return the summary as a dict; otherwise close
    both ways and return None."""
    s = connect(path, timeout)
    try:
        s.sendall(data)
        if not half_close:
            return None
        s.shutdown(socket.SHUT_WR)
        return read_summary(s)
    finally:
        s.close()


def run_threads(fns, timeout=120):
    """Runs each fn() in its own thread at the same time; returns their
    results in order, re-raising the first exception."""
    results = [None] * len(fns)
    errors = [None] * len(fns)
    start = threading.Barrier(len(fns)) if fns else None

    def runner(i, fn):
        try:
            start.wait(tmo(30))
            results[i] = fn()
        except BaseException as e:  # noqa: reported below
            errors[i] = e

    threads = [threading.Thread(target=runner, args=(i, fn), daemon=True)
               for i, fn in enumerate(fns)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + tmo(timeout)
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
        if th.is_alive():
            raise AssertionError("client thread still running after %ss"
                                 % tmo(timeout))
    for e in errors:
        if e is not None:
            raise e
    return results


def send_many(path, datas, half_close=True, timeout=120):
    """One concurrent client per element of datas; returns their
    summaries in order."""
    return run_threads([lambda d=d: send(path, d, half_close, timeout)
                        for d in datas], timeout)


# --------------------------------------------------------------------------
# Reading back

def _b64(v):
    return None if v is None else base64.b64decode(v)


def consume(tools, cluster, topics, expected=None, idle_ms=3000,
            max_ms=60000):
    """Reads every message of the topics from the beginning with kp_consume.
    Returns dicts: topic, partition, offset, key (bytes|None), value
    (bytes|None), headers [(name, bytes|None)], timestamp, tstype."""
    tools = tools or TOOLS
    if isinstance(topics, str):
        topics = [topics]
    argv = [os.path.join(tools, "kp_consume"), "-b", cluster.bootstrap,
            "-w", str(int(idle_ms * SCALE)), "-W", str(int(max_ms * SCALE))]
    for topic in topics:
        argv += ["-t", topic]
    if expected is not None:
        argv += ["-n", str(expected)]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=max_ms / 1000.0 * SCALE + tmo(30))
    assert p.returncode == 0, "kp_consume failed (%d): %s" % (
        p.returncode, p.stderr.decode("utf-8", "replace"))
    msgs = []
    for line in p.stdout.splitlines():
        d = json.loads(line)
        d["key"] = _b64(d["key"])
        d["value"] = _b64(d["value"])
        d["headers"] = [(n, _b64(v)) for n, v in d["headers"]]
        msgs.append(d)
    return msgs


def by_partition(msgs):
    """{(topic, partition): [messages in offset order]}"""
    out = {}
    for m in sorted(msgs, key=lambda m: (m["topic"], m["partition"],
                                         m["offset"])):
        out.setdefault((m["topic"], m["partition"]), []).append(m)
    return out


# --------------------------------------------------------------------------
# Per-test context

class T:
    """What a test function gets: a fresh tmpdir, and factories whose
    products are torn down (and checked for sanitizer reports) after the
    test, whatever happened."""

    def __init__(self, name, tmpdir):
        self.name = name
        self.tmpdir = tmpdir
        self.clusters = []
        self.daemons = []

    @property
    def kproxyd_binary(self):
        return KPROXYD

    @property
    def tools(self):
        return TOOLS

    def cluster(self, brokers=3, topics=None, debug=None):
        c = Cluster(TOOLS, brokers=brokers, topics=topics,
                    tmpdir=self.tmpdir, debug=debug)
        self.clusters.append(c)
        return c

    def kproxyd(self, cluster, overrides=None, **kw):
        k = Kproxyd(KPROXYD, cluster, overrides, self.tmpdir, start=False,
                    **{a: v for a, v in kw.items() if a not in ("start", "wait")})
        self.daemons.append(k)
        if kw.get("start", True):
            k.start(wait=kw.get("wait", True))
        return k

    def consume(self, cluster, topics, expected=None, idle_ms=3000,
                max_ms=60000):
        return consume(TOOLS, cluster, topics, expected, idle_ms, max_ms)

    def path(self, name):
        return os.path.join(self.tmpdir, name)

    def diagnostics(self):
        """Log tails of every kproxyd, for a failure report."""
        out = []
        for k in self.daemons:
            out.append("---- %s log tail (%s) ----\n%s"
                       % (k.name, k.log_path, k.log_tail()))
        return "\n".join(out)

    def teardown(self):
        """Stops everything; returns a list of problems (sanitizer reports,
        a daemon that would not stop)."""
        problems = []
        for k in self.daemons:
            if k.running():
                k.proc.send_signal(signal.SIGTERM)
                try:
                    k.proc.wait(tmo(20))
                except subprocess.TimeoutExpired:
                    problems.append("%s ignored SIGTERM at teardown" % k.name)
                    k.kill()
            rep = k.sanitizer_report()
            if rep:
                problems.append("%s: sanitizer report:\n%s" % (k.name, rep))
        for c in self.clusters:
            c.stop()
        return problems


# --------------------------------------------------------------------------
# Checks shared by the tests

def check_delivery(msgs, expected, ident, partitions=None, keyed_murmur2=True):
    """Asserts that msgs (from consume) hold every expected message exactly
    once and nothing else:
      expected  {(source, seq): (topic, key|None, value)}
      ident     message dict -> (source, seq), or None for a foreign one
      partitions {topic: partition count}: keyed messages must be on the
                partition Java's murmur2 picks (when keyed_murmur2)
    and that within each partition a source's messages keep their order
    (seq increasing with the offset)."""
    seen = {}
    for m in msgs:
        i = ident(m)
        assert i is not None, "unexpected message %r" % (m,)
        assert i in expected, "message not sent: %r" % (m,)
        assert i not in seen, "duplicate: %r and %r" % (seen[i], m)
        seen[i] = m
        topic, key, value = expected[i]
        assert m["topic"] == topic, (i, m["topic"], topic)
        assert m["key"] == key, (i, m["key"], key)
        assert m["value"] == value, (i, m["value"], value)
        if key is not None and partitions and keyed_murmur2:
            want = murmur2_partition(key, partitions[topic])
            assert m["partition"] == want, \
                "key %r: partition %d, murmur2 says %d" % (
                    key, m["partition"], want)
    missing = [i for i in expected if i not in seen]
    assert not missing, "%d messages missing, e.g. %r" % (
        len(missing), sorted(missing)[:10])
    for (topic, part), lst in by_partition(msgs).items():
        last = {}
        for m in lst:
            src, seq = ident(m)
            assert last.get(src, -1) < seq, \
                "%s [%d]: source %r seq %d after %d (reordered)" % (
                    topic, part, src, seq, last[src])
            last[src] = seq


def stats_quiet(k, timeout=15):
    """Waits until nothing is queued or in flight; returns those stats."""
    def quiet():
        s = k.stats()
        if s["queued_messages"] == 0 and s["queued_bytes"] == 0 and \
                s["inflight_requests"] == 0:
            return s
        return None
    return wait_for(quiet, timeout, "kproxyd to be idle")
