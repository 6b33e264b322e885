"""kproxyd against secured brokers (issue 12; SPEC "Broker security"), on
the fake broker (fake_kafka.py, proven against librdkafka by
test_fake_security.py) with strict_scram_nonce=True (RFC 5802, as Kafka 4
checks it): exact, ordered delivery over SSL, mutual TLS, SASL_PLAINTEXT
and SASL_SSL with each mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512,
OAUTHBEARER, and SaslHandshake v0's raw frames); a wrong CA, a wrong host
name, an expired certificate and a wrong password each give a clear
warning, retries that back off, and messages failing as `authentication`
at their delivery timeout; a plaintext client on a TLS port, the reverse
and an HTTP port each say so; a rotated OAUTHBEARER token is used by new
connections; KIP-368 re-authentication during a long stream loses
nothing; leaders move over TLS; address_map keeps verifying the
advertised name; secrets never reach -t, stats, metrics or the log.
"""

import json
import os
import socket
import subprocess
import threading
import time

import certs
from fake_kafka import FakeKafka
from kptest import (check_delivery, connect, read_summary, send, send_many,
                    tmo, wait_for)
from netkit import Forwarder

TOPIC = "sec"
USER, PASSWORD = "alice", "alice-Pa55-secret"
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")
MECHS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
TOKEN = "tok-Secret-1f2e3d"


def fake(t, security="PLAINTEXT", brokers=3, partitions=3, **kw):
    kw.setdefault("strict_scram_nonce", True)
    fk = FakeKafka(kw.pop("profile", "modern"), {TOPIC: partitions},
                   brokers=brokers, security=security, **kw).start()
    t.clusters.append(fk)
    return fk


def tls_server(c, **kw):
    kw.setdefault("certfile", c.server)
    kw.setdefault("keyfile", c.server_key)
    return kw


def security(protocol, ca=None, mech=None, **extra):
    sec = {"protocol": protocol}
    if ca:
        sec["tls"] = {"ca_file": ca}
    if mech:
        sasl = {"mechanism": mech}
        if mech != "OAUTHBEARER":
            sasl.update({"username": USER, "password": PASSWORD})
        sec["sasl"] = sasl
    for key, val in extra.items():
        sec.setdefault(key, {}).update(val)
    return sec


def kproxyd(t, fk, sec, **over):
    conf = {"brokers": fk.brokers, "security": sec,
            "producer": {"linger_ms": 2}}
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(conf.get(key), dict):
            conf[key].update(val)
        else:
            conf[key] = val
    return t.kproxyd(None, conf, dead_letter=True)


def deliver(k, fk, n, tag, clients=2):
    """clients writers of n messages each (tag-c-i), keyed so that every
    partition is used; checks the summaries, then that the fake holds
    exactly them, each writer's in order within each partition."""
    datas = [b"".join(b"%s k%d %s-%d-%d\n" % (TOPIC.encode(), i % 7,
                                             tag.encode(), c, i)
                      for i in range(n)) for c in range(clients)]
    results = send_many(k.listener_paths[0], datas)
    for r in results:
        assert r == {"delivered": n, "failed": 0, "rejected": 0}, r
    check_stored(fk, tag, clients, n)


def check_stored(fk, tag, clients, n):
    msgs = [{"topic": TOPIC, "partition": p, "offset": off,
             "key": rec["key"], "value": rec["value"]}
            for _, p, off, rec in fk.records(TOPIC)
            if rec["value"].startswith(tag.encode() + b"-")]
    expected = {(c, i): (TOPIC, b"k%d" % (i % 7), b"%s-%d-%d" % (
        tag.encode(), c, i)) for c in range(clients) for i in range(n)}

    def ident(m):
        _, c, i = m["value"].decode().rsplit("-", 2)
        return int(c), int(i)
    check_delivery(msgs, expected, ident,
                   partitions={TOPIC: fk.topics[TOPIC]})
    assert fk.errors == [], fk.errors


def listener_conf():
    return [{"path": "sec.sock", "format": "topic,key,value"}]


