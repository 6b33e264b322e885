"""fake_kafka - a small fake Kafka cluster for kproxyd's integration tests
(standard library only).

librdkafka's mock cluster speaks only old protocol versions (Produce <= v7,
Metadata <= v2, ApiVersions <= v2) and has no TLS or SASL; this fake speaks
the flexible versions, TLS and SASL too, so the tests can check kproxyd
against old and modern, plain and secured brokers. Its codecs are written
from apache/kafka's message definitions
(clients/src/main/resources/common/message/*.json), with no code shared
with src/kp_proto.c: it is an independent implementation, and
test_fake_security.py proves its TLS and SASL against librdkafka.

    fk = FakeKafka(profile="modern", topics={"t": 3})
    fk.start()                     # listens on 127.0.0.1:<free port>
    ... kproxyd with brokers=fk.brokers ...
    fk.requests                    # every request, decoded (dicts below)
    fk.values("t")                 # [value] accepted, by partition, offset
    fk.errors                      # protocol violations seen (must be [])
    fk.stop()

    c = certs.make(t.tmpdir)
    fk = FakeKafka("modern", {"t": 3}, brokers=3, security="SASL_SSL",
                   certfile=c.server, keyfile=c.server_key,
                   mechanisms=["SCRAM-SHA-512"], users={"u": "pw"},
                   session_lifetime_ms=2000, strict_scram_nonce=True)

Constructor (profile, topics, auto_create, unknown_tags, node_id may be
positional; the rest are keyword-only):
  profile     a PROFILES name or a table {api_key: (min, max)}; in SASL
              modes SaslHandshake (0-1) and SaslAuthenticate (0-2) are
              added unless the table has them (a value None removes one:
              {API_SASL_AUTHENTICATE: None, API_SASL_HANDSHAKE: (0, 0)}
              is a pre-1.0 broker whose tokens travel as raw frames)
  topics      {name: partitions}
  brokers     how many brokers (node ids node_id, node_id+1, ...; one
              listening port each); partition p is led by the
              (p % brokers)-th broker until moved
  security    "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL"
  certfile, keyfile, key_password   the server certificate chain (PEM)
  cafile, client_auth   mutual TLS: client_auth "required" (or True) or
              "optional"; client certificates are verified against cafile
  tls_min, tls_max      ssl.TLSVersion bounds (default: TLS 1.2 .. best)
  mechanisms  enabled SASL mechanisms (default: all of MECHANISMS)
  users       {username: password} for PLAIN and SCRAM
  tokens      OAUTHBEARER: a set of accepted tokens (each its own
              principal), a dict {token: principal}, or a function
              token -> principal or None (see unsecured_jwt_validator())
  scram_iterations   4096 (Kafka's minimum)
  strict_scram_nonce False: a client-final nonce that only ends with the
              server's nonce is accepted, as Kafka 3.8.1-3.9 do, and noted
              as a quirk (librdkafka < 2.6.1 sends one, see _ScramServer);
              True: it must be equal (RFC 5802, Kafka 4) or authentication
              fails
  session_lifetime_ms  KIP-368: SaslAuthenticate v1+ tells this lifetime;
              a request other than SaslHandshake/SaslAuthenticate after it
              has run out without re-authentication closes the connection
  host        the host name in bootstrap and Metadata ("127.0.0.1"; with
              a name such as "localhost" the fake also listens on ::1)
  auto_create, unknown_tags (True: unknown tagged fields in flexible
              responses; librdkafka 2.0.2 cannot parse them in ApiVersions
              entries), node_id, keep_frames (False: do not keep `frames`,
              for long runs)

Control (thread-safe, from the test):
  start(), stop(), context manager
  stop_broker(node_id, failover=False)  closes its port and connections;
              its partitions answer LEADER_NOT_AVAILABLE, or with failover
              move to the next live broker
  start_broker(node_id)                 listens again on the same port
  move_leader(topic, partition, node_id)  (bumps the leader epoch)
  advertise(node_id, host, port=None)   what Metadata says for a broker
  add_topic(name, partitions)
  throttle_ms(api, ms, count=1)         next responses carry the throttle
  inject_produce_error(topic, partition, err, record_errors=(),
                       message=None, count=1)
  delay_responses(ms, api=None, broker=None, count=None)  hold responses
              (ms None: never send them); delay_responses(0) clears
  close_after_requests(n, api=None, broker=None, times=1)  the n-th
              matching request from now is read, then its connection is
              closed without an answer (re-armed `times` times)
  close_connections(broker=None)        closes them now
  set_user(name, password)              changes (None: removes) a user
  set_tokens(tokens)                    replaces the accepted OAUTHBEARER
              tokens (as the constructor's `tokens`)
  hostile_metadata(kind, count=1, **kw) the next `count` Metadata answers
              (None: every one until hostile_metadata(None)) are hostile:
              "sparse_partition" every known topic is listed with one
              partition entry, index kw `index` (999999); "many_brokers"
              kw `n` (100000) more broker entries with absurd hosts and
              ports after the real ones; "endless" a frame whose size
              claims kw `size` (60 MiB) of which kw `sent` (64 KiB) are
              sent, then nothing more on that connection

Queries:
  reqs(api=None, conn=None, broker=None), versions(api), records(topic),
  values(topic), record_count(), wait_records(n, timeout)
  connections()  [{conn, broker, peer, tls: {version, cipher, sni,
              peer_cn} | None, mechanism, principal, requests, reauths,
              closed: reason | None}]
  auths          successful authentications [{conn, broker, mechanism,
              principal, reauth, handshake_version, authenticate_version
              (None for raw tokens), session_lifetime_ms, quirks (SCRAM
              nonce), extensions (SCRAM/OAUTHBEARER), t}]
  auth_failures  [{conn, broker, mechanism, user, reason, message
              (what the client was told), reauth, t}]
  tls_failures   [{conn, broker, reason, t}]
  events         [{kind, conn, broker, t, detail}]: kinds
              "session_expired", "fault_close", "dropped_response"
  reauth_count()
  sasl_raw       raw SASL token frames (handshake v0) [(conn, dir, bytes)]

What it implements:

- ApiVersions v0..v3: advertises the profile's table (PROFILES below, or a
  dict {api_key: (min, max)}). A request above the advertised ApiVersions
  range gets UNSUPPORTED_VERSION with a v0 body listing the ApiVersions
  range (KIP-511), as Kafka does. v3 responses carry SupportedFeatures,
  FinalizedFeaturesEpoch, FinalizedFeatures and an unknown tagged field.
- Metadata v0..v13: every live broker (host, port), the requested topics
  (null = all) with each partition's leader, epoch, replicas and ISR;
  unknown topics get UNKNOWN_TOPIC_OR_PARTITION unless auto_create is set
  and the request allows it. Leader epochs (v7+), topic ids (v10+),
  top-level error (v13).
- InitProducerId v0..v5: hands out producer ids (a bump keeps the id and
  increments the epoch when v3+ sends the current one).
- Produce v3..v12: decodes every RecordBatch (magic 2, CRC-32C checked,
  record count, offset deltas, lengths), checks idempotent sequences
  (a duplicate gets its first offset back, a gap OUT_OF_ORDER_SEQUENCE),
  remembers every record and answers with base offsets; a partition the
  broker does not lead gets NOT_LEADER_OR_FOLLOWER. acks=0 gets no
  response. Errors can be injected per partition (inject_produce_error).
- SaslHandshake v0-v1, SaslAuthenticate v0-v2 (v2 flexible), and after a
  v0 handshake the tokens as raw size-prefixed frames without Kafka
  headers (answered likewise; a failure closes the connection). PLAIN,
  SCRAM-SHA-256/512 (RFC 5802/7677: the client proof is checked, the
  server signature sent), OAUTHBEARER (RFC 7628: an unknown token gets
  the JSON error challenge {"status":"invalid_token"}, then, after the
  client's %x01, the failure). A failure answers error 58
  (SASL_AUTHENTICATION_FAILED) with Kafka's message, then closes; an
  unknown mechanism answers UNSUPPORTED_SASL_MECHANISM with the enabled
  ones, then closes. Before authentication only ApiVersions (once) and the
  SASL requests are allowed, and frames over 512 KiB close the connection
  (sasl.server.max.receive.size), as in Kafka. SaslHandshake or
  SaslAuthenticate on an authenticated connection without a session
  lifetime (or on a non-SASL listener advertising them) gets
  ILLEGAL_SASL_STATE, as KafkaApis answers; with a lifetime a SaslHandshake
  starts re-authentication (same mechanism and principal).
- TLS (server side, through the ssl module): TLS 1.2+, optional client
  certificates. Bytes that are not a TLS record on a TLS port are refused
  without an answer (Kafka: "Unrecognized SSL message").
- Flexible versions use request header v2 and response header v1 (not for
  ApiVersions, whose response header is always v0); unknown tagged fields
  in requests are skipped (and recorded), and with unknown_tags=True (the
  default) responses carry an unknown tagged field in the response header,
  the top level and nested structures, to check kproxyd skips them.

A request the broker does not advertise, at a version outside the
advertised range (ApiVersions aside), a request before authentication
that Kafka refuses, or whose body does not parse exactly (trailing bytes
included) is recorded in `errors` and the connection is closed, as a real
broker would.

Each request is recorded as a dict: conn (connection number, unique
across brokers), broker (node id), api, version, header_version, corr,
client_id, t (time.monotonic() when it was read), and per API:
ApiVersions sw_name/sw_version; Metadata topics (None = all), allow_auto;
InitProducerId txn_id, txn_timeout, producer_id, producer_epoch; Produce
txn_id, acks, timeout, parts {(topic, partition): [batch dicts]};
SaslHandshake mechanism; SaslAuthenticate auth_bytes. Responses are
recorded in `responses` (conn, broker, api, version, corr, t, throttle).
`frames` keeps every raw frame (size included) as (conn, "c2s"|"s2c",
bytes, t) for writing a pcap (decrypted: the Kafka bytes inside TLS).

One thread runs every broker of a FakeKafka (a selectors loop over
non-blocking sockets, TLS through ssl.MemoryBIO), so tens of thousands of
records a second are no trouble; the CRC-32C uses libext2fs's when it is
there (checked against the known answer), else a table in Python.
"""

