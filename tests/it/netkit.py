"""netkit - small network fixtures for kproxyd's connection tests
(standard library only): a DNS server that never answers or answers
NXDOMAIN, a TCP port forwarder, a dead port, and readers of kproxyd's log
and /proc figures.

    dns = Dns("silent")              # or "nxdomain"; .port, .queries
    env = {"KPROXYD_TEST_DNS_SERVERS": dns.server}
    fw = Forwarder(("127.0.0.1", 9092), listen=("127.0.0.1", 0))
    fw.addr "127.0.0.1:PORT"  fw.connections  fw.bytes  fw.stop()
    port = dead_port()               # nothing listens there
    log_events(k, regex) -> [(seconds since the first line, match)]

KPROXYD_TEST_DNS_SERVERS is a test-only hook of kproxyd (kp_ctx.c): it
replaces the system's DNS servers for its c-ares resolver.
"""

import os
import re
import socket
import struct
import threading
import time
from datetime import datetime, timezone


class Dns:
    """A UDP DNS server on 127.0.0.1: "silent" reads queries and never
    answers; "nxdomain" answers every query with NXDOMAIN."""

    def __init__(self, mode="silent", host="127.0.0.1", port=0):
        assert mode in ("silent", "nxdomain")
        self.mode = mode
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = "%s:%d" % (self.host, self.port)
        self._stop = False
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.queries += 1
            if self.mode == "nxdomain" and len(q) >= 12:
                # Header: same id, QR=1 RD RA, RCODE 3; the question back.
                qd = struct.unpack(">H", q[4:6])[0]
                head = q[:2] + struct.pack(">HHHHH", 0x8183, qd, 0, 0, 0)
                self.sock.sendto(head + q[12:], peer)

    def stop(self):
        self._stop = True
        self.sock.close()


class Forwarder:
    """Forwards every TCP connection to listen's address to `to`, byte for
    byte (the tests' NAT or SSH tunnel)."""

    def __init__(self, to, listen=("127.0.0.1", 0)):
        self.to = to
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(listen)
        self.lsock.listen(64)
        self.host, self.port = self.lsock.getsockname()[:2]
        self.addr = "%s:%d" % (self.host, self.port)
        self.connections = 0
        self.bytes = 0
        self.lock = threading.Lock()
        self.socks = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.to, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.connections += 1
                self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b),
                                 daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.bytes += len(data)
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self._stop = True
        self.lsock.close()
        with self.lock:
            for s in self.socks:
                s.close()


def dead_port(host="127.0.0.1"):
    """A TCP port on host where nothing listens (connects are refused)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_port_on(*hosts):
    """A port number free on every one of hosts (TCP)."""
    for _ in range(50):
        port = dead_port(hosts[0])
        ok = True
        for h in hosts[1:]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((h, port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return port
    raise AssertionError("no port free on %r" % (hosts,))


LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def log_events(k, regex):
    """[(wall time in seconds, match)] for the lines of k's log matching
    regex (re.search), from their ISO-8601 timestamps."""
    out = []
    rx = re.compile(regex)
    for line in k.log_text().splitlines():
        m = LOG_TS.match(line)
        r = rx.search(line)
        if m and r:
            ts = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
            out.append((ts.replace(tzinfo=timezone.utc).timestamp(), r))
    return out


def proc_status(pid):
    """VmRSS, VmHWM, ... of pid in bytes."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.startswith("Vm"):
                out[name] = int(rest.split()[0]) * 1024
    return out


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Samples a process's RSS (peak) and CPU between start() and stop()."""

    def __init__(self, pid, every=0.05):
        self.pid = pid
        self.every = every
        self.peak_rss = 0
        self._stop = False
        self._th = None

    def start(self):
        self.t0 = time.monotonic()
        self.cpu0 = cpu_seconds(self.pid)
        self.rss0 = proc_status(self.pid)["VmRSS"]
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()
        return self

    def _run(self):
        while not self._stop:
            try:
                self.peak_rss = max(self.peak_rss,
                                    proc_status(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            time.sleep(self.every)

    def stop(self):
        self._stop = True
        self._th.join()
        self.elapsed = time.monotonic() - self.t0
        self.cpu = (cpu_seconds(self.pid) - self.cpu0) / self.elapsed
        return self
