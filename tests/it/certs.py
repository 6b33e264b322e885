"""certs - throwaway X.509 material for TLS tests, made with the openssl
CLI (standard library only).

    c = certs.make(t.tmpdir)        # files under t.tmpdir/certs/
    c.ca                            # CA certificate (PEM) that signed:
    c.server, c.server_key          #   CN=localhost, SAN DNS:localhost,
                                    #   IP:127.0.0.1 (serverAuth)
    c.expired, c.expired_key        #   the same names, valid from 60 to
                                    #   30 days ago
    c.wrong_host, c.wrong_host_key  #   SAN DNS:wrong.example.invalid only
    c.client, c.client_key          #   CN=kp-client (clientAuth)
    c.client_key_enc                #   client_key encrypted (PKCS#8,
    c.key_password                  #   AES-256) with this password,
    c.key_password_file             #   also in this file (no newline)
    c.other_ca                      # an unrelated CA, and a client
    c.other_client, c.other_client_key  # certificate it signed

Keys are EC P-256 (fast to make). The files are made once per process in
a cache directory (removed at exit) and copied into each test's
directory, so a test run pays the openssl calls once (well under a
second) and every test still owns its files.
"""

import atexit
import os
import shutil
import subprocess
import tempfile
import threading

NAMES = ("ca", "ca_key", "server", "server_key", "expired", "expired_key",
         "wrong_host", "wrong_host_key", "client", "client_key",
         "client_key_enc", "key_password_file", "other_ca",
         "other_ca_key", "other_client", "other_client_key")
PASSWORD = "kp-test-key-pass"

_lock = threading.Lock()
_cache = None


class Certs:
    """Paths of the files (attributes named as NAMES), key_password."""

    def __init__(self, d):
        self.dir = d
        for n in NAMES:
            setattr(self, n, os.path.join(d, _FILES[n]))
        self.key_password = PASSWORD


_FILES = {
    "ca": "ca.pem", "ca_key": "ca.key",
    "server": "server.pem", "server_key": "server.key",
    "expired": "expired.pem", "expired_key": "expired.key",
    "wrong_host": "wrong-host.pem", "wrong_host_key": "wrong-host.key",
    "client": "client.pem", "client_key": "client.key",
    "client_key_enc": "client.enc.key",
    "key_password_file": "client.key.pass",
    "other_ca": "other-ca.pem", "other_ca_key": "other-ca.key",
    "other_client": "other-client.pem",
    "other_client_key": "other-client.key",
}


def _openssl(d, *args, stdin=None):
    p = subprocess.run(("openssl",) + args, cwd=d, input=stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (
            " ".join(args), p.stderr.decode("utf-8", "replace")))
    return p.stdout


def _key(d, name):
    _openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-out", name)


def _ca(d, name, cn):
    _key(d, name + ".key")
    _openssl(d, "req", "-x509", "-new", "-key", name + ".key", "-out",
             name + ".pem", "-days", "30", "-subj", "/CN=" + cn,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


# `openssl ca` is the only CLI that sets arbitrary validity dates in
# OpenSSL 3.0 (x509 -req has only -days), so every leaf goes through it.
CA_CONF = """\
[ca]
default_ca = kp
[kp]
dir = .
database = %(db)s
new_certs_dir = .
serial = %(serial)s
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[wrong_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example.invalid
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
"""


def _leaf(d, ca, name, cn, ext, start=None, end=None):
    _key(d, name + ".key")
    _openssl(d, "req", "-new", "-key", name + ".key", "-out", name + ".csr",
             "-subj", "/CN=" + cn)
    db = ca + ".index"
    serial = ca + ".serial"
    if not os.path.exists(os.path.join(d, db)):
        open(os.path.join(d, db), "w").close()
        with open(os.path.join(d, serial), "w") as f:
            f.write("%016X\n" % (int.from_bytes(os.urandom(7), "big")))
    conf = name + ".cnf"
    with open(os.path.join(d, conf), "w") as f:
        f.write(CA_CONF % {"db": db, "serial": serial})
    dates = ["-startdate", start, "-enddate", end] if start else \
        ["-days", "30"]
    _openssl(d, "ca", "-batch", "-config", conf, "-cert", ca + ".pem",
             "-keyfile", ca + ".key", "-in", name + ".csr", "-out",
             name + ".pem", "-extensions", ext, "-notext", *dates)


def _stamp(days_ago):
    import time
    t = time.gmtime(time.time() - days_ago * 86400)
    return time.strftime("%Y%m%d%H%M%SZ", t)


def _build(d):
    _ca(d, "ca", "kp-test-ca")
    _ca(d, "other-ca", "kp-other-ca")
    _leaf(d, "ca", "server", "localhost", "server_ext")
    _leaf(d, "ca", "expired", "localhost", "server_ext",
          start=_stamp(60), end=_stamp(30))
    _leaf(d, "ca", "wrong-host", "wrong.example.invalid", "wrong_ext")
    _leaf(d, "ca", "client", "kp-client", "client_ext")
    _leaf(d, "other-ca", "other-client", "kp-other-client", "client_ext")
    _openssl(d, "pkcs8", "-topk8", "-in", "client.key", "-out",
             "client.enc.key", "-v2", "aes-256-cbc", "-passout",
             "pass:" + PASSWORD)
    with open(os.path.join(d, "client.key.pass"), "w") as f:
        f.write(PASSWORD)


def _cached():
    global _cache
    with _lock:
        if _cache is None:
            d = tempfile.mkdtemp(prefix="kpit-certs-")
            atexit.register(shutil.rmtree, d, True)
            try:
                _build(d)
            except BaseException:
                shutil.rmtree(d, True)
                raise
            _cache = d
        return _cache


def make(tmpdir, sub="certs"):
    """Certs copied into tmpdir/sub (made on first use in this process)."""
    src = _cached()
    dst = os.path.join(tmpdir, sub)
    os.makedirs(dst, exist_ok=True)
    for n in NAMES:
        shutil.copy(os.path.join(src, _FILES[n]), dst)
    return Certs(dst)