import base64
import collections
import ctypes
import ctypes.util
import gzip
import hashlib
import heapq
import hmac
import ipaddress
import json
import os
import re
import selectors
import socket
import ssl
import struct
import threading
import time
import uuid

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_SASL_HANDSHAKE = 17
API_APIVERSIONS = 18
API_INITPID = 22
API_SASL_AUTHENTICATE = 36
API_NAMES = {API_PRODUCE: "Produce", API_METADATA: "Metadata",
             API_APIVERSIONS: "ApiVersions", API_INITPID: "InitProducerId",
             API_SASL_HANDSHAKE: "SaslHandshake",
             API_SASL_AUTHENTICATE: "SaslAuthenticate"}

# First flexible version of each API (the messages' "flexibleVersions";
# SaslHandshake has none).
FLEXIBLE_FROM = {API_PRODUCE: 9, API_METADATA: 9, API_APIVERSIONS: 3,
                 API_INITPID: 2, API_SASL_HANDSHAKE: 1 << 15,
                 API_SASL_AUTHENTICATE: 2}
# Highest version this fake can decode and answer.
FAKE_MAX = {API_PRODUCE: 12, API_METADATA: 13, API_APIVERSIONS: 3,
            API_INITPID: 5, API_SASL_HANDSHAKE: 1, API_SASL_AUTHENTICATE: 2}

# Added to the table of a SASL listener unless the profile says otherwise.
SASL_APIS = {API_SASL_HANDSHAKE: (0, 1), API_SASL_AUTHENTICATE: (0, 2)}

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
    # For librdkafka clients: "modern" plus Fetch v4-v11 listed (never
    # answered: a producer does not fetch), because librdkafka writes
    # RecordBatch v2 only when the broker lists Fetch v4+ (its MSGVER2
    # feature); without it 2.0.2 sends MessageSet v0 in Produce v7.
    "librdkafka": {API_APIVERSIONS: (0, 3), API_METADATA: (1, 12),
                   API_PRODUCE: (3, 9), API_INITPID: (0, 4),
                   API_FETCH: (4, 11)},
}

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")

ERR_NONE = 0
ERR_CORRUPT_MESSAGE = 2
ERR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERR_LEADER_NOT_AVAILABLE = 5
ERR_NOT_LEADER_OR_FOLLOWER = 6
ERR_UNSUPPORTED_SASL_MECHANISM = 33
ERR_ILLEGAL_SASL_STATE = 34
ERR_UNSUPPORTED_VERSION = 35
ERR_INVALID_REQUEST = 42
ERR_OUT_OF_ORDER_SEQUENCE = 45
ERR_INVALID_PRODUCER_EPOCH = 47
ERR_SASL_AUTHENTICATION_FAILED = 58
ERR_UNKNOWN_PRODUCER_ID = 59

UNKNOWN_TAG = 4242          # no Kafka message defines it
UNKNOWN_TAG_DATA = b"\x01fake-unknown-tag"

# ApiVersions v3 client software name/version (ApiVersionsRequest.isValid).
SW_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?$")

# Kafka's sasl.server.max.receive.size: the largest frame before
# authentication (a TLS ClientHello read as a size is far above it).
MAX_PRE_AUTH_FRAME = 524288
MAX_FRAME = 64 << 20


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


def crc32c_py(data):
    crc = 0xFFFFFFFF
    tab = _CRC_TAB
    for b in data:
        crc = tab[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_native():
    """e2fsprogs' ext2fs_crc32c_le(seed, buf, len) (no final inversion),
    hundreds of times faster than the Python loop; None when absent."""
    name = ctypes.util.find_library("ext2fs") or "libext2fs.so.2"
    try:
        fn = ctypes.CDLL(name).ext2fs_crc32c_le
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_uint32
    fn.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]

    def crc(data):
        data = bytes(data)
        return fn(0xFFFFFFFF, data, len(data)) ^ 0xFFFFFFFF
    if crc(b"123456789") != 0xE3069283:
        return None
    return crc


crc32c = _crc32c_native() or crc32c_py

assert crc32c(b"123456789") == 0xE3069283
assert crc32c_py(b"123456789") == 0xE3069283


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

    def bytes_(self, data, flex):
        if data is None:
            return self.uvarint(0) if flex else self.i32(-1)
        if flex:
            self.uvarint(len(data) + 1)
        else:
            self.i32(len(data))
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
# SASL mechanisms, server side. step(token) -> (done, bytes to send) or
# raises AuthFailed; principal, user and quirks are read when done.

class AuthFailed(Exception):
    """Authentication refused. `message` is the ErrorMessage Kafka would
    send (None: its generic "invalid credentials" one), `reason` what the
    test is told."""

    def __init__(self, message, reason=None, user=None):
        super().__init__(reason or message)
        self.message = message
        self.reason = reason or message
        self.user = user


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _utf8(tok):
    try:
        return tok.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthFailed(None, "token not UTF-8: %r" % tok[:40])


