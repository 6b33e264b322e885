"""receipts_client.py - one kproxyd connection with receipts: send()
returns a Future of (partition, offset) that may raise KproxydError.
Usage: python3 receipts_client.py SOCKET < lines (prints their fates)"""
import socket
import sys
import threading
from concurrent.futures import Future


class KproxydError(Exception):
    """`failed REASON` or `rejected REASON`."""


class Producer:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.pending, self.sent, self.lock = {}, 0, threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def send(self, message: bytes) -> Future:
        """One message in the listener's format: non-empty, no newline."""
        future = Future()
        with self.lock:  # kproxyd numbers messages from 1, in this order
            self.sent += 1
            self.pending[self.sent] = future
            self.sock.sendall(message + b"\n")
        return future

    def close(self):
        """Half-closes; returns once every message has its fate."""
        self.sock.shutdown(socket.SHUT_WR)
        self.reader.join()
        self.sock.close()

    def _read(self):  # ok N PARTITION OFFSET | failed N WHY | rejected N WHY
        for line in self.sock.makefile("rb"):
            kind, n, *rest = line.decode().split()
            future = self.pending.pop(int(n), None) if n.isdigit() else None
            if future and kind == "ok":
                future.set_result((int(rest[0]), int(rest[1])))
            elif future:  # (the summary line at the end has no N)
                future.set_exception(KproxydError(kind + " " + rest[0]))


if __name__ == "__main__":
    producer = Producer(sys.argv[1])
    lines = sys.stdin.buffer.read().split(b"\n")
    sent = [(m, producer.send(m)) for m in lines if m]  # (no empty ones)
    producer.close()
    for message, future in sent:
        text = message.decode(errors="replace")
        try:
            print("ok %d %d" % future.result(), text)
        except KproxydError as e:
            print("error", e, text)
