"""fake_kafka - a small fake Kafka broker for kproxyd's integration tests
(standard library only).

librdkafka's mock cluster speaks only old protocol versions (Produce <= v7,
Metadata <= v2, ApiVersions <= v2); this broker speaks the flexible ones
too, so the tests can check that kproxyd negotiates with old and modern
brokers alike. Its codecs are written from apache/kafka's message
definitions (clients/src/main/resources/common/message/*.json), with no
code shared with src/kp_proto.c: it is an independent implementation.

    fk = FakeKafka(profile="modern", topics={"t": 3})
    fk.start()                     # listens on 127.0.0.1:<free port>
    ... kproxyd with brokers=fk.brokers ...
    fk.requests                    # every request, decoded (dicts below)
    fk.values("t")                 # [(partition, offset, value)] accepted
    fk.errors                      # protocol violations seen (must be [])
    fk.stop()

One process-local server, one thread per connection, node id 1 (itself),
leading every partition of every topic. What it implements:

- ApiVersions v0..v3: advertises the profile's table (PROFILES below, or a
  dict {api_key: (min, max)}). A request above the advertised ApiVersions
  range gets UNSUPPORTED_VERSION with a v0 body listing the ApiVersions
  range (KIP-511), as Kafka does. v3 responses carry SupportedFeatures,
  FinalizedFeaturesEpoch, FinalizedFeatures and an unknown tagged field.
- Metadata v0..v13: the requested topics (null = all); unknown ones get
  UNKNOWN_TOPIC_OR_PARTITION unless auto_create is set and the request
  allows it. Leader epochs (v7+), topic ids (v10+), top-level error (v13).
- InitProducerId v0..v5: hands out producer ids (a bump keeps the id and
  increments the epoch when v3+ sends the current one).
- Produce v3..v12: decodes every RecordBatch (magic 2, CRC-32C checked,
  record count, offset deltas, lengths), checks idempotent sequences
  (a duplicate gets its first offset back, a gap OUT_OF_ORDER_SEQUENCE),
  remembers every record and answers with base offsets. acks=0 gets no
  response. Errors can be injected per partition (inject_produce_error).
- Flexible versions use request header v2 and response header v1 (not for
  ApiVersions, whose response header is always v0); unknown tagged fields
  in requests are skipped (and recorded), and with unknown_tags=True (the
  default) responses carry an unknown tagged field in the response header,
  the top level and nested structures, to check kproxyd skips them.
- throttle_ms(api_key, ms, count=1): the next `count` responses of that API
  carry throttle_time_ms = ms (sent at once, KIP-219 style: the client is
  expected to hold off the broker itself).

A request the broker does not advertise, at a version outside the
advertised range (ApiVersions aside), or whose body does not parse exactly
(trailing bytes included) is recorded in `errors` and the connection is
closed, as a real broker would.

Each request is recorded as a dict: conn (connection number), api, version,
header_version, corr, client_id, t (time.monotonic() when it was read),
and per API: ApiVersions sw_name/sw_version; Metadata topics (None = all),
allow_auto; InitProducerId txn_id, txn_timeout, producer_id,
producer_epoch; Produce txn_id, acks, timeout, parts {(topic, partition):
[batch dicts]}. Responses are recorded in `responses` (conn, api, version,
corr, t, throttle). `frames` keeps every raw frame (size included) as
(conn, "c2s"|"s2c", bytes, t) for writing a pcap.
"""

import gzip
import re
import socket
import struct
import threading
import time
import uuid

API_PRODUCE = 0
API_METADATA = 3
API_APIVERSIONS = 18
API_INITPID = 22
API_NAMES = {API_PRODUCE: "Produce", API_METADATA: "Metadata",
             API_APIVERSIONS: "ApiVersions", API_INITPID: "InitProducerId"}

# First flexible version of each API (the messages' "flexibleVersions").
FLEXIBLE_FROM = {API_PRODUCE: 9, API_METADATA: 9, API_APIVERSIONS: 3,
                 API_INITPID: 2}
