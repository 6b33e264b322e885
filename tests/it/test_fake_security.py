"""The fake broker's TLS, SASL and fault injection, proven against an
independent client: librdkafka (Debian's 2.0.2, through
python3-confluent-kafka 1.7), before kproxyd's own tests lean on them.

Each test starts a FakeKafka (fake_kafka.py) in one security mode, runs a
librdkafka producer in a child process (the Python that has
confluent_kafka: Debian's package installs into the system Python) that
sends N values "m-0".."m-N-1", and checks both sides: what librdkafka
reported (delivery reports with partition and offset, error_cb) and what
the fake recorded (records at those offsets, TLS sessions, SASL
authentications and failures). Certificates come from certs.py.

What librdkafka 2.0.2 needs from the fake, found here:
- the "librdkafka" profile: it writes RecordBatch v2 only when the broker
  lists Fetch v4+, else MessageSet v0 (which the fake refuses);
- unknown_tags=False: it fails to parse ApiVersions v3 ("Read underflow")
  when an ApiKey entry carries a tagged field (Kafka sends none there;
  kproxyd's tests keep them on to check kproxyd skips them);
- it uses SaslHandshake v1 and SaslAuthenticate v0 (no KIP-368: it is
  told no session lifetime and never re-authenticates, so an expired
  session ends in a closed connection and a new login);
- its SCRAM client-final nonce is the client nonce twice plus the server
  part (see fake_kafka._ScramServer): accepted by default, refused with
  strict_scram_nonce, as Kafka 4 does.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import time

import certs
from fake_kafka import (API_APIVERSIONS, API_METADATA, API_PRODUCE,
                        API_SASL_AUTHENTICATE, API_SASL_HANDSHAKE,
                        ERR_ILLEGAL_SASL_STATE, ERR_NONE,
                        ERR_SASL_AUTHENTICATION_FAILED, PROFILES,
                        FakeKafka, Reader, Writer, unsecured_jwt_validator)
from kptest import Skip, tmo

TOPIC = "sec"
N = 40
USER, PASSWORD = "alice", "alice-secret"
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")

# The child: produces spec["n"] values per round, round robin over the
# partitions ("go" on stdin starts each further round), prints a line per
# round and then everything seen.
CLIENT = r'''
import json, logging, os, sys, time
import confluent_kafka as ck

spec = json.loads(sys.argv[1])
out = {"delivered": [], "failed": [], "errors": [], "logs": [],
       "oauth_calls": 0}


class Keep(logging.Handler):
    def emit(self, rec):
        out["logs"].append(rec.getMessage())


log = logging.getLogger("rdkafka")
log.addHandler(Keep())
log.setLevel(logging.DEBUG)
log.propagate = False
conf = dict(spec["conf"])
conf["error_cb"] = lambda e: out["errors"].append([e.name(), e.str()])
conf["logger"] = log
if spec.get("oauth_token") is not None:
    def oauth_cb(_config):
        out["oauth_calls"] += 1
        return spec["oauth_token"], time.time() + 3600
    conf["oauth_cb"] = oauth_cb


def report(err, msg):
    if err is not None:
        out["failed"].append([err.name(), err.str()])
    else:
        out["delivered"].append([msg.partition(), msg.offset(),
                                 msg.value().decode()])


p = ck.Producer(conf)
stop_on = spec.get("stop_on") or []
deadline = time.monotonic() + spec["timeout"]
sent = 0
for rnd in range(spec.get("rounds", 1)):
    if rnd and sys.stdin.readline().strip() != "go":
        break
    for i in range(spec["n"]):
        # Round robin: librdkafka's sticky partitioner would put a burst
        # of keyless values on one partition.
        p.produce(spec["topic"], value=("m-%d" % sent).encode(),
                  partition=sent % spec["partitions"], on_delivery=report)
        sent += 1
        if i % 1000 == 999:
            p.poll(0)
    while len(out["delivered"]) + len(out["failed"]) < sent and \
            time.monotonic() < deadline:
        p.poll(0.02)
        if any(e[0] in stop_on for e in out["errors"]):
            break
    print(json.dumps({"round": rnd, "delivered": len(out["delivered"]),
                      "failed": len(out["failed"])}), flush=True)
p.poll(0.05)
print(json.dumps(out), flush=True)
os._exit(0)
'''

_python = []


def client_python():
    """A Python with confluent_kafka (Skip if none)."""
    if not _python:
        for py in (sys.executable, "/usr/bin/python3"):
            if os.access(py, os.X_OK) and subprocess.run(
                    [py, "-c", "import confluent_kafka"],
                    stderr=subprocess.DEVNULL).returncode == 0:
                _python.append(py)
                break
        else:
            _python.append(None)
    if _python[0] is None:
        raise Skip("confluent_kafka not installed (Debian package "
                   "python3-confluent-kafka)")
    return _python[0]


class Client:
    """A librdkafka producer child; stopped at teardown (t.clusters)."""

    def __init__(self, t, fk, conf, n=N, timeout=10, rounds=1, **spec):
        full = {"bootstrap.servers": fk.bootstrap, "linger.ms": 5,
                "client.id": "fake-security-proof"}
        full.update(conf)
        spec.update({"conf": full, "topic": TOPIC, "n": n,
                     "timeout": tmo(timeout), "rounds": rounds,
                     "partitions": fk.topics[TOPIC]})
        self.timeout = tmo(timeout) + 20
        self.proc = subprocess.Popen(
            [client_python(), "-c", CLIENT, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        t.clusters.append(self)

    def round_done(self):
        line = self.proc.stdout.readline()
        assert line, "client died: %s" % self.proc.stderr.read()[-2000:]
        return json.loads(line)

    def go(self):
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def result(self):
        while True:
            line = self.proc.stdout.readline()
            assert line, "client died: %s" % self.proc.stderr.read()[-2000:]
            out = json.loads(line)
            if "round" not in out:
                self.proc.wait(self.timeout)
                return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def produce(t, fk, conf, **kw):
    c = Client(t, fk, conf, **kw)
    return c.result()


def fake(t, security="PLAINTEXT", brokers=3, partitions=3, **kw):
    fk = FakeKafka(kw.pop("profile", "librdkafka"), {TOPIC: partitions},
                   brokers=brokers, security=security, unknown_tags=False,
                   **kw).start()
    t.clusters.append(fk)
    return fk


def check_delivered(out, fk, n=N):
    """librdkafka saw every value delivered once, and the fake holds
    exactly those values at the partitions and offsets it reported."""
    assert out["failed"] == [], out["failed"][:5]
    assert len(out["delivered"]) == n, (len(out["delivered"]),
                                        out["errors"][:5])
    got = {(p, off): v for p, off, v in out["delivered"]}
    stored = {(p, off): rec["value"].decode()
              for _, p, off, rec in fk.records(TOPIC)}
    assert stored == got, (sorted(stored.items())[:5],
                           sorted(got.items())[:5])
    assert sorted(got.values()) == sorted("m-%d" % i for i in range(n))
    assert fk.errors == [], fk.errors


def error_texts(out, name):
    return [s for e, s in out["errors"] if e == name]


def sasl_conf(mech, user=USER, password=PASSWORD, protocol="sasl_plaintext"):
    return {"security.protocol": protocol, "sasl.mechanisms": mech,
            "sasl.username": user, "sasl.password": password}


def check_auths(fk, mech, principal=USER, handshake=1):
    """Every connection that sent a request authenticated with mech."""
    auths = fk.auths
    assert auths, fk.auth_failures
    for a in auths:
        assert a["mechanism"] == mech and a["principal"] == principal, a
        assert a["handshake_version"] == handshake, a
    authed = {a["conn"] for a in auths}
    for r in fk.reqs():
        if r["api"] not in (API_APIVERSIONS, API_SASL_HANDSHAKE,
                            API_SASL_AUTHENTICATE):
            assert r["conn"] in authed, r
    assert fk.auth_failures == [], fk.auth_failures
    return auths


def check_tls(fk, peer_cn=None):
    conns = [c for c in fk.connections() if c["requests"]]
    assert conns
    for c in conns:
        assert c["tls"] and c["tls"]["version"] in TLS_VERSIONS, c
        assert c["tls"]["peer_cn"] == peer_cn, c
    assert fk.tls_failures == [], fk.tls_failures


# --------------------------------------------------------------------------
# Plaintext, TLS, mutual TLS

def test_plaintext_three_brokers(t):
    """The baseline: three brokers each leading one partition; librdkafka
    learns them from Metadata, produces to every leader and gets the
    offsets the fake stored."""
    fk = fake(t)
    out = produce(t, fk, {})
    check_delivered(out, fk)
    for node in fk.node_ids:
        parts = {key for r in fk.reqs(API_PRODUCE, broker=node)
                 for key in r["parts"]}
        assert parts == {(TOPIC, fk.node_ids.index(node))}, (node, parts)
    assert fk.versions(API_PRODUCE) == [7], fk.versions(API_PRODUCE)


def test_ssl(t):
    """SSL: the server certificate (SAN IP:127.0.0.1) verified against the
    test CA, with librdkafka's host name check on; TLS 1.2+ everywhere."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", certfile=c.server, keyfile=c.server_key)
    out = produce(t, fk, {"security.protocol": "ssl",
                          "ssl.ca.location": c.ca,
                          "ssl.endpoint.identification.algorithm":
                          "https"})
    check_delivered(out, fk)
    check_tls(fk)
    assert {x["tls"]["sni"] for x in fk.connections()} == {None}