class _PlainServer:
    """RFC 4616 ([authzid] NUL authcid NUL passwd), with the messages of
    Kafka's PlainSaslServer."""

    def __init__(self, fk, mech):
        self.fk = fk
        self.mech = mech
        self.user = None
        self.principal = None
        self.quirks = []

    def step(self, tok):
        parts = tok.split(b"\x00")
        if len(parts) != 3:
            raise AuthFailed(None, "Invalid SASL/PLAIN response: expected "
                             "3 tokens, got %d" % len(parts))
        authzid, user, pw = (_utf8(p) for p in parts)
        self.user = user
        if not user:
            raise AuthFailed("Authentication failed: username not "
                             "specified")
        if not pw:
            raise AuthFailed("Authentication failed: password not "
                             "specified", user=user)
        want = self.fk.users.get(user)
        if want is None or not hmac.compare_digest(want.encode("utf-8"),
                                                   pw.encode("utf-8")):
            raise AuthFailed("Authentication failed: Invalid username or "
                             "password", "unknown user %r" % user
                             if want is None else "wrong password for %r"
                             % user, user)
        if authzid and authzid != user:
            raise AuthFailed("Authentication failed: Client requested an "
                             "authorization id that is different from "
                             "username", user=user)
        self.principal = user
        return True, b""


SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


def scram_keys(password, hname, salt, iterations):
    """(StoredKey, ServerKey) of RFC 5802 section 3."""
    salted = hashlib.pbkdf2_hmac(hname, password.encode("utf-8"), salt,
                                 iterations)
    client_key = hmac.new(salted, b"Client Key", hname).digest()
    server_key = hmac.new(salted, b"Server Key", hname).digest()
    return hashlib.new(hname, client_key).digest(), server_key


def _scram_attrs(text):
    """[(attribute, value)] of "a=v,b=w" (values cannot hold a comma)."""
    out = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isalpha():
            raise AuthFailed(None, "bad SCRAM attribute %r" % part)
        out.append((part[0], part[2:]))
    return out


def _scram_name(s):
    """A saslname: "=2C" is ",", "=3D" is "=", any other "=" invalid."""
    if re.search(r"=(?!2C|3D)", s):
        raise AuthFailed(None, "bad SCRAM user name %r" % s)
    return s.replace("=2C", ",").replace("=3D", "=")


class _ScramServer:
    """SCRAM-SHA-256/512 (RFC 5802, RFC 7677), as Kafka's ScramSaslServer:
    the proof is checked against StoredKey, the server signature sent in
    "v=", failures get Kafka's generic invalid-credentials message.

    The client-final nonce quirk. librdkafka before 2.6.1 (Debian's 2.0.2
    too; the code dates from 0.0.99) builds its message in
    rd_kafka_sasl_scram_build_client_final_message_wo_proof()
    (src/rdkafka_sasl_scram.c) as
        rd_snprintf(out, ..., "c=%s,r=%.*s%s", "biws",
                    (int)state->cnonce.size, state->cnonce.ptr, snonce);
    where snonce is the whole r= value of the server-first-message, which
    RFC 5802 already makes c-nonce + s-nonce (the client checks that it
    starts with its c-nonce). So it sends r = c-nonce + c-nonce + s-nonce:
    its 32-character client nonce twice. Its AuthMessage is built over
    that same client-final-message-without-proof, so the proof and the
    server signature are right for the message as sent. Kafka 3.8.1-3.9
    check nonce.endsWith(server nonce) and let it through; Kafka 4.0
    (CVE-2024-56128) wants equality and refuses it with "Invalid client
    nonce in the final client message."; librdkafka 2.6.1 fixed it
    (confluentinc/librdkafka#4895). strict_scram_nonce=True is Kafka 4;
    otherwise the difference is accepted and noted in `quirks` as
    {"quirk": "client_final_nonce", "doubled_client_nonce": True, ...}."""

    def __init__(self, fk, mech):
        self.fk = fk
        self.mech = mech
        self.hname = SCRAM_HASHES[mech]
        self.state = "first"
        self.user = None
        self.principal = None
        self.quirks = []
        self.extensions = {}

    def step(self, tok):
        s = _utf8(tok)
        if self.state == "first":
            return self._first(s)
        if self.state == "final":
            return self._final(s)
        raise AuthFailed(None, "SCRAM token after the exchange ended")

    def _first(self, s):
        m = re.match(r"^(n|y|p=[^,]*),(a=[^,]*)?,(.*)$", s, re.S)
        if not m:
            raise AuthFailed(None, "bad client-first-message %r" % s[:80])
        if m.group(1).startswith("p="):
            raise AuthFailed(None, "channel binding requested")
        self.gs2 = s[:len(s) - len(m.group(3))]
        self.first_bare = m.group(3)
        attrs = _scram_attrs(self.first_bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise AuthFailed(None, "bad client-first-message-bare %r"
                             % self.first_bare[:80])
        user = _scram_name(attrs[0][1])
        self.user = user
        self.cnonce = attrs[1][1]
        self.extensions = dict(attrs[2:])
        if "m" in self.extensions:
            raise AuthFailed(None, "mandatory extension", user)
        if m.group(2) and _scram_name(m.group(2)[2:]) != user:
            raise AuthFailed("Authentication failed: Client requested an "
                             "authorization id that is different from "
                             "username", user=user)
        self.cred = self.fk._scram_cred(user, self.mech)
        if self.cred is None:
            raise AuthFailed(None, "unknown user %r" % user, user)
        salt, iters = self.cred[:2]
        self.snonce = self.cnonce + os.urandom(16).hex()
        self.server_first = "r=%s,s=%s,i=%d" % (self.snonce, _b64(salt),
                                               iters)
        self.state = "final"
        return False, self.server_first.encode()

    def _final(self, s):
        self.state = "over"
        i = s.rfind(",p=")
        if i < 0:
            raise AuthFailed(None, "client-final-message without proof",
                             self.user)
        wo_proof = s[:i]
        try:
            proof = base64.b64decode(s[i + 3:], validate=True)
        except ValueError:
            raise AuthFailed(None, "proof not base64", self.user)
        attrs = _scram_attrs(wo_proof)
        if len(attrs) < 2 or attrs[0] != ("c", _b64(self.gs2.encode())) \
                or attrs[1][0] != "r":
            raise AuthFailed(None, "bad client-final-message %r"
                             % wo_proof[:120], self.user)
        nonce = attrs[1][1]
        if nonce != self.snonce:
            if self.fk.strict_scram_nonce or \
                    not nonce.endswith(self.snonce):
                raise AuthFailed(None, "Invalid client nonce in the final "
                                 "client message. (sent %r, server nonce "
                                 "%r)" % (nonce, self.snonce), self.user)
            self.quirks.append({
                "quirk": "client_final_nonce", "sent": nonce,
                "expected": self.snonce, "client_nonce": self.cnonce,
                "doubled_client_nonce": nonce == self.cnonce + self.snonce})
        _, _, stored_key, server_key = self.cred
        auth_msg = ",".join((self.first_bare, self.server_first,
                             wo_proof)).encode()
        sig = hmac.new(stored_key, auth_msg, self.hname).digest()
        if len(proof) != len(sig):
            raise AuthFailed(None, "proof of %d bytes" % len(proof),
                             self.user)
        client_key = bytes(a ^ b for a, b in zip(proof, sig))
        if not hmac.compare_digest(
                hashlib.new(self.hname, client_key).digest(), stored_key):
            raise AuthFailed(None, "wrong password for %r (client proof)"
                             % self.user, self.user)
        self.principal = self.user
        server_sig = hmac.new(server_key, auth_msg, self.hname).digest()
        return True, ("v=" + _b64(server_sig)).encode()


class _OAuthServer:
    """OAUTHBEARER (RFC 7628), as Kafka's OAuthBearerSaslServer: the
    client's first message is gs2-header %x01 auth=Bearer <token> %x01
    [key=value %x01]... %x01; a token that the `tokens` option refuses
    gets the JSON error challenge, and the client's %x01 after it the
    failure (whose message is that JSON)."""

    def __init__(self, fk, mech):
        self.fk = fk
        self.mech = mech
        self.user = None
        self.principal = None
        self.quirks = []
        self.error_json = None
        self.token = None
        self.extensions = {}

    def step(self, tok):
        if self.error_json is not None:
            if tok == b"\x01":
                raise AuthFailed(self.error_json, "token refused: %r"
                                 % self.token)
            raise AuthFailed(None, "expected %%x01 after the error "
                             "challenge, got %r" % tok[:40])
        s = _utf8(tok)
        m = re.match(r"^n,(a=[^,\x01]*)?,\x01(.*)\x01\x01$", s, re.S)
        if not m:
            raise AuthFailed(None, "bad OAUTHBEARER message %r" % s[:80])
        kvs = {}
        for kv in m.group(2).split("\x01"):
            k, sep, v = kv.partition("=")
            if not sep or not re.match(r"^[A-Za-z]+$", k) or k in kvs:
                raise AuthFailed(None, "bad OAUTHBEARER key/value %r" % kv)
            kvs[k] = v
        am = re.match(r"^([\w]+) +([-_.a-zA-Z0-9]+)$", kvs.pop("auth", ""))
        if not am or am.group(1).lower() != "bearer":
            raise AuthFailed(None, "no Bearer token in %r" % s[:80])
        self.token = am.group(2)
        self.extensions = kvs
        principal = self.fk._oauth_principal(self.token)
        if principal is None:
            self.error_json = json.dumps({"status": "invalid_token"},
                                         separators=(",", ":"))
            return False, self.error_json.encode()
        self.user = principal
        if m.group(1) and m.group(1)[2:] != principal:
            raise AuthFailed("Authentication failed: Client requested an "
                             "authorization id that is different from "
                             "username", user=principal)
        self.principal = principal
        return True, b""


_MECH_SERVERS = {"PLAIN": _PlainServer, "SCRAM-SHA-256": _ScramServer,
                 "SCRAM-SHA-512": _ScramServer, "OAUTHBEARER": _OAuthServer}


def _b64url_json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) %
                                                             4)))