def check_tls_conns(fk, sni=None, peer_cn=None):
    conns = [c for c in fk.connections() if c["requests"]]
    assert conns
    for c in conns:
        assert c["tls"] and c["tls"]["version"] in TLS_VERSIONS, c
        assert c["tls"]["peer_cn"] == peer_cn, c
        if sni is not None:
            assert c["tls"]["sni"] == sni, c
    assert fk.tls_failures == [], fk.tls_failures


def check_sasl(fk, mech, principal=USER, handshake=1, authenticate=2):
    auths = fk.auths
    assert auths, fk.auth_failures
    for a in auths:
        assert a["mechanism"] == mech and a["principal"] == principal, a
        assert a["handshake_version"] == handshake, a
        assert a["authenticate_version"] == authenticate, a
        assert a["quirks"] == [], a          # the RFC 5802 nonce
    assert fk.auth_failures == [], fk.auth_failures


def token_file(t, token=TOKEN, name="token"):
    path = t.path(name)
    with open(path, "w") as f:
        f.write(token + "\n")
    return path


def broker_stats(k):
    return [b for b in k.stats()["brokers"] if b["state"] == "up"]


# --------------------------------------------------------------------------
# Delivery in every mode

def test_ssl(t):
    """SSL: every connection TLS 1.2+, SNI and verification against the
    broker's name (localhost), exact and ordered delivery; stats show the
    TLS version and cipher."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", host="localhost", **tls_server(c))
    k = kproxyd(t, fk, security("ssl", ca=c.ca), listeners=listener_conf())
    deliver(k, fk, 500, "ssl")
    check_tls_conns(fk, sni="localhost")
    for b in broker_stats(k):
        assert b["tls"]["version"] in TLS_VERSIONS and b["tls"]["cipher"], b
        assert b["sasl"] is None, b
    assert k.stop() == 0


def test_mtls(t):
    """Mutual TLS with an encrypted client key (key_password_file)."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", **tls_server(c, cafile=c.ca, client_auth="required"))
    sec = security("ssl", ca=c.ca, tls={
        "cert_file": c.client, "key_file": c.client_key_enc,
        "key_password_file": c.key_password_file})
    k = kproxyd(t, fk, sec, listeners=listener_conf())
    deliver(k, fk, 300, "mtls")
    check_tls_conns(fk, peer_cn="kp-client")
    assert c.key_password not in k.log_text()
    assert k.stop() == 0


def sasl_case(protocol, mech, profile="modern", handshake=1, authenticate=2):
    def run(t):
        c = certs.make(t.tmpdir)
        kw = tls_server(c) if protocol == "SASL_SSL" else {}
        fk = fake(t, protocol, profile=profile, mechanisms=[mech],
                  users={USER: PASSWORD}, tokens={TOKEN: "svc-oauth"},
                  **kw)
        sec = security(protocol.lower(),
                       ca=c.ca if protocol == "SASL_SSL" else None,
                       mech=mech)
        if mech == "OAUTHBEARER":
            sec["sasl"]["token_file"] = token_file(t)
        k = kproxyd(t, fk, sec, listeners=listener_conf())
        deliver(k, fk, 300, "sasl")
        check_sasl(fk, mech,
                   principal="svc-oauth" if mech == "OAUTHBEARER" else USER,
                   handshake=handshake, authenticate=authenticate)
        if protocol == "SASL_SSL":
            check_tls_conns(fk)
        for b in broker_stats(k):
            assert b["sasl"]["mechanism"] == mech, b
        assert k.stop() == 0
    run.__doc__ = ("%s with %s: every connection authenticated (SCRAM: "
                   "the RFC 5802 nonce, the server signature checked), "
                   "exact and ordered delivery." % (protocol, mech))
    return run


for _proto in ("SASL_PLAINTEXT", "SASL_SSL"):
    for _mech in MECHS:
        globals()["test_%s_%s" % (_proto.lower(), _mech.lower().replace(
            "-", "_"))] = sasl_case(_proto, _mech)

# A pre-1.0 broker: SaslHandshake v0 only, the tokens as raw frames.
PRE_1_0 = {18: (0, 2), 3: (1, 5), 0: (3, 5), 22: (0, 0), 17: (0, 0),
           36: None}
test_sasl_handshake_v0_raw_scram = sasl_case(
    "SASL_PLAINTEXT", "SCRAM-SHA-256", profile=PRE_1_0, handshake=0,
    authenticate=None)
