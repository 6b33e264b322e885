"""fake_broker - a tiny fake Kafka broker that answers with garbage
(standard library only), for tests/it/test_hostile.py.

    fb = FakeBroker(["neg_size", "bad_corr", ...], upstream=("h", port))
    ... kproxyd with brokers [fb.addr] ...
    fb.wait_conns(n)        # n connections have been played out
    fb.results              # [{"scenario", "closed_by_peer", "requests"}]
    fb.stop()

The N-th TCP connection kproxyd makes plays scenarios[N]; once the list
is used up, every further connection is proxied byte for byte to
`upstream` (a real, mock, broker) so that what kproxyd buffered meanwhile
can be delivered; without upstream it is closed at once.

A scenario first speaks enough of the protocol to get where it wants:
  "pre-up" scenarios answer the first ApiVersions request with garbage;
  "up" scenarios complete the handshake (ApiVersions v3 answered with
  UNSUPPORTED_VERSION, then v0 answered properly: Produce v3-7,
  Metadata v1, InitProducerId v0), so that the broker is up, and answer the
  next request (Metadata or InitProducerId, or nothing within 2 s) with
  the garbage.
After the garbage the fake broker waits (up to `linger` seconds) for
kproxyd to close the connection, and records whether it did.
"""

import socket
import struct
import threading
import time

def _frame(body):
    return struct.pack(">i", len(body)) + body


def _av_v0_body():
    apis = [(0, 3, 7), (3, 1, 1), (22, 0, 0)]
    body = struct.pack(">hi", 0, len(apis))
    for key, lo, hi in apis:
        body += struct.pack(">hhh", key, lo, hi)
    return body


# name: (needs the handshake first, the garbage as a function of the
#        correlation id to answer, what the fake broker does next: "wait"
#        for kproxyd to close, or "close" itself)
SCENARIOS = {
    # A negative response size.
    "neg_size": (True, lambda corr: struct.pack(">i", -7) + b"\0" * 16,
                 "wait"),
    # A size far beyond any real response (2 GiB - 16).
    "huge_size": (True, lambda corr: struct.pack(">i", 0x7FFFFFF0) +
                  b"\0" * 16, "wait"),
    # A size too small to hold even the correlation id.
    "short_size": (True, lambda corr: struct.pack(">i", 2) + b"\0" * 16,
                   "wait"),
    # A well-formed frame for a request never made.
    "bad_corr": (True, lambda corr: _frame(struct.pack(">i", corr + 1000) +
                                           b"\0" * 32), "wait"),
    # ApiVersions v3: a compact array count (2^31) far beyond the bytes.
    "av_count_v3": (False, lambda corr: _frame(
        struct.pack(">ih", corr, 0) + b"\x80\x80\x80\x80\x08" +
        struct.pack(">hhh", 0, 3, 7)), "wait"),
    # A Metadata/InitProducerId answer whose first array count (2^30)
    # is larger than the bytes left.
    "body_count": (True, lambda corr: _frame(
        struct.pack(">ii", corr, 0x40000000) + b"\0" * 10), "close"),
    # A frame that claims 60 MiB (under kproxyd's frame limit) of which
    # only 4 KiB ever come: the request must time out, and kproxyd must
    # not allocate what the size claims.
    "big_claim": (True, lambda corr: struct.pack(">i", 60 << 20) +
                  b"\0" * 4096, "wait"),
    # A frame cut short by the broker closing the connection.
    "truncated": (True, lambda corr: struct.pack(">i", 100) + b"\0" * 10,
                  "close"),
}


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_request(s):
    """(api_key, api_version, correlation_id) of the next request, or None
    at EOF/timeout."""
    try:
        hdr = _recv_exact(s, 4)
        if hdr is None:
            return None
        (size,) = struct.unpack(">i", hdr)
        if size < 8 or size > (64 << 20):
            return None
        body = _recv_exact(s, size)
        if body is None:
            return None
    except (socket.timeout, OSError):
        return None
    return struct.unpack(">hhi", body[:8])


class FakeBroker:
    def __init__(self, scenarios, upstream=None, linger=5.0,
                 request_wait=2.0):
        for name in scenarios:
            assert name in SCENARIOS, name
        self.scenarios = list(scenarios)
        self.upstream = upstream
        self.linger = linger
        self.request_wait = request_wait
        self.results = []
        self.conns = 0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.stopping = False
        self.socks = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                i = self.conns
                self.conns += 1
                self.socks.append(s)
            if i < len(self.scenarios):
                fn, arg = self._play, self.scenarios[i]
            else:
                fn, arg = self._proxy, None
            threading.Thread(target=fn, args=(s, arg), daemon=True).start()

    def _handshake(self, s):
        """ApiVersions v3 -> UNSUPPORTED_VERSION, v0 -> a proper answer.
        Returns False if kproxyd did something else."""
        req = read_request(s)
        if req is None or req[0] != 18:
            return False
        if req[1] > 0:
            s.sendall(_frame(struct.pack(">ih", req[2], 35)))
            req = read_request(s)
            if req is None or req[0] != 18 or req[1] != 0:
                return False
        s.sendall(_frame(struct.pack(">i", req[2]) + _av_v0_body()))
        return True

    def _play(self, s, name):
        handshake, garbage, after = SCENARIOS[name]
        res = {"scenario": name, "closed_by_peer": False, "requests": [],
               "handshake": None}
        s.settimeout(self.request_wait)
        try:
            if handshake:
                res["handshake"] = self._handshake(s)
            req = read_request(s)
            if req is not None:
                res["requests"].append(req)
            corr = req[2] if req else 424242
            s.sendall(garbage(corr))
            if after == "close":
                time.sleep(0.2)
                s.shutdown(socket.SHUT_RDWR)
            else:
                # Wait for kproxyd to close; drain whatever it still sends.
                deadline = time.monotonic() + self.linger
                s.settimeout(0.1)
                while time.monotonic() < deadline:
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        res["closed_by_peer"] = True
                        break
        except OSError as e:
            # ECONNRESET: kproxyd closed with unread data - closed too.
            res["closed_by_peer"] = True
            res["error"] = str(e)
        finally:
            s.close()
            with self.cond:
                self.results.append(res)
                self.cond.notify_all()

    def _proxy(self, s, _):
        if not self.upstream:
            s.close()
            return
        try:
            u = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            s.close()
            return
        u.settimeout(None)
        s.settimeout(None)

        def pump(a, b):
            try:
                while True:
                    chunk = a.recv(65536)
                    if not chunk:
                        break
                    b.sendall(chunk)
            except OSError:
                pass
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        with self.lock:
            self.socks.append(u)
        threading.Thread(target=pump, args=(u, s), daemon=True).start()
        pump(s, u)

    # ------------------------------------------------------------------

    def wait_results(self, n, timeout):
        """Waits until n scenarios have been played out."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.results) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "fake broker: %d of %d scenarios played: %r"
                        % (len(self.results), n, self.results))
                self.cond.wait(left)
            return list(self.results)

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