def test_ssl_host_name_and_sni(t):
    """Brokers named "localhost" (bootstrap and Metadata): librdkafka
    checks the name against SAN DNS:localhost and sends it as SNI, which
    the fake records (with IP addresses, as in test_ssl, there is none:
    RFC 6066 has no SNI for IP literals)."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", certfile=c.server, keyfile=c.server_key,
              host="localhost")
    assert fk.bootstrap.startswith("localhost:")
    out = produce(t, fk, {"security.protocol": "ssl",
                          "ssl.ca.location": c.ca,
                          "ssl.endpoint.identification.algorithm":
                          "https"})
    check_delivered(out, fk)
    check_tls(fk)
    assert {x["tls"]["sni"] for x in fk.connections()} == {"localhost"}


def test_ssl_tls12_only(t):
    """A broker that stops at TLS 1.2 still works (kproxyd must speak
    it): every session is TLSv1.2."""
    import ssl
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", brokers=1, certfile=c.server, keyfile=c.server_key,
              tls_max=ssl.TLSVersion.TLSv1_2)
    out = produce(t, fk, {"security.protocol": "ssl",
                          "ssl.ca.location": c.ca})
    check_delivered(out, fk)
    check_tls(fk)
    assert {x["tls"]["version"] for x in fk.connections()} == {"TLSv1.2"}


def test_mtls_encrypted_client_key(t):
    """Mutual TLS: the fake requires a client certificate signed by the
    CA; librdkafka presents one whose key is password-protected."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", certfile=c.server, keyfile=c.server_key,
              cafile=c.ca, client_auth="required")
    out = produce(t, fk, {"security.protocol": "ssl",
                          "ssl.ca.location": c.ca,
                          "ssl.certificate.location": c.client,
                          "ssl.key.location": c.client_key_enc,
                          "ssl.key.password": c.key_password})
    check_delivered(out, fk)
    check_tls(fk, peer_cn="kp-client")