test_sasl_handshake_v0_raw_plain = sasl_case(
    "SASL_PLAINTEXT", "PLAIN", profile=PRE_1_0, handshake=0,
    authenticate=None)


# --------------------------------------------------------------------------
# Failures: clear errors, bounded retries, `authentication` at the timeout

def failing(t, fk, sec, want, timeout_ms=3000):
    """kproxyd cannot get through: a warning contains `want`; 20 messages
    fail as `authentication` at their delivery timeout (dead letter says
    so); the attempts back off. Returns kproxyd."""
    k = kproxyd(t, fk, sec, producer={"delivery_timeout_ms": timeout_ms,
                                      "request_timeout_ms": 2000})
    t0 = time.monotonic()
    r = send(k.sock, b"".join(b"%s m%d\n" % (TOPIC.encode(), i)
                              for i in range(20)), timeout=tmo(30))
    took = time.monotonic() - t0
    assert r == {"delivered": 0, "failed": 20, "rejected": 0}, r
    assert took >= timeout_ms / 1000.0 - 0.5, took
    lines = [ln for ln in k.log_text().splitlines() if want in ln]
    assert lines, "%r not logged:\n%s" % (want, k.log_tail())
    assert "warning:" in lines[0], lines[0]
    dl = k.dead_letter_lines()
    assert len(dl) == 20, len(dl)
    assert all(d["error"].startswith("authentication: ") for d in dl), dl[0]
    st = k.stats()
    fb = st["topics"][TOPIC]["failed_by"]
    assert fb.get("authentication") == 20, fb
    boot = st["bootstrap"]
    attempts = sum(b["connect_failures"] for b in boot)
    print("%s: %d attempts over %.1f s; warning: %s"
          % (want, attempts, took, lines[0]))
    # 100 ms doubling: about 6 attempts in 3 s per bootstrap broker.
    assert 1 <= attempts <= 10 * len(boot), attempts
    assert all(b["last_fault"] in ("tls", "authentication")
               for b in boot), boot
    return k


def test_wrong_ca(t):
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", brokers=1, **tls_server(c))
    k = failing(t, fk, security("ssl", ca=c.other_ca),
                "the CA that signed the broker's certificate is not trusted")
    assert "set tls.ca_file" in k.log_text()
    assert k.stop() == 0


def test_wrong_host_name(t):
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", brokers=1, certfile=c.wrong_host,
              keyfile=c.wrong_host_key)
    k = failing(t, fk, security("ssl", ca=c.ca),
                "the broker's certificate is not for \"127.0.0.1\"")
    assert k.stop() == 0


def test_expired_certificate(t):
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", brokers=1, certfile=c.expired,
              keyfile=c.expired_key)
    k = failing(t, fk, security("ssl", ca=c.ca), "certificate has expired")
    assert k.stop() == 0


def test_mtls_without_client_certificate(t):
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", brokers=1,
              **tls_server(c, cafile=c.ca, client_auth="required"))
    k = failing(t, fk, security("ssl", ca=c.ca),
                "the broker requires a client certificate")
    assert k.stop() == 0


def test_wrong_password(t):
    """SCRAM-SHA-512 with a wrong password: the warning names the broker,
    the mechanism, the user and what the broker said."""
    fk = fake(t, "SASL_PLAINTEXT", brokers=1, mechanisms=["SCRAM-SHA-512"],
              users={USER: "the-real-one"})
    k = failing(t, fk, security("sasl_plaintext", mech="SCRAM-SHA-512"),
                "SASL SCRAM-SHA-512 as \"%s\": authentication failed: "
                "Authentication failed during authentication due to "
                "invalid credentials with SASL mechanism SCRAM-SHA-512"
                % USER)
    log = k.log_text()
    assert "bootstrap 127.0.0.1:%d" % fk.port in log
    assert PASSWORD not in log and "the-real-one" not in log
    fails = len(fk.auth_failures)
    assert 1 <= fails <= 10, fails
    assert k.stop() == 0


def test_unsupported_mechanism(t):
    fk = fake(t, "SASL_PLAINTEXT", brokers=1, mechanisms=["SCRAM-SHA-256"],
              users={USER: PASSWORD})
    k = failing(t, fk, security("sasl_plaintext", mech="PLAIN"),
                "the broker does not enable this mechanism (it enables: "
                "SCRAM-SHA-256)")
    assert k.stop() == 0