# Highest version this fake can decode and answer.
FAKE_MAX = {API_PRODUCE: 12, API_METADATA: 13, API_APIVERSIONS: 3,
            API_INITPID: 5}

PROFILES = {
    # What kproxyd implements at most: it must pick exactly these tops.
    "modern": {API_APIVERSIONS: (0, 3), API_METADATA: (1, 12),
               API_PRODUCE: (3, 9), API_INITPID: (0, 4)},
    # Newer than kproxyd (Kafka 3.7+/4.0 style): kproxyd must cap.
    "newest": {API_APIVERSIONS: (0, 3), API_METADATA: (0, 13),
               API_PRODUCE: (3, 11), API_INITPID: (0, 5)},
    # Kafka 2.0-like: nothing flexible, ApiVersions v3 unknown.
    "old": {API_APIVERSIONS: (0, 2), API_METADATA: (1, 2),
            API_PRODUCE: (3, 7), API_INITPID: (0, 1)},
    # Kafka 0.10-like: no RecordBatch v2, kproxyd must refuse it.
    "ancient": {API_APIVERSIONS: (0, 1), API_METADATA: (0, 2),
                API_PRODUCE: (0, 2)},
}

ERR_NONE = 0
ERR_CORRUPT_MESSAGE = 2
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_UNSUPPORTED_VERSION = 35
ERR_INVALID_REQUEST = 42
ERR_OUT_OF_ORDER_SEQUENCE = 45
ERR_INVALID_PRODUCER_EPOCH = 47
ERR_UNKNOWN_PRODUCER_ID = 59

UNKNOWN_TAG = 4242          # no Kafka message defines it
UNKNOWN_TAG_DATA = b"\x01fake-unknown-tag"

# ApiVersions v3 client software name/version (ApiVersionsRequest.isValid).
SW_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?$")


class Malformed(Exception):
    """A request that does not parse at the version it claims."""


# --------------------------------------------------------------------------
# CRC-32C (Castagnoli), reflected, as RecordBatch v2 uses

def _crc32c_table():
    tab = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        tab.append(c)
    return tab