def unsecured_jwt_validator(subjects=None):
    """A `tokens` function accepting unsecured JWS tokens (alg "none",
    empty signature), as librdkafka makes with
    enable.sasl.oauthbearer.unsecure.jwt: the principal is the "sub"
    claim, if it is in `subjects` (any when None) and "exp" is ahead."""
    def check(token):
        parts = token.split(".")
        if len(parts) != 3 or parts[2] != "":
            return None
        try:
            header = _b64url_json(parts[0])
            claims = _b64url_json(parts[1])
        except ValueError:
            return None
        if not isinstance(header, dict) or header.get("alg") != "none" \
                or not isinstance(claims, dict):
            return None
        sub, exp = claims.get("sub"), claims.get("exp")
        if not isinstance(sub, str) or \
                (subjects is not None and sub not in subjects):
            return None
        if not isinstance(exp, (int, float)) or exp <= time.time():
            return None
        return sub
    return check


# --------------------------------------------------------------------------
# The cluster

_ABSURD_CACHE = {}


def _absurd_brokers(n, v, flex):
    """n Metadata broker entries (node ids from 100000) with hosts and
    ports no broker has: huge, empty, spaces, control bytes, half an IPv6
    literal; ports 0, -1, 70000, 65535."""
    key = (n, v, flex)
    if key not in _ABSURD_CACHE:
        hosts = ["x" * 250 + ".invalid", "", "bad host name", "\x01\x02",
                 "[::1", "a" * 64 + ".example", "-.-", "h%d.example"]
        ports = [0, -1, 70000, 65535, 9092]
        w = Writer()
        for i in range(n):
            host = hosts[i % len(hosts)]
            if "%d" in host:
                host = host % i
            w.i32(100000 + i).string(host, flex).i32(ports[i % len(ports)])
            if v >= 1:
                w.string(None, flex)
            if flex:
                w.tags({})
        _ABSURD_CACHE[key] = bytes(w.b)
    return _ABSURD_CACHE[key]


def _topic_id(name):
    return uuid.uuid5(uuid.NAMESPACE_URL, "fake-kafka:" + name).bytes


class _Close(Exception):
    """Close the connection without an answer (the reason is recorded)."""


class _Broker:
    def __init__(self, node_id):
        self.node_id = node_id
        self.port = 0
        self.lsocks = []        # listening sockets (owned)
        self.up = False
        self.adv = None         # (host, port) Metadata gives, if not ours


class _Conn:
    """One accepted connection; touched by the loop thread only (`info`
    under the lock)."""

    def __init__(self, cid, broker, sock, peer):
        self.id = cid
        self.broker = broker            # borrowed
        self.sock = sock                # owned
        self.mask = selectors.EVENT_READ
        self.rbuf = bytearray()
        self.wbuf = bytearray()         # bytes for the socket (TLS: sealed)
        self.outq = collections.deque()  # (ready time, frame, record)
        self.closing = False            # close once wbuf and outq drain
        self.close_reason = None
        self.closed = False
        self.tls = None                 # ssl.SSLObject, or None
        self.inbio = self.outbio = None
        self.hs_done = False
        self.tls_first_seen = None      # first bytes read on a TLS port
        self.sni = None
        self.auth = "open"      # open|start|versions|authenticate|raw|done
        self.mech = None
        self.mech_server = None
        self.hs_version = None
        self.reauthing = False
        self.principal = None
        self.expiry = None      # monotonic end of the SASL session
        self.stalled = False    # mid-way through an endless answer
        self.info = {"conn": cid, "broker": broker.node_id,
                     "peer": "%s:%d" % peer[:2], "tls": None,
                     "mechanism": None, "principal": None, "requests": 0,
                     "reauths": 0, "closed": None}