def test_password_changed_leader_fails_authentication(t):
    """Metadata known and delivery working; then the password changes and
    the connections drop: the messages queued for those leaders fail as
    `authentication` (not delivery_timeout) at their delivery timeout."""
    fk = fake(t, "SASL_PLAINTEXT", brokers=2, mechanisms=["PLAIN"],
              users={USER: PASSWORD})
    k = kproxyd(t, fk, security("sasl_plaintext", mech="PLAIN"),
                producer={"delivery_timeout_ms": 3000,
                          "request_timeout_ms": 2000})
    assert send(k.sock, b"%s first\n" % TOPIC.encode())["delivered"] == 1
    fk.set_user(USER, "rotated-elsewhere")
    fk.close_connections()
    r = send(k.sock, b"".join(b"%s m%d\n" % (TOPIC.encode(), i)
                              for i in range(30)), timeout=tmo(30))
    assert r == {"delivered": 0, "failed": 30, "rejected": 0}, r
    dl = k.dead_letter_lines()
    assert dl and all(d["error"].startswith("authentication: broker ")
                      for d in dl), dl[:2]
    fb = k.stats()["topics"][TOPIC]["failed_by"]
    assert fb.get("authentication") == 30, fb
    assert k.stop() == 0


# --------------------------------------------------------------------------
# The wrong kind of listener

def wrong_listener(t, fk_sec, sec, want, **fk_kw):
    c = certs.make(t.tmpdir)
    if fk_sec in ("SSL", "SASL_SSL"):
        fk_kw.update(tls_server(c))
    fk = fake(t, fk_sec, brokers=1, **fk_kw)
    if sec.get("tls") == "ca":
        sec["tls"] = {"ca_file": c.ca}
    k = kproxyd(t, fk, sec)
    line = wait_for(lambda: [ln for ln in k.log_text().splitlines()
                             if want in ln], 10, repr(want))[0]
    print(line)
    assert "warning:" in line, line
    assert k.stop() == 0


def test_plaintext_client_on_tls_listener(t):
    wrong_listener(t, "SSL", {"protocol": "plaintext"},
                   "is this an SSL listener? set security.protocol")


def test_tls_client_on_plaintext_listener(t):
    wrong_listener(t, "PLAINTEXT", {"protocol": "ssl", "tls": "ca"},
                   "is this a TLS listener?")


def test_plaintext_client_on_sasl_listener(t):
    wrong_listener(t, "SASL_PLAINTEXT", {"protocol": "plaintext"},
                   "does this listener require SASL?",
                   users={USER: PASSWORD})


