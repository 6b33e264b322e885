"""notify_listener - a stand-in for systemd's end of the sd_notify protocol
(standard library only).

    with NotifyListener(t.path("notify.sock")) as nl:   # or "@name"
        k = t.kproxyd(c, env={"NOTIFY_SOCKET": nl.address,
                              "WATCHDOG_USEC": "200000"})
        nl.wait_for(lambda m: m.get("READY") == "1")
        nl.messages  ->  [(monotonic time received, {"READY": "1", ...}), ...]

A thread receives the datagrams; each one is parsed into a dict of its
VAR=value lines (a repeated variable keeps its last value).
"""

import os
import socket
import threading
import time

import kptest


def parse(datagram):
    msg = {}
    for line in datagram.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        assert "=" in line, "notify line without '=': %r" % line
        name, _, value = line.partition("=")
        msg[name] = value
    return msg


class NotifyListener:
    def __init__(self, address):
        """address: a filesystem path, or "@name" for the abstract
        namespace (as $NOTIFY_SOCKET spells them)."""
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if address.startswith("@"):
            self.sock.bind("\0" + address[1:])
        else:
            self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages = []
        self.raw = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self._lock:
                self.raw.append(data)
                self.messages.append((now, parse(data)))

    def snapshot(self):
        """[(time, dict)] received so far."""
        with self._lock:
            return list(self.messages)

    def find(self, pred, start=0):
        """Index of the first message from `start` on for which pred(dict)
        holds, or None."""
        msgs = self.snapshot()
        for i in range(start, len(msgs)):
            if pred(msgs[i][1]):
                return i
        return None

    def wait_for(self, pred, start=0, timeout=10, what="a notification"):
        """Waits for a message from index `start` on matching pred; returns
        its index."""
        return kptest.wait_for(
            lambda: (lambda i: None if i is None else i + 1)(
                self.find(pred, start)),
            timeout, what) - 1

    def close(self):
        self._stop = True
        self._thread.join(5)
        self.sock.close()
        if not self.address.startswith("@"):
            try:
                os.unlink(self.address)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
