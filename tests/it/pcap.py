"""pcap - a minimal pcap writer for the tests (standard library only).

Writes TCP streams as Ethernet/IPv4/TCP packets (a three-way handshake,
then the payload in segments of at most `mss` bytes, with consistent
sequence and acknowledgement numbers) so that Wireshark's TCP reassembly
and an application dissector (`-d tcp.port==N,kafka`) see a normal
conversation.

    with PcapWriter(path) as w:
        s = w.stream(client_port=40001, server_port=9092)
        s.send("c2s", request_bytes, t=0.001)
        s.send("s2c", response_bytes, t=0.002)
"""

import struct

CLIENT_IP = bytes([10, 0, 0, 1])
SERVER_IP = bytes([10, 0, 0, 2])
CLIENT_MAC = bytes([0x02, 0, 0, 0, 0, 1])
SERVER_MAC = bytes([0x02, 0, 0, 0, 0, 2])

TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10


def _ip_checksum(hdr):
    s = 0
    for i in range(0, len(hdr), 2):
        s += (hdr[i] << 8) | hdr[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _tcp_checksum(src, dst, seg):
    pseudo = src + dst + struct.pack(">BBH", 0, 6, len(seg))
    data = pseudo + seg + (b"\0" if len(seg) % 2 else b"")
    return _ip_checksum(data)


class TcpStream:
    def __init__(self, writer, client_port, server_port, t):
        self.w = writer
        self.ports = {"c2s": (client_port, server_port),
                      "s2c": (server_port, client_port)}
        self.seq = {"c2s": 1000, "s2c": 5000}
        self.ip_id = 1
        self._packet("c2s", TCP_SYN, b"", t, ack=False)
        self.seq["c2s"] += 1
        self._packet("s2c", TCP_SYN | TCP_ACK, b"", t)
        self.seq["s2c"] += 1
        self._packet("c2s", TCP_ACK, b"", t)

    def _packet(self, direction, flags, payload, t, ack=True):
        other = "s2c" if direction == "c2s" else "c2s"
        sport, dport = self.ports[direction]
        src, dst = (CLIENT_IP, SERVER_IP) if direction == "c2s" else \
            (SERVER_IP, CLIENT_IP)
        smac, dmac = (CLIENT_MAC, SERVER_MAC) if direction == "c2s" else \
            (SERVER_MAC, CLIENT_MAC)
        tcp = bytearray(struct.pack(
            ">HHIIBBHHH", sport, dport, self.seq[direction] & 0xFFFFFFFF,
            self.seq[other] & 0xFFFFFFFF if ack else 0, 5 << 4, flags,
            65535, 0, 0)) + payload
        struct.pack_into(">H", tcp, 16, _tcp_checksum(src, dst, bytes(tcp)))
        ip = bytearray(struct.pack(
            ">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), self.ip_id, 0x4000, 64,
            6, 0, src, dst))
        self.ip_id += 1
        struct.pack_into(">H", ip, 10, _ip_checksum(bytes(ip)))
        self.w.packet(dmac + smac + b"\x08\x00" + bytes(ip) + bytes(tcp), t)

    def send(self, direction, data, t):
        """Payload bytes in one direction, split into segments."""
        mss = self.w.mss
        for off in range(0, len(data), mss):
            chunk = data[off:off + mss]
            self._packet(direction, TCP_PSH | TCP_ACK, chunk, t)
            self.seq[direction] += len(chunk)


class PcapWriter:
    def __init__(self, path, mss=16000, base_time=1700000000.0):
        self.f = open(path, "wb")
        self.mss = mss
        self.base = base_time
        self.count = 0
        # Global header: microsecond pcap v2.4, Ethernet.
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0,
                                 262144, 1))

    def packet(self, frame, t):
        ts = self.base + t
        sec = int(ts)
        usec = int((ts - sec) * 1e6)
        self.f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
        self.f.write(frame)
        self.count += 1

    def stream(self, client_port, server_port, t=0.0):
        return TcpStream(self, client_port, server_port, t)

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