class HttpPort:
    """A port that answers anything with an HTTP 400, as web servers do."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            try:
                s.settimeout(2)
                s.recv(4096)
                s.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0"
                          b"\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            s.close()

    def stop(self):
        self.lsock.close()


def test_http_port(t):
    """A broker address that is an HTTP port: the plaintext client says
    so (instead of `invalid response size 1213486160`), and so does TLS."""
    h = HttpPort()
    t.clusters.append(h)
    c = certs.make(t.tmpdir)
    for sec, want in (({"protocol": "plaintext"},
                       "the broker answered HTTP: this is an HTTP port"),
                      ({"protocol": "ssl", "tls": {"ca_file": c.ca}},
                       "the broker answered HTTP, not TLS")):
        k = t.kproxyd(None, {"brokers": [h.addr], "security": sec})
        line = wait_for(lambda: [ln for ln in k.log_text().splitlines()
                                 if want in ln], 10, repr(want))[0]
        print(line)
        assert "warning:" in line, line
        assert k.stop() == 0


# --------------------------------------------------------------------------
# Tokens, re-authentication, leaders over TLS, address_map

def test_oauthbearer_token_rotation(t):
    """The fake accepts the new token only; the file is rewritten and the
    connections close: new connections read the new token."""
    fk = fake(t, "SASL_PLAINTEXT", brokers=2, mechanisms=["OAUTHBEARER"],
              tokens={"tok-one": "svc"})
    path = token_file(t, "tok-one")
    sec = security("sasl_plaintext", mech="OAUTHBEARER")
    sec["sasl"]["token_file"] = path
    k = kproxyd(t, fk, sec, listeners=listener_conf())
    deliver(k, fk, 100, "before")
    n_auths = len(fk.auths)
    fk.set_tokens({"tok-two": "svc"})
    token_file(t, "tok-two")
    fk.close_connections()
    deliver(k, fk, 100, "after")
    new = fk.auths[n_auths:]
    assert new, fk.auth_failures
    assert all(a["principal"] == "svc" for a in new), new
    assert b"tok-two" in b"".join(
        r["auth_bytes"] for r in fk.reqs(36) if r["conn"] in
        {a["conn"] for a in new})
    log = k.log_text()
    assert "tok-one" not in log and "tok-two" not in log
    assert k.stop() == 0


def paced_stream(path, n, seconds, tag):
    """One writer sending n lines over `seconds`, then its summary."""
    s = connect(path, timeout=tmo(120))
    per = max(1, n // 100)
    for i in range(0, n, per):
        s.sendall(b"".join(b"%s k%d %s-0-%d\n" % (TOPIC.encode(), j % 7,
                                                 tag.encode(), j)
                           for j in range(i, min(n, i + per))))
        time.sleep(seconds / 100.0)
    s.shutdown(socket.SHUT_WR)
    r = read_summary(s)
    s.close()
    return r


def test_reauthentication_during_stream(t):
    """KIP-368: a 1.5 s session lifetime and a 6 s stream over SASL_SSL
    SCRAM: every connection re-authenticates in place before its session
    ends, no request is refused as expired, nothing is lost or reordered,
    no connection that carried the stream is dropped."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SASL_SSL", mechanisms=["SCRAM-SHA-256"],
              users={USER: PASSWORD}, session_lifetime_ms=1500,
              keep_frames=False, **tls_server(c))
    k = kproxyd(t, fk, security("sasl_ssl", ca=c.ca, mech="SCRAM-SHA-256"),
                listeners=listener_conf())
    n = 6000
    r = paced_stream(k.sock, n, 6.0, "reauth")
    assert r == {"delivered": n, "failed": 0, "rejected": 0}, r
    check_stored(fk, "reauth", 1, n)
    reauths = fk.reauth_count()
    expired = fk.event_list("session_expired")
    # The bootstrap connections close once the brokers are known; the
    # ones that carried the stream stay open throughout.
    producing = {r["conn"] for r in fk.reqs(0)}
    closed = [x for x in fk.connections()
              if x["closed"] and (x["conn"] in producing or
                                  x["closed"] != "closed by the client")]
    print("re-authentication: %d re-authentications over %d connections, "
          "%d expired sessions, %d connections closed"
          % (reauths, len(fk.connections()), len(expired), len(closed)))
    assert reauths >= 3, reauths
    assert expired == [], expired
    assert closed == [], closed
    assert all(a["quirks"] == [] for a in fk.auths)
    st = k.stats()
    conns = st["brokers"] + st["bootstrap"]
    assert sum(b["sasl"]["reauthentications"] for b in conns) == reauths, \
        conns
    assert k.stop() == 0