_CRC_TAB = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    tab = _CRC_TAB
    for b in data:
        crc = tab[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


# --------------------------------------------------------------------------
# Primitive types (Kafka protocol guide, "Protocol Primitive Types")

class Reader:
    def __init__(self, data):
        self.b = bytes(data)
        self.i = 0

    def left(self):
        return len(self.b) - self.i

    def take(self, n):
        if n < 0 or self.i + n > len(self.b):
            raise Malformed("need %d bytes at %d of %d" % (n, self.i,
                                                           len(self.b)))
        v = self.b[self.i:self.i + n]
        self.i += n
        return v

    def _unpack(self, fmt, n):
        return struct.unpack(fmt, self.take(n))[0]

    def i8(self):
        return self._unpack(">b", 1)

    def boolean(self):
        v = self.i8()
        if v not in (0, 1):
            raise Malformed("boolean %d" % v)
        return bool(v)

    def i16(self):
        return self._unpack(">h", 2)

    def i32(self):
        return self._unpack(">i", 4)

    def u32(self):
        return self._unpack(">I", 4)

    def i64(self):
        return self._unpack(">q", 8)

    def uuid(self):
        return self.take(16)

    def uvarint(self, max_bytes=5):
        v = shift = 0
        for _ in range(max_bytes):
            b = self.take(1)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7
        raise Malformed("varint longer than %d bytes" % max_bytes)

    def varint(self):
        u = self.uvarint(5)
        return (u >> 1) ^ -(u & 1)

    def varlong(self):
        u = self.uvarint(10)
        return (u >> 1) ^ -(u & 1)

    def string(self, flex, nullable=False):
        n = self.uvarint() - 1 if flex else self.i16()
        if n < 0:
            if n == -1 and nullable:
                return None
            raise Malformed("string length %d (nullable=%s)" % (n, nullable))
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise Malformed("string not UTF-8: %s" % e)

    def bytes_(self, flex, nullable=False):
        n = self.uvarint() - 1 if flex else self.i32()
        if n < 0:
            if n == -1 and nullable:
                return None
            raise Malformed("bytes length %d" % n)
        return self.take(n)

    def array_len(self, flex, nullable=False):
        n = self.uvarint() - 1 if flex else self.i32()
        if n < 0:
            if n == -1 and nullable:
                return None
            raise Malformed("array length %d" % n)
        if n > self.left():
            raise Malformed("array of %d with %d bytes left"
                            % (n, self.left()))
        return n

    def tags(self):
        """Tagged fields: {tag: raw bytes}; tags must increase."""
        out = {}
        last = -1
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            if tag <= last:
                raise Malformed("tag %d after %d" % (tag, last))
            last = tag
            out[tag] = self.take(self.uvarint())
        return out


class Writer:
    def __init__(self):
        self.b = bytearray()

    def raw(self, data):
        self.b += data
        return self

    def i8(self, v):
        self.b += struct.pack(">b", v)
        return self

    def boolean(self, v):
        return self.i8(1 if v else 0)

    def i16(self, v):
        self.b += struct.pack(">h", v)
        return self

    def i32(self, v):
        self.b += struct.pack(">i", v)
        return self

    def i64(self, v):
        self.b += struct.pack(">q", v)
        return self

    def uvarint(self, v):
        while v >= 0x80:
            self.b.append((v & 0x7F) | 0x80)
            v >>= 7
        self.b.append(v)
        return self

    def string(self, s, flex):
        if s is None:
            return self.uvarint(0) if flex else self.i16(-1)
        data = s.encode("utf-8")
        if flex:
            self.uvarint(len(data) + 1)
        else:
            self.i16(len(data))
        self.b += data
        return self

    def array_len(self, n, flex):
        return self.uvarint(n + 1) if flex else self.i32(n)

    def tags(self, tags):
        """tags: {tag: bytes}, written in increasing tag order."""
        self.uvarint(len(tags))
        for tag in sorted(tags):
            self.uvarint(tag)
            self.uvarint(len(tags[tag]))
            self.b += tags[tag]
        return self

    def int32_array(self, vals, flex):
        self.array_len(len(vals), flex)
        for v in vals:
            self.i32(v)
        return self


# --------------------------------------------------------------------------
# RecordBatch v2 (the "Record Batch" section of the protocol guide)

def decode_records(data):
    """Every RecordBatch in a Produce partition's records bytes, as dicts:
    base_offset, length, epoch, crc, attributes, codec, last_offset_delta,
    base_ts, max_ts, producer_id, producer_epoch, base_seq, count,
    records [{key, value, headers, ts}] (None when the codec is not one the
    standard library decodes). Raises Malformed on any inconsistency."""
    r = Reader(data)
    batches = []
    if r.left() == 0:
        raise Malformed("empty records")
    while r.left():
        if r.left() < 61:
            raise Malformed("%d trailing bytes after the batches" % r.left())
        bt = {"base_offset": r.i64(), "length": r.i32()}
        if bt["length"] < 49 or bt["length"] > r.left():
            raise Malformed("batch length %d with %d bytes left"
                            % (bt["length"], r.left()))
        body = Reader(r.take(bt["length"]))
        bt["epoch"] = body.i32()
        magic = body.i8()
        if magic != 2:
            raise Malformed("magic %d" % magic)
        bt["crc"] = body.u32()
        crc = crc32c(body.b[body.i:])
        if crc != bt["crc"]:
            raise Malformed("CRC-32C %08x, batch says %08x"
                            % (crc, bt["crc"]))
        bt["attributes"] = body.i16()
        bt["codec"] = bt["attributes"] & 7
        bt["last_offset_delta"] = body.i32()
        bt["base_ts"] = body.i64()
        bt["max_ts"] = body.i64()
        bt["producer_id"] = body.i64()
        bt["producer_epoch"] = body.i16()
        bt["base_seq"] = body.i32()
        bt["count"] = body.i32()
        if bt["count"] <= 0:
            raise Malformed("record count %d" % bt["count"])
        if bt["last_offset_delta"] != bt["count"] - 1:
            raise Malformed("last offset delta %d for %d records"
                            % (bt["last_offset_delta"], bt["count"]))
        payload = body.take(body.left())
        if bt["codec"] == 0:
            recs = payload
        elif bt["codec"] == 1:
            try:
                recs = gzip.decompress(payload)
            except (OSError, EOFError) as e:
                raise Malformed("gzip: %s" % e)
        elif bt["codec"] in (2, 3, 4):
            recs = None     # snappy, lz4, zstd: not in the standard library
        else:
            raise Malformed("codec %d" % bt["codec"])
        bt["records"] = None if recs is None else \
            _decode_record_list(recs, bt)
        batches.append(bt)
    return batches


def _decode_record_list(data, bt):
    r = Reader(data)
    out = []
    for i in range(bt["count"]):
        length = r.varint()
        start = r.i
        rec = {}
        r.i8()                                  # attributes (unused)
        rec["ts"] = bt["base_ts"] + r.varlong()
        if r.varint() != i:
            raise Malformed("record %d: offset delta" % i)
        klen = r.varint()
        rec["key"] = r.take(klen) if klen >= 0 else None
        vlen = r.varint()
        rec["value"] = r.take(vlen) if vlen >= 0 else None
        headers = []
        for _ in range(r.varint()):
            hk = r.take(r.varint()).decode("utf-8")
            hvlen = r.varint()
            headers.append((hk, r.take(hvlen) if hvlen >= 0 else None))
        rec["headers"] = headers
        if r.i - start != length:
            raise Malformed("record %d: length %d, used %d"
                            % (i, length, r.i - start))
        if not bt["base_ts"] <= rec["ts"] <= bt["max_ts"]:
            raise Malformed("record %d: timestamp %d outside [%d, %d]"
                            % (i, rec["ts"], bt["base_ts"], bt["max_ts"]))
        out.append(rec)
    if r.left():
        raise Malformed("%d bytes after the last record" % r.left())
    return out


# --------------------------------------------------------------------------
# The broker

def _topic_id(name):
    return uuid.uuid5(uuid.NAMESPACE_URL, "fake-kafka:" + name).bytes


class FakeKafka:
    def __init__(self, profile="modern", topics=None, auto_create=False,
                 unknown_tags=True, node_id=1):
        self.table = dict(PROFILES[profile] if isinstance(profile, str)
                          else profile)
        for api, (lo, hi) in self.table.items():
            if api in FAKE_MAX:
                assert hi <= FAKE_MAX[api], "fake speaks %s <= v%d" % (
                    API_NAMES[api], FAKE_MAX[api])
        self.topics = dict(topics or {})
        self.auto_create = auto_create
        self.unknown_tags = unknown_tags
        self.node_id = node_id
        self.lock = threading.Lock()
        self.requests = []
        self.responses = []
        self.frames = []
        self.errors = []
        self.log = {}           # (topic, partition) -> [record dict]
        self.seqs = {}          # (pid, topic, partition) -> [(seq, n, off)]
        self.pids = {}          # producer id -> epoch
        self.next_pid = 1000
        self.throttles = {}     # api -> [ms, ...] for the next responses
        self.injected = {}      # (topic, partition) -> [(err, rec_errs, msg)]
        self.sock = None
        self.port = None
        self.conns = []
        self.threads = []
        self.stopping = False

    # ---- control ---------------------------------------------------------

    @property
    def brokers(self):
        return ["127.0.0.1:%d" % self.port]

    @property
    def bootstrap(self):
        return ",".join(self.brokers)

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        th = threading.Thread(target=self._accept_loop, daemon=True)
        th.start()
        self.threads.append(th)
        return self

    def stop(self):
        self.stopping = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for th in self.threads:
            th.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def throttle_ms(self, api, ms, count=1):
        """The next `count` responses of api carry throttle_time_ms=ms."""
        with self.lock:
            self.throttles.setdefault(api, []).extend([ms] * count)

    def inject_produce_error(self, topic, partition, err, record_errors=(),
                             message=None):
        """The next Produce of (topic, partition) is refused with err
        (RecordErrors [(batch_index, message)] and ErrorMessage in v8+)."""
        with self.lock:
            self.injected.setdefault((topic, partition), []).append(
                (err, list(record_errors), message))

    # ---- queries ---------------------------------------------------------

    def reqs(self, api=None, conn=None):
        with self.lock:
            return [r for r in self.requests
                    if (api is None or r["api"] == api) and
                    (conn is None or r["conn"] == conn)]

    def versions(self, api):
        """The set of versions used for api."""
        return sorted({r["version"] for r in self.reqs(api)})

    def records(self, topic=None):
        """[(topic, partition, offset, record dict)] accepted, in order."""
        with self.lock:
            out = []
            for (t, p), recs in sorted(self.log.items()):
                if topic is None or t == topic:
                    out += [(t, p, off, rec) for off, rec in enumerate(recs)]
            return out

    def values(self, topic=None):
        return [rec["value"] for _, _, _, rec in self.records(topic)]

    def record_count(self):
        with self.lock:
            return sum(len(v) for v in self.log.values())

    # ---- connections -----------------------------------------------------

    def _accept_loop(self):
        n = 0
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            n += 1
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns.append(c)
            th = threading.Thread(target=self._serve, args=(c, n),
                                  daemon=True)
            th.start()
            self.threads.append(th)

    @staticmethod
    def _recv_exact(c, n):
        buf = b""
        while len(buf) < n:
            chunk = c.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _error(self, conn, what):
        with self.lock:
            self.errors.append("conn %d: %s" % (conn, what))

    def _serve(self, c, conn):
        try:
            while True:
                size = self._recv_exact(c, 4)
                if size is None:
                    return
                n = struct.unpack(">i", size)[0]
                if n < 8 or n > 64 << 20:
                    self._error(conn, "frame size %d" % n)
                    return
                frame = self._recv_exact(c, n)
                if frame is None:
                    return
                t = time.monotonic()
                with self.lock:
                    self.frames.append((conn, "c2s", size + frame, t))
                try:
                    resp = self._handle(conn, frame, t)
                except Malformed as e:
                    self._error(conn, "malformed request: %s" % e)
                    return
                if resp is None:
                    continue
                body, rec = resp
                data = struct.pack(">i", len(body)) + body
                with self.lock:
                    rec["t"] = time.monotonic()
                    self.frames.append((conn, "s2c", data, rec["t"]))
                    self.responses.append(rec)
                c.sendall(data)
        except OSError:
            return
        finally:
            c.close()

    # ---- requests --------------------------------------------------------

    def _advertised(self, api, version):
        rng = self.table.get(api)
        return rng is not None and rng[0] <= version <= rng[1]

    def _flex(self, api, version):
        return version >= FLEXIBLE_FROM[api]

    def _next_throttle(self, api):
        with self.lock:
            lst = self.throttles.get(api)
            return lst.pop(0) if lst else 0

    def _handle(self, conn, frame, t):
        r = Reader(frame)
        api, version, corr = r.i16(), r.i16(), r.i32()
        client_id = r.string(False, nullable=True)
        req = {"conn": conn, "api": api, "version": version, "corr": corr,
               "client_id": client_id, "t": t, "header_version": 1}
        if api == API_APIVERSIONS and not self._advertised(api, version):
            # Not parsed further (a newer header may follow): answer in v0.
            req["header_version"] = None
            self._record(req)
            return self._respond(req, self._apiversions_unsupported(),
                                 flex_header=False, throttle=0)
        if api not in FLEXIBLE_FROM or not self._advertised(api, version):
            self._record(req)
            raise Malformed("%s v%d not advertised (%s)" % (
                API_NAMES.get(api, "api %d" % api), version,
                self.table.get(api)))
        flex = self._flex(api, version)
        if flex:
            req["header_version"] = 2
            req["header_tags"] = r.tags()
        handler = {API_APIVERSIONS: self._apiversions,
                   API_METADATA: self._metadata,
                   API_INITPID: self._initpid,
                   API_PRODUCE: self._produce}[api]
        return handler(req, r, flex)

    def _record(self, req):
        with self.lock:
            self.requests.append(req)

    def _end(self, req, r, flex):
        if flex:
            req["tags"] = r.tags()
        if r.left():
            raise Malformed("%s v%d: %d trailing bytes" % (
                API_NAMES[req["api"]], req["version"], r.left()))
        self._record(req)

    def _respond(self, req, body, flex_header, throttle):
        w = Writer().i32(req["corr"])
        if flex_header:
            w.tags({UNKNOWN_TAG: UNKNOWN_TAG_DATA} if self.unknown_tags
                   else {})
        rec = {"conn": req["conn"], "api": req["api"],
               "version": req["version"], "corr": req["corr"],
               "throttle": throttle, "t": None}
        return bytes(w.b) + body, rec

    def _utags(self, known=None):
        tags = dict(known or {})
        if self.unknown_tags:
            tags[UNKNOWN_TAG] = UNKNOWN_TAG_DATA
        return tags

    # ApiVersions ----------------------------------------------------------

    def _apiversions_unsupported(self):
        lo, hi = self.table[API_APIVERSIONS]
        w = Writer().i16(ERR_UNSUPPORTED_VERSION).i32(1)
        w.i16(API_APIVERSIONS).i16(lo).i16(hi)
        return bytes(w.b)

    def _apiversions(self, req, r, flex):
        v = req["version"]
        if v >= 3:
            req["sw_name"] = r.string(True)
            req["sw_version"] = r.string(True)
            for what in ("sw_name", "sw_version"):
                if not SW_RE.match(req[what]):
                    self._error(req["conn"], "ApiVersions %s %r invalid"
                                % (what, req[what]))
        self._end(req, r, flex)
        throttle = self._next_throttle(API_APIVERSIONS)
        w = Writer().i16(ERR_NONE)
        w.array_len(len(self.table), flex)
        for api in sorted(self.table):
            lo, hi = self.table[api]
            w.i16(api).i16(lo).i16(hi)
            if flex:
                w.tags(self._utags())
        if v >= 1:
            w.i32(throttle)
        if flex:
            features = Writer().array_len(1, True)
            features.string("metadata.version", True).i16(1).i16(20)
            features.tags({})
            finalized = Writer().array_len(1, True)
            finalized.string("metadata.version", True).i16(20).i16(1)
            finalized.tags({})
            w.tags(self._utags({0: bytes(features.b),
                                1: struct.pack(">q", 7),
                                2: bytes(finalized.b)}))
        # The ApiVersions response header is always v0.
        return self._respond(req, bytes(w.b), False, throttle)

    # Metadata -------------------------------------------------------------

    def _metadata(self, req, r, flex):
        v = req["version"]
        n = r.array_len(flex, nullable=v >= 1)
        topics = None
        if n is not None:
            topics = []
            for _ in range(n):
                tid = r.uuid() if v >= 10 else None
                name = r.string(flex, nullable=v >= 10)
                if flex:
                    r.tags()
                if name is None:
                    raise Malformed("Metadata: topic by id %r" % tid)
                if tid is not None and tid != bytes(16):
                    raise Malformed("Metadata: topic %s with an id" % name)
                topics.append(name)
        req["topics"] = topics
        req["allow_auto"] = r.boolean() if v >= 4 else None
        if 8 <= v <= 10:
            req["include_cluster_ops"] = r.boolean()
        if v >= 8:
            req["include_topic_ops"] = r.boolean()
        self._end(req, r, flex)
        if v == 0 and topics == []:
            topics = None
        throttle = self._next_throttle(API_METADATA)

        w = Writer()
        if v >= 3:
            w.i32(throttle)
        w.array_len(1, flex)
        w.i32(self.node_id).string("127.0.0.1", flex).i32(self.port)
        if v >= 1:
            w.string(None, flex)                        # rack
        if flex:
            w.tags(self._utags())
        if v >= 2:
            w.string("fake-cluster", flex)
        if v >= 1:
            w.i32(self.node_id)                         # controller
        with self.lock:
            if topics is None:
                names = sorted(self.topics)
            else:
                names = topics
                for name in names:
                    if name not in self.topics and self.auto_create and \
                            req["allow_auto"] is not False:
                        self.topics[name] = 1
            known = dict(self.topics)
        w.array_len(len(names), flex)
        for name in names:
            parts = known.get(name)
            w.i16(ERR_NONE if parts else ERR_UNKNOWN_TOPIC_OR_PARTITION)
            w.string(name, flex)
            if v >= 10:
                w.raw(_topic_id(name) if parts else bytes(16))
            if v >= 1:
                w.boolean(False)                        # is_internal
            w.array_len(parts or 0, flex)
            for p in range(parts or 0):
                w.i16(ERR_NONE).i32(p).i32(self.node_id)
                if v >= 7:
                    w.i32(5)                            # leader epoch
                w.int32_array([self.node_id], flex)     # replicas
                w.int32_array([self.node_id], flex)     # isr
                if v >= 5:
                    w.int32_array([], flex)             # offline
                if flex:
                    w.tags(self._utags())
            if v >= 8:
                w.i32(-2147483648)                      # authorized ops
            if flex:
                w.tags(self._utags())
        if 8 <= v <= 10:
            w.i32(-2147483648)
        if v >= 13:
            w.i16(ERR_NONE)
        if flex:
            w.tags(self._utags())
        return self._respond(req, bytes(w.b), flex, throttle)

    # InitProducerId -------------------------------------------------------

    def _initpid(self, req, r, flex):
        v = req["version"]
        req["txn_id"] = r.string(flex, nullable=True)
        req["txn_timeout"] = r.i32()
        req["producer_id"] = r.i64() if v >= 3 else -1
        req["producer_epoch"] = r.i16() if v >= 3 else -1
        self._end(req, r, flex)
        if req["txn_id"] is not None:
            raise Malformed("InitProducerId: transactional id %r"
                            % req["txn_id"])
        throttle = self._next_throttle(API_INITPID)
        err, pid, epoch = ERR_NONE, -1, -1
        with self.lock:
            if req["producer_id"] >= 0:
                cur = self.pids.get(req["producer_id"])
                if cur is None:
                    err = ERR_UNKNOWN_PRODUCER_ID
                elif cur != req["producer_epoch"]:
                    err = ERR_INVALID_PRODUCER_EPOCH
                else:
                    pid, epoch = req["producer_id"], cur + 1
            else:
                pid, epoch = self.next_pid, 0
                self.next_pid += 1
            if err == ERR_NONE:
                self.pids[pid] = epoch
        w = Writer().i32(throttle).i16(err).i64(pid).i16(epoch)
        if v >= 6:
            w.i64(-1).i16(-1)       # ongoing transaction (not reached)
        if flex:
            w.tags(self._utags())
        return self._respond(req, bytes(w.b), flex, throttle)

    # Produce --------------------------------------------------------------

    def _produce(self, req, r, flex):
        v = req["version"]
        req["txn_id"] = r.string(flex, nullable=True)
        req["acks"] = r.i16()
        req["timeout"] = r.i32()
        parts = {}
        for _ in range(r.array_len(flex)):
            name = r.string(flex)
            for _ in range(r.array_len(flex)):
                idx = r.i32()
                data = r.bytes_(flex, nullable=True)
                if flex:
                    r.tags()
                if (name, idx) in parts:
                    raise Malformed("Produce: %s[%d] twice" % (name, idx))
                parts[(name, idx)] = data
            if flex:
                r.tags()
        if req["acks"] not in (-1, 0, 1):
            raise Malformed("Produce: acks %d" % req["acks"])
        decoded = {}
        errs = {}
        for key, data in parts.items():
            if data is None:
                raise Malformed("Produce: %s[%d] null records" % key)
            try:
                decoded[key] = decode_records(data)
            except Malformed as e:
                self._error(req["conn"], "Produce %s[%d]: %s"
                            % (key + (e,)))
                errs[key] = ERR_CORRUPT_MESSAGE
        req["parts"] = decoded
        self._end(req, r, flex)
        throttle = self._next_throttle(API_PRODUCE)
        results = {}
        for key, batches in decoded.items():
            results[key] = self._append(key, batches)
        for key, err in errs.items():
            results[key] = (err, -1, [], None)
        if req["acks"] == 0:
            return None

        w = Writer()
        by_topic = {}
        for (name, idx) in parts:
            by_topic.setdefault(name, []).append(idx)
        w.array_len(len(by_topic), flex)
        for name, idxs in by_topic.items():
            w.string(name, flex)
            w.array_len(len(idxs), flex)
            for idx in idxs:
                err, base, rec_errs, msg = results[(name, idx)]
                w.i32(idx).i16(err).i64(base)
                w.i64(-1)                               # log append time
                if v >= 5:
                    w.i64(0)                            # log start offset
                if v >= 8:
                    w.array_len(len(rec_errs), flex)
                    for bi, bmsg in rec_errs:
                        w.i32(bi).string(bmsg, flex)
                        if flex:
                            w.tags({})
                    w.string(msg, flex)
                if flex:
                    known = {}
                    if v >= 10 and err != ERR_NONE:
                        # CurrentLeader: ourselves.
                        known[0] = struct.pack(">ii", self.node_id, 5) + \
                            b"\x00"
                    w.tags(self._utags(known))
            if flex:
                w.tags(self._utags())
        w.i32(throttle)
        if flex:
            w.tags(self._utags())
        return self._respond(req, bytes(w.b), flex, throttle)

    def _append(self, key, batches):
        """Appends a partition's batches; returns (err, base offset,
        record errors, error message)."""
        name, idx = key
        with self.lock:
            inj = self.injected.get(key)
            if inj:
                err, rec_errs, msg = inj.pop(0)
                return (err, -1, rec_errs, msg)
            if name not in self.topics or not \
                    0 <= idx < self.topics[name]:
                return (ERR_UNKNOWN_TOPIC_OR_PARTITION, -1, [], None)
            log = self.log.setdefault(key, [])
            first = None
            for bt in batches:
                pid = bt["producer_id"]
                if pid >= 0:
                    if pid not in self.pids:
                        return (ERR_UNKNOWN_PRODUCER_ID, -1, [], None)
                    if bt["producer_epoch"] != self.pids[pid]:
                        return (ERR_INVALID_PRODUCER_EPOCH, -1, [], None)
                    seen = self.seqs.setdefault((pid,) + key, [])
                    want = (seen[-1][0] + seen[-1][1]) if seen else 0
                    if bt["base_seq"] != want:
                        dup = [s for s in seen
                               if s[0] == bt["base_seq"] and
                               s[1] == bt["count"]]
                        if dup:
                            first = dup[0][2] if first is None else first
                            continue
                        return (ERR_OUT_OF_ORDER_SEQUENCE, -1, [],
                                "expected sequence %d, got %d"
                                % (want, bt["base_seq"]))
                    seen.append((bt["base_seq"], bt["count"], len(log)))
                base = len(log)
                first = base if first is None else first
                recs = bt["records"] or [None] * bt["count"]
                for rec in recs:
                    log.append(rec if rec is not None else
                               {"key": None, "value": None, "headers": [],
                                "ts": None, "opaque": True})
            return (ERR_NONE, first, [], None)