class FakeKafka:
    def __init__(self, profile="modern", topics=None, auto_create=False,
                 unknown_tags=True, node_id=1, *, brokers=1,
                 security="PLAINTEXT", certfile=None, keyfile=None,
                 key_password=None, cafile=None, client_auth=None,
                 tls_min=ssl.TLSVersion.TLSv1_2, tls_max=None,
                 mechanisms=None, users=None, tokens=None,
                 scram_iterations=4096, strict_scram_nonce=False,
                 session_lifetime_ms=None, host="127.0.0.1",
                 keep_frames=True):
        assert security in SECURITY_PROTOCOLS, security
        self.security = security
        self.sasl = security.startswith("SASL_")
        table = dict(PROFILES[profile] if isinstance(profile, str)
                     else profile)
        if self.sasl:
            for api, rng in SASL_APIS.items():
                table.setdefault(api, rng)
        self.table = {a: r for a, r in table.items() if r is not None}
        for api, (lo, hi) in self.table.items():
            if api in FAKE_MAX:
                assert hi <= FAKE_MAX[api], "fake speaks %s <= v%d" % (
                    API_NAMES[api], FAKE_MAX[api])
        self.topics = dict(topics or {})
        self.auto_create = auto_create
        self.unknown_tags = unknown_tags
        self.node_id = node_id
        self.host = host
        self.keep_frames = keep_frames
        self.mechanisms = list(mechanisms or MECHANISMS)
        for m in self.mechanisms:
            assert m in _MECH_SERVERS, m
        self.users = dict(users or {})
        self.tokens = tokens
        self.scram_iterations = scram_iterations
        self.strict_scram_nonce = strict_scram_nonce
        self.session_lifetime_ms = session_lifetime_ms
        self.ctx = None
        if security in ("SSL", "SASL_SSL"):
            self.ctx = self._tls_context(certfile, keyfile, key_password,
                                         cafile, client_auth, tls_min,
                                         tls_max)
        self.lock = threading.Lock()
        self.requests = []
        self.responses = []
        self.frames = []
        self.errors = []
        self.auths = []
        self.auth_failures = []
        self.tls_failures = []
        self.events = []
        self.sasl_raw = []
        self.log = {}           # (topic, partition) -> [record dict]
        self.seqs = {}          # (pid, topic, partition) -> [(seq, n, off)]
        self.pids = {}          # producer id -> epoch
        self.next_pid = 1000
        self.throttles = {}     # api -> [ms, ...] for the next responses
        self.injected = {}      # (topic, partition) -> [(err, rec_errs, msg)]
        self.leaders = {}       # (topic, partition) -> node id
        self.epochs = {}        # (topic, partition) -> leader epoch
        self._brokers = [_Broker(node_id + i) for i in range(brokers)]
        self._scram = {}        # (user, mechanism) -> credential
        self._delays = []       # [{ms, api, broker, count}]
        self._closers = []      # [{n, left, api, broker, times}]
        self._hostile = None    # {kind, left, **kw} for Metadata answers
        self._conns = {}        # id -> _Conn (loop thread)
        self._infos = []        # every connection's info dict
        self._by_ssl = {}       # SSLObject -> _Conn, for the SNI callback
        self._next_conn = 0
        self._cur = None        # the connection whose request runs
        self._sel = None
        self._thread = None
        self._stopping = False
        self._cmds = collections.deque()
        self._timers = []
        self._timer_seq = 0
        self._wake_r = self._wake_w = None

    def _tls_context(self, certfile, keyfile, password, cafile, client_auth,
                     tls_min, tls_max):
        assert certfile, "a TLS listener needs certfile"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = tls_min
        if tls_max is not None:
            ctx.maximum_version = tls_max
        ctx.load_cert_chain(certfile, keyfile, password)
        if client_auth:
            assert cafile, "client_auth needs cafile"
            ctx.load_verify_locations(cafile)
            ctx.verify_mode = ssl.CERT_OPTIONAL \
                if client_auth == "optional" else ssl.CERT_REQUIRED
        ctx.sni_callback = self._on_sni
        return ctx

    # ---- control ---------------------------------------------------------

    @property
    def port(self):
        return self._brokers[0].port

    @property
    def ports(self):
        return [b.port for b in self._brokers]

    @property
    def node_ids(self):
        return [b.node_id for b in self._brokers]

    @property
    def brokers(self):
        return ["%s:%d" % (self.host, b.port) for b in self._brokers]

    @property
    def bootstrap(self):
        return ",".join(self.brokers)

    def start(self):
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ,
                           ("wake", None))
        for b in self._brokers:
            self._listen(b)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="fake-kafka")
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        self._stopping = True
        self._wake()
        self._thread.join(10)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stop_broker(self, node_id, failover=False):
        """Closes the broker's port and connections. Its partitions answer
        LEADER_NOT_AVAILABLE in Metadata, or with failover move to the
        next live broker (epoch bumped)."""
        def op():
            b = self._broker(node_id)
            self._unlisten(b)
            for c in list(self._conns.values()):
                if c.broker is b:
                    self._close(c, "broker stopped")
            if failover:
                ids = [x.node_id for x in self._brokers]
                with self.lock:
                    for key, lid in list(self.leaders.items()):
                        if lid != node_id:
                            continue
                        i = ids.index(lid)
                        for j in range(1, len(ids)):
                            cand = self._brokers[(i + j) % len(ids)]
                            if cand.up:
                                self.leaders[key] = cand.node_id
                                self.epochs[key] += 1
                                break
        self._call(op)

    def start_broker(self, node_id):
        """Listens again on the broker's port."""
        self._call(lambda: self._listen(self._broker(node_id)))

    def move_leader(self, topic, partition, node_id):
        """(topic, partition) is led by node_id from now (epoch bumped)."""
        self._broker(node_id)
        with self.lock:
            key = (topic, partition)
            self._leader(key)
            self.leaders[key] = node_id
            self.epochs[key] += 1

    def leader(self, topic, partition):
        """(node id, leader epoch) of a partition."""
        with self.lock:
            return self._leader((topic, partition))

    def advertise(self, node_id, host, port=None):
        """Metadata gives this host (and port) for the broker."""
        b = self._broker(node_id)
        with self.lock:
            b.adv = (host, port)

    def add_topic(self, name, partitions):
        with self.lock:
            self.topics[name] = partitions

    def throttle_ms(self, api, ms, count=1):
        """The next `count` responses of api carry throttle_time_ms=ms."""
        with self.lock:
            self.throttles.setdefault(api, []).extend([ms] * count)

    def inject_produce_error(self, topic, partition, err, record_errors=(),
                             message=None, count=1):
        """The next `count` Produce of (topic, partition) are refused with
        err (RecordErrors [(batch_index, message)] and ErrorMessage in
        v8+)."""
        with self.lock:
            self.injected.setdefault((topic, partition), []).extend(
                [(err, list(record_errors), message)] * count)

    def delay_responses(self, ms, api=None, broker=None, count=None):
        """Holds the next `count` (None: all) responses of api (None: any)
        from broker (None: any) for ms milliseconds (None: never sends
        them); responses behind a held one on its connection wait for it.
        delay_responses(0) with no other argument clears every rule."""
        with self.lock:
            if ms == 0 and api is None and broker is None and count is None:
                self._delays = []
            else:
                self._delays.append({"ms": ms, "api": api, "broker": broker,
                                     "count": count})

    def close_after_requests(self, n, api=None, broker=None, times=1):
        """The n-th request of api (None: any) to broker (None: any) from
        now is read, then its connection closed without an answer; the
        count starts again `times` times in all."""
        with self.lock:
            self._closers.append({"n": n, "left": n, "api": api,
                                  "broker": broker, "times": times})

    def close_connections(self, broker=None):
        """Closes every connection (to broker) now."""
        def op():
            for c in list(self._conns.values()):
                if broker is None or c.broker.node_id == broker:
                    self._close(c, "closed by the test")
        self._call(op)

    def set_user(self, name, password):
        """SCRAM/PLAIN user `name` now has this password (None: gone)."""
        with self.lock:
            if password is None:
                self.users.pop(name, None)
            else:
                self.users[name] = password

    def set_tokens(self, tokens):
        """The OAUTHBEARER tokens accepted from now on."""
        with self.lock:
            self.tokens = tokens

    def hostile_metadata(self, kind, count=1, **kw):
        """The next `count` Metadata answers (None: all) are hostile (see
        the module docstring); kind None ends it."""
        assert kind in (None, "sparse_partition", "many_brokers", "endless")
        with self.lock:
            self._hostile = None if kind is None else dict(
                kw, kind=kind, left=count)

    def _take_hostile(self):
        with self.lock:
            h = self._hostile
            if h is None:
                return None
            if h["left"] is not None:
                h["left"] -= 1
                if h["left"] <= 0:
                    self._hostile = None
            return dict(h)

    # ---- queries ---------------------------------------------------------

    def reqs(self, api=None, conn=None, broker=None):
        with self.lock:
            return [r for r in self.requests
                    if (api is None or r["api"] == api) and
                    (conn is None or r["conn"] == conn) and
                    (broker is None or r["broker"] == broker)]

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

    def wait_records(self, n, timeout=10.0):
        """Waits until at least n records are stored; returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.record_count()
            if got >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.01)

    def connections(self):
        with self.lock:
            return [dict(i) for i in self._infos]

    def reauth_count(self):
        with self.lock:
            return sum(1 for a in self.auths if a["reauth"])

    def event_list(self, kind):
        with self.lock:
            return [e for e in self.events if e["kind"] == kind]

    # ---- the loop --------------------------------------------------------

    def _broker(self, node_id):
        for b in self._brokers:
            if b.node_id == node_id:
                return b
        raise KeyError("no broker %r" % node_id)

    def _listen(self, b):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", b.port))
        s.listen(128)
        s.setblocking(False)
        b.port = s.getsockname()[1]
        b.lsocks = [s]
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            # A name (localhost) may resolve to ::1 first: listen there too.
            try:
                s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s6.bind(("::1", b.port))
                s6.listen(128)
                s6.setblocking(False)
                b.lsocks.append(s6)
            except OSError:
                s6.close()
        for ls in b.lsocks:
            self._sel.register(ls, selectors.EVENT_READ, ("accept", b))
        b.up = True

    def _unlisten(self, b):
        for ls in b.lsocks:
            try:
                self._sel.unregister(ls)
            except (KeyError, ValueError):
                pass
            ls.close()
        b.lsocks = []
        b.up = False

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _call(self, fn):
        """Runs fn in the loop thread (the socket state is its own)."""
        th = self._thread
        if th is None or threading.current_thread() is th:
            return fn()
        box = {}
        done = threading.Event()

        def run():
            try:
                box["r"] = fn()
            except BaseException as e:  # noqa: handed to the caller
                box["e"] = e
            finally:
                done.set()
        self._cmds.append(run)
        self._wake()
        if not done.wait(10):
            raise RuntimeError("fake_kafka loop did not run the command")
        if "e" in box:
            raise box["e"]
        return box.get("r")

    def _timer(self, when, fn):
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fn))

    def _run(self):
        try:
            while not self._stopping:
                timeout = 0.25
                if self._timers:
                    timeout = min(timeout, max(
                        0.0, self._timers[0][0] - time.monotonic()))
                for key, mask in self._sel.select(timeout):
                    kind, obj = key.data
                    if kind == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                    elif kind == "accept":
                        self._accept(key.fileobj, obj)
                    else:
                        self._conn_event(obj, mask)
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    heapq.heappop(self._timers)[2]()
                while self._cmds:
                    self._cmds.popleft()()
        finally:
            for c in list(self._conns.values()):
                self._close(c, "fake stopped")
            for b in self._brokers:
                self._unlisten(b)
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self, lsock, b):
        while True:
            try:
                s, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._next_conn += 1
            c = _Conn(self._next_conn, b, s, peer)
            c.auth = "start" if self.sasl else "open"
            if self.ctx is not None:
                c.inbio, c.outbio = ssl.MemoryBIO(), ssl.MemoryBIO()
                c.tls = self.ctx.wrap_bio(c.inbio, c.outbio,
                                          server_side=True)
                self._by_ssl[c.tls] = c
            self._conns[c.id] = c
            with self.lock:
                self._infos.append(c.info)
            self._sel.register(s, selectors.EVENT_READ, ("conn", c))

    def _conn_event(self, c, mask):
        try:
            if mask & selectors.EVENT_WRITE:
                self._pump(c)
            if mask & selectors.EVENT_READ and not c.closed:
                self._readable(c)
        except Exception as e:  # noqa: a bug in the fake, not the client
            import traceback
            self._error(c.id, "fake internal error: %r\n%s"
                        % (e, traceback.format_exc()))
            self._close(c, "fake internal error")

    def _close(self, c, reason):
        if c.closed:
            return
        c.closed = True
        with self.lock:
            # Before the socket closes: a test that sees the EOF reads it.
            c.info["closed"] = reason
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        self._conns.pop(c.id, None)
        self._by_ssl.pop(c.tls, None)

    def _readable(self, c):
        try:
            data = c.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(c, "recv: %s" % e.strerror)
            return
        if not data:
            self._close(c, "closed by the client")
            return
        if c.tls is not None:
            data = self._tls_in(c, data)
            if not data:
                return
        c.rbuf += data
        self._parse(c)

    # ---- TLS -------------------------------------------------------------

    def _on_sni(self, sslobj, name, ctx):
        c = self._by_ssl.get(sslobj)
        if c is not None:
            c.sni = name

    def _tls_fail(self, c, reason):
        with self.lock:
            self.tls_failures.append({"conn": c.id,
                                      "broker": c.broker.node_id,
                                      "reason": reason,
                                      "t": time.monotonic()})
        c.close_reason = "TLS: " + reason

    def _tls_in(self, c, data):
        """Decrypted bytes of data (b"" while the handshake runs)."""
        if not c.hs_done and c.tls_first_seen is None:
            c.tls_first_seen = data[:8]
            if data[0] != 0x16:
                # Kafka (SSLEngine): "Unrecognized SSL message, plaintext
                # connection?", closed without a byte.
                self._tls_fail(c, "not a TLS record (plaintext client?): "
                               "%r" % data[:8])
                self._close(c, c.close_reason)
                return b""
        c.inbio.write(data)
        if not c.hs_done:
            try:
                c.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._tls_out(c)
                return b""
            except (ssl.SSLError, OSError) as e:
                self._tls_fail(c, str(e))
                c.closing = True
                self._tls_out(c)
                self._pump(c)
                return b""
            c.hs_done = True
            self._tls_done(c)
        out = bytearray()
        while True:
            try:
                chunk = c.tls.read(1 << 18)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._tls_out(c)
                self._close(c, "TLS close_notify")
                return b""
            except ssl.SSLError as e:
                self._close(c, "TLS: %s" % e)
                return b""
            if not chunk:
                break
            out += chunk
        self._tls_out(c)
        return bytes(out)

    def _tls_done(self, c):
        cert = c.tls.getpeercert() or {}
        cn = None
        for rdn in cert.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    cn = v
        with self.lock:
            c.info["tls"] = {"version": c.tls.version(),
                             "cipher": c.tls.cipher()[0], "sni": c.sni,
                             "peer_cn": cn}

    def _tls_out(self, c):
        data = c.outbio.read()
        if data:
            c.wbuf += data
        self._pump(c)

    # ---- frames ----------------------------------------------------------

    def _pump(self, c):
        if c.closed:
            return
        while c.wbuf:
            try:
                n = c.sock.send(c.wbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._close(c, "send: %s" % e.strerror)
                return
            del c.wbuf[:n]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.wbuf
                                       else 0)
        if want != c.mask:
            self._sel.modify(c.sock, want, ("conn", c))
            c.mask = want
        if c.closing and not c.wbuf and not c.outq:
            self._close(c, c.close_reason or "closed by the fake")

    def _wire_send(self, c, data):
        if c.tls is not None:
            c.tls.write(data)
            self._tls_out(c)
        else:
            c.wbuf += data
            self._pump(c)

    def _parse(self, c):
        buf = c.rbuf
        pos = 0
        while not c.closing and not c.closed and len(buf) - pos >= 4:
            n = struct.unpack_from(">i", buf, pos)[0]
            pre_auth = c.auth not in ("open", "done")
            lo = 0 if c.auth == "raw" else 8
            hi = MAX_PRE_AUTH_FRAME if pre_auth else MAX_FRAME
            if n < lo or n > hi:
                self._error(c.id, "frame size %d%s" % (
                    n, " before authentication" if pre_auth else ""))
                self._close(c, "bad frame size %d" % n)
                return
            if len(buf) - pos < 4 + n:
                break
            size = bytes(buf[pos:pos + 4])
            frame = bytes(buf[pos + 4:pos + 4 + n])
            pos += 4 + n
            self._on_frame(c, size, frame)
        del buf[:pos]

    def _on_frame(self, c, size, frame):
        t = time.monotonic()
        with self.lock:
            c.info["requests"] += 1
            if self.keep_frames:
                self.frames.append((c.id, "c2s", size + frame, t))
        self._cur = c
        try:
            resp = self._handle(c, frame, t)
        except Malformed as e:
            self._error(c.id, "malformed request: %s" % e)
            self._close(c, "malformed request")
            return
        except _Close as e:
            self._close(c, str(e))
            return
        finally:
            self._cur = None
        if resp is not None:
            self._queue(c, *resp)

    def _delay_for(self, c, rec):
        with self.lock:
            for rule in self._delays:
                if (rule["api"] is None or rule["api"] == rec["api"]) and \
                        (rule["broker"] is None or
                         rule["broker"] == c.broker.node_id):
                    if rule["count"] is not None:
                        rule["count"] -= 1
                        if rule["count"] <= 0:
                            self._delays.remove(rule)
                    return rule["ms"]
        return 0

    def _queue(self, c, body, rec):
        if c.stalled:
            return      # an endless answer is still "being sent"
        ms = self._delay_for(c, rec)
        if ms is None:
            self._event("dropped_response", c, "%s corr %s" % (
                API_NAMES.get(rec["api"], rec["api"]), rec.get("corr")))
            self._pump(c)
            return
        data = struct.pack(">i", len(body)) + body
        ready = time.monotonic() + ms / 1000.0
        if c.outq:
            ready = max(ready, c.outq[-1][0])
        c.outq.append((ready, data, rec))
        self._flush_outq(c)

    def _flush_outq(self, c):
        if c.closed:
            return
        now = time.monotonic()
        while c.outq and c.outq[0][0] <= now:
            _, data, rec = c.outq.popleft()
            with self.lock:
                rec["t"] = now
                if self.keep_frames:
                    self.frames.append((c.id, "s2c", data, now))
                if rec.get("raw"):
                    self.sasl_raw.append((c.id, "s2c", data[4:]))
                else:
                    self.responses.append(rec)
            self._wire_send(c, data)
            if c.closed:
                return
        if c.outq:
            self._timer(c.outq[0][0], lambda: self._flush_outq(c))
        elif c.closing:
            self._pump(c)

    def _error(self, conn, what):
        with self.lock:
            self.errors.append("conn %d: %s" % (conn, what))

    def _event(self, kind, c, detail):
        with self.lock:
            self.events.append({"kind": kind, "conn": c.id,
                                "broker": c.broker.node_id,
                                "t": time.monotonic(), "detail": detail})

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

    def _fault_close(self, c, req):
        with self.lock:
            for rule in self._closers:
                if (rule["api"] is None or rule["api"] == req["api"]) and \
                        (rule["broker"] is None or
                         rule["broker"] == c.broker.node_id):
                    rule["left"] -= 1
                    if rule["left"] > 0:
                        continue
                    rule["times"] -= 1
                    rule["left"] = rule["n"]
                    if rule["times"] <= 0:
                        self._closers.remove(rule)
                    break
            else:
                return
            self.requests.append(req)
        self._event("fault_close", c, "%s corr %d" % (
            API_NAMES.get(req["api"], req["api"]), req["corr"]))
        raise _Close("fault: closed after a request")

    # Kafka's SaslServerAuthenticator: what each state lets through.
    PRE_AUTH_ALLOWED = {
        "start": (API_APIVERSIONS, API_SASL_HANDSHAKE),
        "versions": (API_SASL_HANDSHAKE,),
        "authenticate": (API_SASL_AUTHENTICATE,),
    }

    def _gate(self, c, req):
        """Refuses what Kafka refuses before (re-)authentication and after
        the session ended."""
        api = req["api"]
        name = API_NAMES.get(api, "api %d" % api)
        if c.auth == "done" and c.expiry is not None and \
                not c.reauthing and api != API_SASL_HANDSHAKE and \
                time.monotonic() > c.expiry:
            self._record(req)
            self._event("session_expired", c, "%s v%d after the session "
                        "ended" % (name, req["version"]))
            raise _Close("SASL session expired")
        if c.reauthing and api != API_SASL_AUTHENTICATE:
            allowed = (API_SASL_AUTHENTICATE,)
        else:
            allowed = self.PRE_AUTH_ALLOWED.get(c.auth)
        if allowed is not None and api not in allowed:
            self._record(req)
            self._error(c.id, "%s v%d during SASL state %s%s" % (
                name, req["version"], c.auth,
                " (re-authentication)" if c.reauthing else ""))
            raise _Close("request refused before authentication")

    def _handle(self, c, frame, t):
        if c.auth == "raw":
            return self._raw_token(c, frame, t)
        r = Reader(frame)
        api, version, corr = r.i16(), r.i16(), r.i32()
        client_id = r.string(False, nullable=True)
        req = {"conn": c.id, "broker": c.broker.node_id, "api": api,
               "version": version, "corr": corr, "client_id": client_id,
               "t": t, "header_version": 1}
        self._fault_close(c, req)
        self._gate(c, req)
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
                   API_PRODUCE: self._produce,
                   API_SASL_HANDSHAKE: self._sasl_handshake,
                   API_SASL_AUTHENTICATE: self._sasl_authenticate}[api]
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
        rec = {"conn": req["conn"], "broker": req["broker"],
               "api": req["api"], "version": req["version"],
               "corr": req["corr"], "throttle": throttle, "t": None}
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
        if self._cur.auth == "start":
            self._cur.auth = "versions"
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

    def _leader(self, key):
        """(leader node id, epoch) of a partition (lock held); partition
        p starts on the (p % brokers)-th broker, epoch 5."""
        if key not in self.leaders:
            self.leaders[key] = \
                self._brokers[key[1] % len(self._brokers)].node_id
            self.epochs[key] = 5
        return self.leaders[key], self.epochs[key]

    def _replicas(self, leader):
        ids = [b.node_id for b in self._brokers]
        i = ids.index(leader)
        return [ids[(i + j) % len(ids)] for j in range(min(3, len(ids)))]

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
        hostile = self._take_hostile()
        if hostile and hostile["kind"] == "endless":
            return self._endless(req, hostile)

        w = Writer()
        if v >= 3:
            w.i32(throttle)
        live = [b for b in self._brokers if b.up]
        up = {b.node_id for b in live}
        extra = (hostile["n"] if "n" in hostile else 100000) \
            if hostile and hostile["kind"] == "many_brokers" else 0
        w.array_len(len(live) + extra, flex)
        with self.lock:
            for b in live:
                host, port = b.adv or (self.host, None)
                w.i32(b.node_id).string(host, flex).i32(port or b.port)
                if v >= 1:
                    w.string(None, flex)                # rack
                if flex:
                    w.tags(self._utags())
        if extra:
            w.raw(_absurd_brokers(extra, v, flex))
        if v >= 2:
            w.string("fake-cluster", flex)
        if v >= 1:
            w.i32(live[0].node_id if live else -1)      # controller
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
            leaders = {(name, p): self._leader((name, p))
                       for name in names for p in range(known.get(name) or 0)}
        w.array_len(len(names), flex)
        for name in names:
            parts = known.get(name)
            w.i16(ERR_NONE if parts else ERR_UNKNOWN_TOPIC_OR_PARTITION)
            w.string(name, flex)
            if v >= 10:
                w.raw(_topic_id(name) if parts else bytes(16))
            if v >= 1:
                w.boolean(False)                        # is_internal
            sparse = hostile and hostile["kind"] == "sparse_partition" \
                and parts
            w.array_len(1 if sparse else parts or 0, flex)
            for p in range(1 if sparse else parts or 0):
                leader, epoch = leaders[(name, p)]
                if sparse:
                    p = hostile.get("index", 999999)
                replicas = self._replicas(leader)
                if leader in up:
                    w.i16(ERR_NONE).i32(p).i32(leader)
                else:
                    w.i16(ERR_LEADER_NOT_AVAILABLE).i32(p).i32(-1)
                if v >= 7:
                    w.i32(epoch)                        # leader epoch
                w.int32_array(replicas, flex)
                w.int32_array([x for x in replicas if x in up], flex)
                if v >= 5:
                    w.int32_array([x for x in replicas if x not in up],
                                  flex)                 # offline
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

    def _endless(self, req, hostile):
        """A Metadata answer that never ends: its size claims more than
        is ever sent; the connection then stays silent."""
        c = self._cur
        size = hostile.get("size", 60 << 20)
        sent = hostile.get("sent", 64 << 10)
        head = struct.pack(">ii", size, req["corr"])
        c.stalled = True
        self._event("endless_answer", c, "claims %d bytes, sends %d"
                    % (size, sent))
        self._wire_send(c, head + b"\0" * max(0, sent - 4))
        return None

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
            results[key] = self._append(key, batches, req["broker"])
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
                        with self.lock:
                            lid, lep = self._leader((name, idx)) \
                                if name in self.topics else (-1, -1)
                        known[0] = struct.pack(">ii", lid, lep) + b"\x00"
                    w.tags(self._utags(known))
            if flex:
                w.tags(self._utags())
        w.i32(throttle)
        if flex:
            w.tags(self._utags())
        return self._respond(req, bytes(w.b), flex, throttle)

    def _append(self, key, batches, broker):
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
            if self._leader(key)[0] != broker:
                return (ERR_NOT_LEADER_OR_FOLLOWER, -1, [], None)
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

    # SASL -----------------------------------------------------------------

    def _scram_cred(self, user, mech):
        """(salt, iterations, StoredKey, ServerKey), None if unknown."""
        pw = self.users.get(user)
        if pw is None:
            return None
        key = (user, mech, pw)
        if key not in self._scram:
            salt = os.urandom(16)
            self._scram[key] = (salt, self.scram_iterations) + scram_keys(
                pw, SCRAM_HASHES[mech], salt, self.scram_iterations)
        return self._scram[key]

    def _oauth_principal(self, token):
        tk = self.tokens
        if tk is None:
            return None
        if callable(tk):
            return tk(token)
        if isinstance(tk, dict):
            return tk.get(token)
        return token if token in tk else None

    def _auth_fail(self, c, mech, e):
        """Records a failed authentication; returns the client's message."""
        msg = e.message or (
            "Authentication failed during %s due to invalid credentials "
            "with SASL mechanism %s" % ("re-authentication" if c.reauthing
                                        else "authentication", mech))
        with self.lock:
            self.auth_failures.append({
                "conn": c.id, "broker": c.broker.node_id, "mechanism": mech,
                "user": e.user, "reason": e.reason, "message": msg,
                "reauth": c.reauthing, "t": time.monotonic()})
        c.close_reason = "authentication failed"
        return msg

    def _auth_done(self, c, authenticate_version):
        """Completes an authentication; returns the session lifetime."""
        ms = self.session_lifetime_ms or 0
        srv = c.mech_server
        reauth = c.reauthing
        if reauth and srv.principal != c.principal:
            raise AuthFailed("Cannot change principals during "
                             "re-authentication from User:%s: User:%s"
                             % (c.principal, srv.principal), user=srv.user)
        c.auth = "done"
        c.reauthing = False
        c.principal = srv.principal
        c.expiry = time.monotonic() + ms / 1000.0 if ms else None
        with self.lock:
            if reauth:
                c.info["reauths"] += 1
            c.info["mechanism"] = c.mech
            c.info["principal"] = c.principal
            self.auths.append({
                "conn": c.id, "broker": c.broker.node_id,
                "mechanism": c.mech, "principal": c.principal,
                "reauth": reauth, "handshake_version": c.hs_version,
                "authenticate_version": authenticate_version,
                "session_lifetime_ms": ms, "quirks": list(srv.quirks),
                "extensions": dict(getattr(srv, "extensions", {})),
                "t": time.monotonic()})
        return ms

    def _sasl_handshake(self, req, r, flex):
        c = self._cur
        req["mechanism"] = mech = r.string(False)
        self._end(req, r, flex)

        def answer(err, mechs):
            w = Writer().i16(err).array_len(len(mechs), False)
            for m in mechs:
                w.string(m, False)
            return self._respond(req, bytes(w.b), False, 0)
        if c.auth == "open" or (c.auth == "done" and c.expiry is None):
            # KafkaApis.handleSaslHandshakeRequest: the authenticator is
            # done with this connection (or it never had one).
            return answer(ERR_ILLEGAL_SASL_STATE, [])
        if c.auth == "done":
            # KIP-368 re-authentication: same mechanism, handshake v1+.
            if req["version"] < 1 or mech != c.mech:
                self._auth_fail(c, mech, AuthFailed(
                    "Re-authentication must use SaslHandshake v1+ and "
                    "the same mechanism", "re-authentication with "
                    "SaslHandshake v%d, mechanism %s (was %s)"
                    % (req["version"], mech, c.mech)))
                c.closing = True
                return answer(ERR_ILLEGAL_SASL_STATE, self.mechanisms)
            c.reauthing = True
            c.mech_server = _MECH_SERVERS[mech](self, mech)
            return answer(ERR_NONE, self.mechanisms)
        if mech not in self.mechanisms:
            self._auth_fail(c, mech, AuthFailed(
                "Unsupported SASL mechanism %s" % mech,
                "mechanism %r not enabled" % mech))
            c.closing = True
            return answer(ERR_UNSUPPORTED_SASL_MECHANISM, self.mechanisms)
        c.mech = mech
        c.hs_version = req["version"]
        c.mech_server = _MECH_SERVERS[mech](self, mech)
        c.auth = "authenticate" if req["version"] >= 1 else "raw"
        return answer(ERR_NONE, self.mechanisms)

    def _sasl_authenticate(self, req, r, flex):
        c = self._cur
        req["auth_bytes"] = tok = r.bytes_(flex)
        self._end(req, r, flex)
        v = req["version"]

        def answer(err, msg, out, lifetime):
            w = Writer().i16(err).string(msg, flex).bytes_(out, flex)
            if v >= 1:
                w.i64(lifetime)
            if flex:
                w.tags(self._utags())
            return self._respond(req, bytes(w.b), flex, 0)
        if c.auth != "authenticate" and not c.reauthing:
            # KafkaApis.handleSaslAuthenticateRequest.
            return answer(ERR_ILLEGAL_SASL_STATE, "SaslAuthenticate request "
                          "received after successful authentication", b"",
                          0)
        try:
            done, out = c.mech_server.step(tok)
            lifetime = self._auth_done(c, v) if done else 0
        except AuthFailed as e:
            msg = self._auth_fail(c, c.mech, e)
            c.closing = True
            return answer(ERR_SASL_AUTHENTICATION_FAILED, msg, b"", 0)
        return answer(ERR_NONE, None, out, lifetime)

    def _raw_token(self, c, frame, t):
        """A token after SaslHandshake v0: a bare size-prefixed frame,
        answered likewise (PLAIN and OAUTHBEARER success: an empty one);
        a failure closes the connection, as Kafka does."""
        with self.lock:
            self.sasl_raw.append((c.id, "c2s", frame))
        try:
            done, out = c.mech_server.step(frame)
            if done:
                self._auth_done(c, None)
        except AuthFailed as e:
            self._auth_fail(c, c.mech, e)
            raise _Close("authentication failed")
        rec = {"conn": c.id, "broker": c.broker.node_id, "api": None,
               "raw": True, "corr": None, "throttle": 0, "t": None}
        return out, rec