def test_leader_moves_over_tls(t):
    """A paced stream over SSL while leaders move and a broker stops (with
    failover) and comes back: exact and ordered."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", partitions=6, **tls_server(c))
    k = kproxyd(t, fk, security("ssl", ca=c.ca), listeners=listener_conf())
    n = 4000
    result = {}
    th = threading.Thread(target=lambda: result.update(
        r=paced_stream(k.sock, n, 4.0, "moves")), daemon=True)
    th.start()
    ids = fk.node_ids
    time.sleep(0.8)
    fk.move_leader(TOPIC, 0, ids[1])
    fk.move_leader(TOPIC, 1, ids[2])
    time.sleep(0.8)
    fk.stop_broker(ids[0], failover=True)
    time.sleep(0.8)
    fk.start_broker(ids[0])
    fk.move_leader(TOPIC, 2, ids[0])
    th.join(tmo(120))
    assert result.get("r") == {"delivered": n, "failed": 0,
                               "rejected": 0}, result
    check_stored(fk, "moves", 1, n)
    check_tls_conns(fk)
    assert k.stop() == 0


def test_address_map_tls_verifies_advertised_name(t):
    """The brokers advertise "localhost"; address_map sends each TCP
    connection to a forwarder on 127.0.0.2, an address the certificate
    does not name: TLS still verifies (and sends as SNI) localhost."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", brokers=2, host="localhost", **tls_server(c))
    fws = [Forwarder(("127.0.0.1", p), listen=("127.0.0.2", 0))
           for p in fk.ports]
    for fw in fws:
        t.clusters.append(fw)
    amap = {"localhost:%d" % p: fw.addr for p, fw in zip(fk.ports, fws)}
    k = kproxyd(t, fk, security("ssl", ca=c.ca), address_map=amap,
                listeners=listener_conf())
    deliver(k, fk, 200, "amap")
    check_tls_conns(fk, sni="localhost")
    for b in broker_stats(k):
        assert b["address"].startswith("127.0.0.2:"), b
    assert all(fw.connections >= 1 for fw in fws)
    assert k.stop() == 0


def test_reload_reads_certificates_again(t):
    """The CA file is wrong at start (connections fail); it is replaced
    and the configuration reloaded: new connections use the new file."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SSL", brokers=1, **tls_server(c))
    ca = t.path("rotating-ca.pem")
    with open(c.other_ca, "rb") as src, open(ca, "wb") as dst:
        dst.write(src.read())
    k = kproxyd(t, fk, security("ssl", ca=ca),
                reconnect_backoff_max_ms=500)
    wait_for(lambda: "is not trusted" in k.log_text(), 10,
             "the untrusted CA to be reported")
    with open(c.ca, "rb") as src, open(ca + ".new", "wb") as dst:
        dst.write(src.read())
    os.rename(ca + ".new", ca)
    assert k.control("reload") == "ok"
    assert "TLS certificates read again" in k.log_text()
    r = send(k.sock, b"%s after-reload\n" % TOPIC.encode(), timeout=tmo(30))
    assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
    assert k.stop() == 0


# --------------------------------------------------------------------------
# Secrets

def test_secrets_never_printed(t):
    """An inline password, a password file, a token file and a key
    password: none appears in -t, stats, metrics or the (debug) log,
    including after a failed authentication."""
    c = certs.make(t.tmpdir)
    fk = fake(t, "SASL_SSL", brokers=1, mechanisms=["SCRAM-SHA-256"],
              users={USER: PASSWORD}, **tls_server(c))
    sec = security("sasl_ssl", ca=c.ca, mech="SCRAM-SHA-256")
    k = kproxyd(t, fk, sec)
    assert send(k.sock, b"%s hello\n" % TOPIC.encode())["delivered"] == 1
    fk.set_user(USER, "other")
    fk.close_connections()
    wait_for(lambda: fk.auth_failures, 10, "a failed authentication")
    texts = {"stats": k.control("stats"),
             "metrics": "\n".join(k.control_lines("metrics", "# EOF"))}
    p = subprocess.run([t.kproxyd_binary, "-t", "-c", k.conf_path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    texts["-t"] = p.stdout.decode() + p.stderr.decode()
    assert k.stop() == 0
    texts["log"] = k.log_text()
    # The password from a file, an OAUTHBEARER token, a key password.
    pwfile = t.path("pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD + "\n")
    conf = dict(k.conf)
    conf["security"] = {"protocol": "sasl_ssl",
                        "tls": {"ca_file": c.ca, "cert_file": c.client,
                                "key_file": c.client_key_enc,
                                "key_password_file": c.key_password_file},
                        "sasl": {"mechanism": "SCRAM-SHA-256",
                                 "username": USER, "password_file": pwfile}}
    path2 = t.path("secrets2.json")
    with open(path2, "w") as f:
        json.dump(conf, f)
    p = subprocess.run([t.kproxyd_binary, "-t", "-c", path2],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    texts["-t (files)"] = p.stdout.decode() + p.stderr.decode()
    for where, text in texts.items():
        for secret in (PASSWORD, c.key_password, TOKEN):
            assert secret not in text, "%s printed in %s" % (secret, where)
    assert "<redacted>" in texts["-t"], texts["-t"]