# --------------------------------------------------------------------------
# SASL

def test_sasl_plain(t):
    fk = fake(t, "SASL_PLAINTEXT", users={USER: PASSWORD})
    out = produce(t, fk, sasl_conf("PLAIN"))
    check_delivered(out, fk)
    auths = check_auths(fk, "PLAIN")
    assert {a["authenticate_version"] for a in auths} == {0}, auths
    for r in fk.reqs(API_SASL_HANDSHAKE):
        assert r["version"] == 1 and r["mechanism"] == "PLAIN", r


def check_scram_quirk(auths):
    """librdkafka 2.0.2's client-final nonce: c-nonce twice + s-nonce."""
    for a in auths:
        q = a["quirks"]
        assert len(q) == 1 and q[0]["doubled_client_nonce"], a
        assert len(q[0]["client_nonce"]) == 32, q


def test_sasl_scram_sha256(t):
    """SCRAM-SHA-256: the fake checks librdkafka's proof and librdkafka
    checks the fake's server signature (it fails the login otherwise)."""
    fk = fake(t, "SASL_PLAINTEXT", users={USER: PASSWORD},
              mechanisms=["SCRAM-SHA-256"])
    out = produce(t, fk, sasl_conf("SCRAM-SHA-256"))
    check_delivered(out, fk)
    check_scram_quirk(check_auths(fk, "SCRAM-SHA-256"))


def test_sasl_scram_sha512(t):
    fk = fake(t, "SASL_PLAINTEXT", users={USER: PASSWORD, "bob": "x"},
              mechanisms=["SCRAM-SHA-512"])
    out = produce(t, fk, sasl_conf("SCRAM-SHA-512"))
    check_delivered(out, fk)
    check_scram_quirk(check_auths(fk, "SCRAM-SHA-512"))


def test_sasl_ssl_scram(t):
    """SASL_SSL: SCRAM-SHA-512 inside TLS."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SASL_SSL", certfile=c.server, keyfile=c.server_key,
              users={USER: PASSWORD})
    conf = sasl_conf("SCRAM-SHA-512", protocol="sasl_ssl")
    conf["ssl.ca.location"] = c.ca
    out = produce(t, fk, conf)
    check_delivered(out, fk)
    check_scram_quirk(check_auths(fk, "SCRAM-SHA-512"))
    check_tls(fk)


def test_sasl_oauthbearer_token_callback(t):
    """OAUTHBEARER with the token from the application's refresh
    callback (confluent_kafka's oauth_cb)."""
    fk = fake(t, "SASL_PLAINTEXT", tokens={"tok-123.abc": "svc-account"})
    out = produce(t, fk, {"security.protocol": "sasl_plaintext",
                          "sasl.mechanisms": "OAUTHBEARER"},
                  oauth_token="tok-123.abc")
    check_delivered(out, fk)
    check_auths(fk, "OAUTHBEARER", principal="svc-account")
    assert out["oauth_calls"] >= 1, out["oauth_calls"]


def test_sasl_oauthbearer_unsecured_jwt(t):
    """OAUTHBEARER with librdkafka's own unsecured JWS token
    (sasl.oauthbearer.config), checked by unsecured_jwt_validator; the
    SASL extension it carries reaches the fake."""
    fk = fake(t, "SASL_PLAINTEXT",
              tokens=unsecured_jwt_validator({"alice"}))
    out = produce(t, fk, {
        "security.protocol": "sasl_plaintext",
        "sasl.mechanisms": "OAUTHBEARER",
        "enable.sasl.oauthbearer.unsecure.jwt": True,
        "sasl.oauthbearer.config":
            "principal=alice extension_traceId=t42"})
    check_delivered(out, fk)
    for a in check_auths(fk, "OAUTHBEARER", principal="alice"):
        assert a["extensions"] == {"traceId": "t42"}, a


def test_sasl_handshake_v0_raw_tokens(t):
    """A broker without SaslAuthenticate (handshake v0 only): librdkafka
    sends the tokens as raw size-prefixed frames, the fake answers them
    likewise (PLAIN: an empty frame; SCRAM: its messages)."""
    profile = dict(PROFILES["librdkafka"])
    profile.update({API_SASL_HANDSHAKE: (0, 0),
                    API_SASL_AUTHENTICATE: None})
    for mech in ("PLAIN", "SCRAM-SHA-256"):
        fk = fake(t, "SASL_PLAINTEXT", brokers=2, profile=profile,
                  users={USER: PASSWORD}, mechanisms=[mech])
        out = produce(t, fk, sasl_conf(mech))
        check_delivered(out, fk)
        auths = check_auths(fk, mech, handshake=0)
        assert {a["authenticate_version"] for a in auths} == {None}, auths
        assert fk.reqs(API_SASL_AUTHENTICATE) == []
        raw = [d for _, d, _ in fk.sasl_raw]
        per_auth = 2 if mech == "PLAIN" else 4
        assert len(raw) == per_auth * len(auths), fk.sasl_raw


def test_sasl_session_lifetime_expires(t):
    """KIP-368 on the broker side: with session_lifetime_ms, a request on
    a connection whose session ended closes it (librdkafka 2.0.2 does not
    re-authenticate); it logs in again on a new connection and every
    value is still delivered exactly once."""
    fk = fake(t, "SASL_PLAINTEXT", brokers=2, users={USER: PASSWORD},
              mechanisms=["PLAIN"], session_lifetime_ms=500)
    c = Client(t, fk, sasl_conf("PLAIN"), rounds=2)
    assert c.round_done()["delivered"] == N
    first = len(fk.auths)
    time.sleep(0.7)
    c.go()
    out = c.result()
    check_delivered(out, fk, 2 * N)
    expired = fk.event_list("session_expired")
    assert expired, fk.events
    assert len(fk.auths) > first, fk.auths
    assert fk.reauth_count() == 0
    for a in fk.auths:
        assert a["session_lifetime_ms"] == 500, a
    closed = {e["conn"] for e in expired}
    for x in fk.connections():
        if x["conn"] in closed:
            assert x["closed"] == "SASL session expired", x


# --------------------------------------------------------------------------
# Refusals

def test_wrong_password_fails(t):
    """A wrong password: SaslAuthenticate error 58 with Kafka's message,
    reported by librdkafka as an authentication error; nothing stored."""
    cases = (("SCRAM-SHA-256", "Authentication failed during "
              "authentication due to invalid credentials with SASL "
              "mechanism SCRAM-SHA-256"),
             ("PLAIN", "Authentication failed: Invalid username or "
              "password"))
    for mech, msg in cases:
        fk = fake(t, "SASL_PLAINTEXT", brokers=1, users={USER: PASSWORD})
        out = produce(t, fk, sasl_conf(mech, password="wrong"), n=1,
                      timeout=5, stop_on=["_AUTHENTICATION"])
        errs = error_texts(out, "_AUTHENTICATION")
        assert errs and "SASL authentication error: " + msg in errs[0], \
            out["errors"]
        assert out["delivered"] == [] and fk.record_count() == 0
        fails = fk.auth_failures
        assert fails and fails[0]["user"] == USER, fails
        assert "wrong password" in fails[0]["reason"], fails
        assert fk.auths == []
        resp = [r for r in fk.reqs(API_SASL_AUTHENTICATE)]
        assert resp, fk.reqs()
        conn = fk.connections()[0]
        assert conn["closed"] == "authentication failed", conn


def test_scram_strict_nonce_refuses_librdkafka_2_0(t):
    """strict_scram_nonce (Kafka 4's check) refuses librdkafka 2.0.2's
    doubled client nonce: kproxyd's tests use it so kproxyd cannot have
    the same bug."""
    fk = fake(t, "SASL_PLAINTEXT", brokers=1, users={USER: PASSWORD},
              strict_scram_nonce=True)
    out = produce(t, fk, sasl_conf("SCRAM-SHA-512"), n=1, timeout=5,
                  stop_on=["_AUTHENTICATION"])
    assert error_texts(out, "_AUTHENTICATION"), out["errors"]
    fails = fk.auth_failures
    assert fails and "Invalid client nonce" in fails[0]["reason"], fails
    assert fk.record_count() == 0


def test_oauthbearer_unknown_token_fails(t):
    """An unknown token: the JSON error challenge, librdkafka's %x01, then
    error 58 whose message is that JSON."""
    fk = fake(t, "SASL_PLAINTEXT", brokers=1, tokens={"good-token"})
    out = produce(t, fk, {"security.protocol": "sasl_plaintext",
                          "sasl.mechanisms": "OAUTHBEARER"},
                  oauth_token="bad-token", n=1, timeout=5,
                  stop_on=["_AUTHENTICATION"])
    errs = error_texts(out, "_AUTHENTICATION")
    assert errs and '{"status":"invalid_token"}' in errs[0], out["errors"]
    auth = fk.reqs(API_SASL_AUTHENTICATE)
    assert [r["auth_bytes"] for r in auth][-1] == b"\x01", auth
    assert fk.auth_failures[0]["message"] == '{"status":"invalid_token"}'
    assert fk.record_count() == 0


def test_unsupported_mechanism_fails(t):
    fk = fake(t, "SASL_PLAINTEXT", brokers=1, users={USER: PASSWORD},
              mechanisms=["PLAIN"])
    out = produce(t, fk, sasl_conf("SCRAM-SHA-512"), n=1, timeout=5,
                  stop_on=["_AUTHENTICATION"])
    errs = error_texts(out, "_AUTHENTICATION")
    assert errs and "Unsupported SASL mechanism" in errs[0] and \
        "PLAIN" in errs[0], out["errors"]
    assert fk.auth_failures and fk.reqs(API_SASL_AUTHENTICATE) == []


def tls_refused(t, fk_kw, conf, alert):
    """librdkafka refuses the fake's certificate; the fake saw the alert
    that says why."""
    fk = fake(t, "SSL", brokers=1, **fk_kw)
    conf = dict({"security.protocol": "ssl"}, **conf)
    # librdkafka 2.0.2 reports the first failure now and then as
    # _TRANSPORT with OpenSSL's bare error, the next one as _SSL.
    out = produce(t, fk, conf, n=1, timeout=5,
                  stop_on=["_SSL", "_TRANSPORT"])
    errs = error_texts(out, "_SSL") + error_texts(out, "_TRANSPORT")
    assert errs and "certificate verify failed" in errs[0], out["errors"]
    assert fk.tls_failures and alert in fk.tls_failures[0]["reason"], \
        fk.tls_failures
    assert fk.reqs() == [] and fk.record_count() == 0


def test_wrong_ca_fails(t):
    c = certs.make(t.tmpdir)
    tls_refused(t, {"certfile": c.server, "keyfile": c.server_key},
                {"ssl.ca.location": c.other_ca}, "UNKNOWN_CA")


def test_wrong_host_name_fails(t):
    """A certificate for wrong.example.invalid: refused with the host
    name check, accepted without it (so the name is the cause)."""
    c = certs.make(t.tmpdir)
    srv = {"certfile": c.wrong_host, "keyfile": c.wrong_host_key}
    tls_refused(t, srv, {"ssl.ca.location": c.ca,
                         "ssl.endpoint.identification.algorithm": "https"},
                "BAD_CERTIFICATE")
    fk = fake(t, "SSL", brokers=1, **srv)
    out = produce(t, fk, {"security.protocol": "ssl",
                          "ssl.ca.location": c.ca,
                          "ssl.endpoint.identification.algorithm":
                          "none"})
    check_delivered(out, fk)


def test_expired_certificate_fails(t):
    c = certs.make(t.tmpdir)
    tls_refused(t, {"certfile": c.expired, "keyfile": c.expired_key},
                {"ssl.ca.location": c.ca}, "CERTIFICATE_EXPIRED")


def test_mtls_refuses_clients_without_a_good_certificate(t):
    """client_auth required: no certificate, or one from another CA, and
    the fake ends the handshake (librdkafka reads the TLS alert)."""
    c = certs.make(t.tmpdir)
    for conf, reason in (
            ({}, "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
            ({"ssl.certificate.location": c.other_client,
              "ssl.key.location": c.other_client_key},
             "CERTIFICATE_VERIFY_FAILED")):
        fk = fake(t, "SSL", brokers=1, certfile=c.server,
                  keyfile=c.server_key, cafile=c.ca,
                  client_auth="required")
        conf = dict({"security.protocol": "ssl", "ssl.ca.location": c.ca},
                    **conf)
        out = produce(t, fk, conf, n=1, timeout=5,
                      stop_on=["_TRANSPORT", "_SSL"])
        errs = error_texts(out, "_TRANSPORT") + error_texts(out, "_SSL")
        assert errs and "alert" in errs[0], out["errors"]
        assert fk.tls_failures and \
            reason in fk.tls_failures[0]["reason"], fk.tls_failures
        assert fk.reqs() == [] and fk.record_count() == 0


def test_plaintext_client_on_tls_port_fails(t):
    """A plaintext client on a TLS port: the fake drops it without a
    byte, and librdkafka suggests the security.protocol is wrong."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", brokers=1, certfile=c.server, keyfile=c.server_key)
    out = produce(t, fk, {}, n=1, timeout=5, stop_on=["_TRANSPORT"])
    errs = error_texts(out, "_TRANSPORT")
    assert errs and "connecting to a SSL listener?" in errs[0], \
        out["errors"]
    assert "plaintext client" in fk.tls_failures[0]["reason"], \
        fk.tls_failures


def test_tls_client_on_sasl_plaintext_port_fails(t):
    """The reverse: a ClientHello read as a frame size is over Kafka's
    pre-authentication limit, and the connection is closed."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SASL_PLAINTEXT", brokers=1, users={USER: PASSWORD})
    conf = sasl_conf("PLAIN", protocol="sasl_ssl")
    conf["ssl.ca.location"] = c.ca
    out = produce(t, fk, conf, n=1, timeout=5,
                  stop_on=["_SSL", "_TRANSPORT"])
    assert error_texts(out, "_SSL") or error_texts(out, "_TRANSPORT"), \
        out["errors"]
    assert len(fk.errors) == 1 and \
        "before authentication" in fk.errors[0], fk.errors
    fk.errors.clear()


# --------------------------------------------------------------------------
# The fake's own SASL rules, with a hand-made client (what librdkafka
# never does: requests before authentication, re-authentication)

def _request(api, version, corr, body, flex=False):
    w = Writer().i16(api).i16(version).i32(corr).string("raw", False)
    if flex:
        w.tags({})
    w.raw(body)
    return struct.pack(">i", len(w.b)) + bytes(w.b)


def _read(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf
    size = exact(4)
    if size is None:
        return None
    return exact(struct.unpack(">i", size)[0])


def _plain_login(sock, corr, version=1):
    body = Writer().string("PLAIN", False)
    sock.sendall(_request(API_SASL_HANDSHAKE, 1, corr, bytes(body.b)))
    r = Reader(_read(sock))
    assert r.i32() == corr and r.i16() == ERR_NONE
    tok = b"\x00" + USER.encode() + b"\x00" + PASSWORD.encode()
    body = Writer().bytes_(tok, version >= 2)
    if version >= 2:
        body.tags({})
    sock.sendall(_request(API_SASL_AUTHENTICATE, version, corr + 1,
                          bytes(body.b), flex=version >= 2))
    r = Reader(_read(sock))
    assert r.i32() == corr + 1
    if version >= 2:
        r.tags()
    err = r.i16()
    msg = r.string(version >= 2, nullable=True)
    r.bytes_(version >= 2)
    return err, msg, (r.i64() if version >= 1 else None)


def _metadata(sock, corr):
    sock.sendall(_request(API_METADATA, 1, corr, struct.pack(">i", 0)))
    return _read(sock)


def test_fake_sasl_rules(t):
    """Before authentication a Metadata request closes the connection (an
    error for the test to see); SaslAuthenticate v2 (flexible) carries
    the session lifetime; a SaslHandshake + SaslAuthenticate on the live
    connection re-authenticates (counted); once the session has ended
    without that, the next request closes the connection."""
    fk = fake(t, "SASL_PLAINTEXT", brokers=1, users={USER: PASSWORD},
              mechanisms=["PLAIN"], session_lifetime_ms=400)
    s = socket.create_connection(("127.0.0.1", fk.port), timeout=5)
    assert _metadata(s, 1) is None
    s.close()
    assert len(fk.errors) == 1 and "Metadata" in fk.errors[0], fk.errors
    fk.errors.clear()

    s = socket.create_connection(("127.0.0.1", fk.port), timeout=5)
    assert _plain_login(s, 10, version=2) == (ERR_NONE, None, 400)
    assert _metadata(s, 12) is not None
    # SaslAuthenticate alone after login: KafkaApis' ILLEGAL_SASL_STATE.
    body = Writer().bytes_(b"x", False)
    s.sendall(_request(API_SASL_AUTHENTICATE, 1, 13, bytes(body.b)))
    r = Reader(_read(s))
    assert r.i32() == 13 and r.i16() == ERR_ILLEGAL_SASL_STATE
    assert _plain_login(s, 20, version=1) == (ERR_NONE, None, 400)
    assert fk.reauth_count() == 1
    assert _metadata(s, 22) is not None
    time.sleep(0.5)
    assert _metadata(s, 23) is None
    s.close()
    assert [e["kind"] for e in fk.events] == ["session_expired"], fk.events
    conns = fk.connections()
    assert conns[1]["reauths"] == 1 and \
        conns[1]["closed"] == "SASL session expired", conns

    s = socket.create_connection(("127.0.0.1", fk.port), timeout=5)
    body = Writer().string("PLAIN", False)
    s.sendall(_request(API_SASL_HANDSHAKE, 1, 30, bytes(body.b)))
    _read(s)
    body = Writer().bytes_(b"\x00alice\x00nope", False)
    s.sendall(_request(API_SASL_AUTHENTICATE, 1, 31, bytes(body.b)))
    r = Reader(_read(s))
    assert r.i32() == 31 and r.i16() == ERR_SASL_AUTHENTICATION_FAILED
    assert "Invalid username or password" in r.string(False, True)
    assert _read(s) is None             # then closed
    s.close()
    assert fk.errors == []


# --------------------------------------------------------------------------
# Faults, as librdkafka sees them

def test_fault_leader_moves_and_broker_stops(t):
    """A partition's leader moves: librdkafka gets NOT_LEADER_OR_FOLLOWER,
    reads Metadata again and follows. A broker stops (its partition fails
    over): librdkafka reconnects elsewhere. Nothing lost, nothing twice."""
    fk = fake(t)
    c = Client(t, fk, {"retry.backoff.ms": 50}, rounds=3, timeout=20)
    assert c.round_done()["delivered"] == N
    fk.move_leader(TOPIC, 0, fk.node_ids[1])
    t_move = time.monotonic()
    c.go()
    assert c.round_done()["delivered"] == 2 * N
    fk.stop_broker(fk.node_ids[2], failover=True)
    assert fk.leader(TOPIC, 2)[0] == fk.node_ids[0]
    c.go()
    out = c.result()
    check_delivered(out, fk, 3 * N)
    moved = [r for r in fk.reqs(API_PRODUCE, broker=fk.node_ids[1])
             if r["t"] > t_move and (TOPIC, 0) in r["parts"]]
    assert moved, "partition 0 never produced to its new leader"
    stale = [r for r in fk.reqs(API_PRODUCE, broker=fk.node_ids[0])
             if r["t"] > t_move and (TOPIC, 0) in r["parts"]]
    assert stale, "librdkafka never met the moved leader"
    fk.start_broker(fk.node_ids[2])
    s = socket.create_connection(("127.0.0.1", fk.ports[2]), timeout=5)
    s.close()


def test_fault_broker_down_and_back(t):
    """A broker stops without failover (its port refuses connections,
    Metadata lists it no more and gives its partition no leader): the
    values for that partition wait; once the broker listens again on its
    port they are delivered, exactly once."""
    fk = fake(t, partitions=3)
    c = Client(t, fk, {"reconnect.backoff.max.ms": 200}, rounds=2,
               timeout=20)
    assert c.round_done()["delivered"] == N
    down = fk.node_ids[2]
    fk.stop_broker(down)
    t_down = time.monotonic()
    before = len([x for x in fk.records(TOPIC) if x[1] == 2])
    c.go()
    time.sleep(0.6)
    after = len([x for x in fk.records(TOPIC) if x[1] == 2])
    assert after == before, "partition 2 grew while its leader was down"
    fk.start_broker(down)
    out = c.result()
    check_delivered(out, fk, 2 * N)
    assert [r for r in fk.reqs(API_PRODUCE, broker=down)
            if r["t"] > t_down], "nothing produced to the restarted broker"


def test_fault_produce_errors_and_delays(t):
    """An injected retriable error (NOT_ENOUGH_REPLICAS) is retried, a
    non-retriable one (INVALID_RECORD) fails the messages of that
    request, and a delayed response arrives no sooner than the delay."""
    fk = fake(t, brokers=1, partitions=1)
    fk.inject_produce_error(TOPIC, 0, 19, count=2)
    fk.delay_responses(300, api=API_PRODUCE, count=1)
    out = produce(t, fk, {"retry.backoff.ms": 20}, n=5)
    check_delivered(out, fk, 5)
    produce_resp = [r for r in fk.responses if r["api"] == API_PRODUCE]
    assert len(produce_resp) >= 3, produce_resp
    first = produce_resp[0]
    req = [r for r in fk.reqs(API_PRODUCE) if r["corr"] == first["corr"]
           and r["conn"] == first["conn"]][0]
    assert first["t"] - req["t"] >= 0.3, (first, req)

    fk2 = fake(t, brokers=1, partitions=1)
    fk2.inject_produce_error(TOPIC, 0, 87, message="fake: refused")
    out = produce(t, fk2, {"linger.ms": 50}, n=3)
    # The first request fails (with however many values it held), the
    # values of any later one are stored.
    failed = [e for e, _ in out["failed"]]
    assert failed and set(failed) == {"INVALID_RECORD"}, out
    assert len(failed) + len(out["delivered"]) == 3, out
    stored = [(p, off, rec["value"].decode())
              for _, p, off, rec in fk2.records(TOPIC)]
    assert stored == sorted(map(tuple, out["delivered"])), (stored, out)
    first = fk2.reqs(API_PRODUCE)[0]
    assert sum(b["count"] for b in first["parts"][(TOPIC, 0)]) == \
        len(failed), first


def test_fault_close_after_requests(t):
    """The connection is closed when its first Produce arrives (not
    stored): librdkafka reconnects, sends it again, and it is stored
    once."""
    fk = fake(t, brokers=1, partitions=1)
    fk.close_after_requests(1, api=API_PRODUCE)
    out = produce(t, fk, {"retry.backoff.ms": 20}, n=10)
    check_delivered(out, fk, 10)
    assert len(fk.event_list("fault_close")) == 1, fk.events
    assert len({r["conn"] for r in fk.reqs(API_PRODUCE)}) == 2


def test_fault_close_connections_and_advertised_name(t):
    """close_connections() between two rounds: librdkafka reconnects and
    delivers the second round. A broker that Metadata advertises as
    "localhost" (advertise()) is reached by that name."""
    fk = fake(t, brokers=2, partitions=2)
    fk.advertise(fk.node_ids[1], "localhost")
    c = Client(t, fk, {"debug": "broker"}, rounds=2)
    assert c.round_done()["delivered"] == N
    before = {x["conn"] for x in fk.connections()}
    fk.close_connections()
    # librdkafka may already have connected again (a new conn): only
    # those that were open must have been closed.
    assert all(x["closed"] == "closed by the test"
               for x in fk.connections() if x["conn"] in before), \
        fk.connections()
    c.go()
    out = c.result()
    check_delivered(out, fk, 2 * N)
    later = [r for r in fk.reqs(API_PRODUCE) if r["conn"] not in before]
    assert {r["broker"] for r in later} == set(fk.node_ids), later
    logs = "\n".join(out["logs"])
    name = "localhost:%d/%d" % (fk.ports[1], fk.node_ids[1])
    assert name in logs, logs[-2000:]


def test_fake_throughput(t):
    """20,000 values (SASL_SSL, SCRAM, three brokers) through the fake in
    a few seconds: it is not the bottleneck of kproxyd's throughput
    tests."""
    c = certs.make(t.tmpdir)
    n = 20000
    fk = fake(t, "SASL_SSL", certfile=c.server, keyfile=c.server_key,
              users={USER: PASSWORD}, keep_frames=False)
    conf = sasl_conf("SCRAM-SHA-256", protocol="sasl_ssl")
    conf.update({"ssl.ca.location": c.ca, "linger.ms": 20})
    t0 = time.monotonic()
    out = produce(t, fk, conf, n=n, timeout=60)
    took = time.monotonic() - t0
    check_delivered(out, fk, n)
    batches = sum(len(b) for r in fk.reqs(API_PRODUCE)
                  for b in r["parts"].values())
    print("fake throughput: %d values in %.2f s (%.0f/s, %d batches), "
          "client start included" % (n, took, n / took, batches))
