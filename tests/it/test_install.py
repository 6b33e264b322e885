"""Installation (issue "Operations, round two"; SPEC "systemd").

`make install` into an empty DESTDIR: files, modes, the units with their
paths filled in, the sample configuration (never replacing an edited
kproxyd.json), man pages; `make uninstall` removes exactly that, never an
edited configuration. The installed units' sandboxing exposure
(`systemd-analyze security --offline=true`) stays <= 1.5 and the template
shares the service's sandbox. The installed ExecStart line runs as an
unprivileged user with the installed sample configuration (paths moved
into the test's directory with -X) and delivers. And, where systemd can be
booted in a container here (systemd-nspawn, the host's /usr, a tmpfs root),
the installed kproxyd.service and kproxyd@NAME.service are verified by
`systemd-analyze verify`, started by systemd itself with the installed
sample configuration, and deliver a message each.
"""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import urllib.error
import urllib.request

from kptest import Skip, is_asan_binary, send, tmo, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
UNITS = ("kproxyd.service", "kproxyd@.service", "kproxyd.socket")
SAMPLE = os.path.join(REPO, "conf", "kproxyd.json")


def _unitdir():
    """Where `make install` puts units (the Makefile's UNITDIR rule)."""
    p = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir",
                        "systemd"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    d = p.stdout.decode().strip() if p.returncode == 0 else ""
    return d or "/lib/systemd/system"


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _http(port, path):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=tmo(10)) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _process_metrics(text):
    """{name: value} of the process_* samples of a Prometheus text."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^(process_[a-z_]+) (\S+)$", text, re.M)}


def _make(t, dest, target, prefix="/usr/local"):
    """make TARGET into dest without rebuilding the binary under test."""
    if not shutil.which("make"):
        raise Skip("make not installed")
    build = os.path.dirname(os.path.abspath(t.kproxyd_binary))
    rel = os.path.relpath(build, REPO)
    args = ["make", "-s", "-C", REPO, "-o", os.path.join(rel, "kproxyd"),
            "BUILD=" + rel, "DESTDIR=" + dest, "PREFIX=" + prefix, target]
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=tmo(120))
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out
    return out


def _files(dest):
    """{relative path: mode} of every file and directory under dest."""
    out = {}
    for root, dirs, files in os.walk(dest):
        for n in dirs + files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, dest)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def _unit_keys(path):
    keys = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                k, _, v = line.partition("=")
                keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def test_install_layout_and_uninstall(t):
    """Files and modes of an install into an empty root; a second install
    keeps an edited kproxyd.json (and says so); uninstall removes what
    install added and keeps the edited configuration."""
    dest = t.path("root")
    out = _make(t, dest, "install")
    unitdir = _unitdir().lstrip("/")
    want = {
        "usr/local/bin/kproxyd": 0o755,
        "etc/kproxyd": 0o755,
        "etc/kproxyd/kproxyd.json": 0o644,
        "etc/kproxyd/kproxyd.json.sample": 0o644,
        "usr/local/share/man/man8/kproxyd.8": 0o644,
        "usr/local/share/man/man5/kproxyd.json.5": 0o644,
        "usr/local/share/doc/kproxyd/README.md": 0o644,
        "usr/local/share/doc/kproxyd/grafana-dashboard.json": 0o644,
    }
    for u in UNITS:
        want[os.path.join(unitdir, u)] = 0o644
    got = _files(dest)
    for path, mode in want.items():
        assert path in got, (path, sorted(got))
        assert got[path] == mode, (path, oct(got[path]), oct(mode))
    files = {p for p in got if not stat.S_ISDIR(
        os.lstat(os.path.join(dest, p)).st_mode)}
    assert files == set(want) - {"etc/kproxyd"}, sorted(files)

    with open(os.path.join(dest, "usr/local/bin/kproxyd"), "rb") as a, \
            open(t.kproxyd_binary, "rb") as b:
        assert a.read() == b.read(), "installed binary differs"
    for u in UNITS:
        with open(os.path.join(dest, unitdir, u)) as f:
            text = f.read()
        assert "@BINDIR@" not in text, u
    for u in ("kproxyd.service", "kproxyd@.service"):
        keys = _unit_keys(os.path.join(dest, unitdir, u))
        conf = "/etc/kproxyd/%s.json" % ("%i" if "@" in u else "kproxyd")
        assert keys["ExecStart"] == ["/usr/local/bin/kproxyd -c " + conf], \
            keys["ExecStart"]
        assert keys["ExecStartPre"] == [
            "/usr/local/bin/kproxyd -t -q -c " + conf], keys["ExecStartPre"]
    conf = os.path.join(dest, "etc/kproxyd/kproxyd.json")
    with open(conf, "rb") as a, open(SAMPLE, "rb") as b:
        assert a.read() == b.read()
    v = subprocess.run([os.path.join(dest, "usr/local/bin/kproxyd"), "-t",
                        "-c", conf], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=tmo(20))
    # -t also checks this host, where the unit's RuntimeDirectory and
    # StateDirectory (made by systemd before ExecStartPre) may not exist.
    other = [line for line in v.stderr.decode("utf-8", "replace").splitlines()
             if not re.search(r": directory /(run|var/lib)/kproxyd: No such "
                              r"file or directory$", line)]
    assert v.returncode == 0 or not other, v.stderr
    for page in ("man8/kproxyd.8", "man5/kproxyd.json.5"):
        if shutil.which("groff"):
            g = subprocess.run(["groff", "-man", "-ww", "-z", os.path.join(
                dest, "usr/local/share/man", page)], stderr=subprocess.PIPE)
            assert g.returncode == 0 and not g.stderr, (page, g.stderr)

    # An edited configuration survives a second install.
    with open(conf, "a") as f:
        f.write("\n")
    with open(conf, "rb") as f:
        edited = f.read()
    out = _make(t, dest, "install")
    assert "kept" in out and "kproxyd.json.sample" in out, out
    with open(conf, "rb") as f:
        assert f.read() == edited

    # ... and uninstall, which removes everything else.
    out = _make(t, dest, "uninstall")
    assert "kept" in out, out
    left = {p for p in _files(dest) if not stat.S_ISDIR(
        os.lstat(os.path.join(dest, p)).st_mode)}
    assert left == {"etc/kproxyd/kproxyd.json"}, sorted(left)

    # Unedited, the configuration goes too.
    os.unlink(conf)
    _make(t, dest, "install")
    _make(t, dest, "uninstall")
    left = {p for p in _files(dest) if not stat.S_ISDIR(
        os.lstat(os.path.join(dest, p)).st_mode)}
    assert left == set(), sorted(left)
    assert not os.path.exists(os.path.join(dest, "etc/kproxyd"))


def _sandbox(path):
    """The [Service] lines from NoNewPrivileges= on (the sandbox)."""
    with open(path) as f:
        text = f.read()
    svc = text.split("[Service]", 1)[1].split("[Install]", 1)[0]
    return svc[svc.index("NoNewPrivileges="):]


def test_installed_units_exposure(t):
    """Both installed services rate <= 1.5 in `systemd-analyze security
    --offline=true`; the template has the service's sandbox, line for
    line, and its own runtime and state directories."""
    dest = t.path("root")
    _make(t, dest, "install")
    unitdir = os.path.join(dest, _unitdir().lstrip("/"))
    assert _sandbox(os.path.join(unitdir, "kproxyd.service")) == \
        _sandbox(os.path.join(unitdir, "kproxyd@.service"))
    keys = _unit_keys(os.path.join(unitdir, "kproxyd@.service"))
    assert keys["RuntimeDirectory"] == ["kproxyd-%i"], keys
    assert keys["StateDirectory"] == ["kproxyd-%i"], keys
    keys = _unit_keys(os.path.join(unitdir, "kproxyd.service"))
    assert keys["StateDirectory"] == ["kproxyd"], keys
    assert "PrivateUsers" not in keys, "PrivateUsers breaks SO_PEERCRED"

    sa = shutil.which("systemd-analyze")
    if not sa:
        raise Skip("systemd-analyze not installed: exposure not checked")
    for u in ("kproxyd.service", "kproxyd@.service"):
        p = subprocess.run([sa, "security", "--offline=true",
                            os.path.join(unitdir, u)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
        if not m and "offline" in out and "nrecognized" in out:
            raise Skip("systemd-analyze has no --offline: %s" % out.strip())
        assert m, out
        print("%s exposure %s" % (u, m.group(1)))
        assert float(m.group(1)) <= 1.5, out


def _exec_start(unit):
    """The unit's ExecStart command line, split."""
    line = _unit_keys(unit)["ExecStart"][0]
    return line.lstrip("-@:+!").split()


def test_installed_execstart_unprivileged(t):
    """The installed kproxyd.service's ExecStart, run as nobody with the
    installed sample configuration (brokers, sockets, dead letter moved
    into this test's directory with -X, as the unit's RuntimeDirectory and
    StateDirectory would place them), delivers through both of the
    sample's listeners."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        raise Skip("needs root and setpriv to drop to nobody")
    c = t.cluster(topics={"events": 1})
    dest = t.path("root")
    _make(t, dest, "install")
    unitdir = os.path.join(dest, _unitdir().lstrip("/"))
    argv = _exec_start(os.path.join(unitdir, "kproxyd.service"))
    argv = [dest + a if a.startswith(("/usr/local/", "/etc/kproxyd/"))
            else a for a in argv]
    os.chmod(t.tmpdir, 0o755)
    run = t.path("run")
    state = t.path("state")
    for d in (run, state):
        os.mkdir(d, 0o755)
        os.chown(d, 65534, 65534)
    with open(os.path.join(dest, "etc/kproxyd/kproxyd.json")) as f:
        sample = json.load(f)
    port = _free_port()   # the sample's 127.0.0.1:9466 may be taken here
    over = {"brokers": c.bootstrap, "control": run + "/control.sock",
            "dead_letter": state + "/dead_letter.jsonl",
            "http.listen": "127.0.0.1:%d" % port}
    for i, lst in enumerate(sample["listeners"]):
        over["listeners.%d.path" % i] = run + "/" + os.path.basename(
            lst["path"])
    for k, v in over.items():
        argv += ["-X", "%s=%s" % (k, v)]
    log = open(t.path("installed.log"), "wb")
    p = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534",
                          "--clear-groups", "--"] + argv,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        socks = [run + "/" + os.path.basename(lst["path"])
                 for lst in sample["listeners"]]
        wait_for(lambda: p.poll() is not None or all(
            os.path.exists(s) for s in socks), 15, "the installed listeners")
        assert p.poll() is None, open(t.path("installed.log")).read()
        with open("/proc/%d/status" % p.pid) as f:
            uids = re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1)
        assert uids == "65534", uids
        assert os.stat(socks[0]).st_uid == 65534
        assert stat.S_IMODE(os.stat(socks[0]).st_mode) == 0o660
        r = send(socks[0], b"events from-the-installed-unit\n")
        assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
        r = send(socks[1], b'{"topic": "events", "value": "as json"}\n')
        assert r == {"delivered": 1, "failed": 0, "rejected": 0}, r
        msgs = t.consume(c, ["events"], expected=2)
        assert sorted(m["value"] for m in msgs) == [
            b"as json", b"from-the-installed-unit"], msgs
        assert _http(port, "/readyz") == (200, "ok\n")
        status, text = _http(port, "/metrics")
        assert status == 200 and \
            "kproxyd_delivered_messages_total 2\n" in text, text[-2000:]
        assert _process_metrics(text)["process_open_fds"] > 0, text
        p.terminate()
        assert p.wait(tmo(30)) == 0, open(t.path("installed.log")).read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()


# --------------------------------------------------------------------------
# systemd itself, in a container

class Container:
    """systemd booted by systemd-nspawn on the host's /usr with a tmpfs
    root (--volatile=yes), the installed tree bound in read-only; commands
    run inside through nsenter. Shares the host's network, so the mock
    cluster on 127.0.0.1 is reachable."""

    def __init__(self, t, binds):
        self.name = "kpit%d" % os.getpid()
        argv = ["systemd-nspawn", "-D", "/", "--volatile=yes",
                "--register=no", "--keep-unit", "-M", self.name,
                "--console=passive"]
        for src, dst in binds:
            argv.append("--bind-ro=%s:%s" % (src, dst))
        argv += ["-b", "systemd.firstboot=off"]
        self.log_path = t.path("nspawn.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        self.leader = wait_for(self._leader, 30, "the container's init")

    def _leader(self):
        if self.proc.poll() is not None:
            raise Skip("systemd-nspawn cannot boot here: %s"
                       % open(self.log_path).read()[-1500:])
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid,
                                                      self.proc.pid)) as f:
                kids = f.read().split()
        except OSError:
            return None
        for kid in kids:
            # nspawn's own helper child comes first; init is "systemd"
            try:
                with open("/proc/%s/comm" % kid) as f:
                    if f.read().strip() != "systemd":
                        continue
            except OSError:
                continue
            if os.path.exists("/proc/%s/root/run/systemd/private" % kid):
                return int(kid)
        return None

    def run(self, argv, check=True, timeout=60, input=None):
        p = subprocess.run(["nsenter", "-t", str(self.leader), "-m", "-u",
                            "-i", "-n", "-p", "--"] + argv, input=input,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=tmo(timeout))
        out = p.stdout.decode("utf-8", "replace")
        assert not check or p.returncode == 0, (argv, p.returncode, out)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # nspawn: orderly shutdown of the guest
            try:
                self.proc.wait(tmo(30))
            except subprocess.TimeoutExpired:
                self.proc.terminate()  # the second one: at once
                self.proc.wait(tmo(30))


SEND_INSIDE = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
s.shutdown(socket.SHUT_WR)
print(s.makefile("rb").readline().decode().strip())
"""


def _instance_conf(sample, name, bootstrap, http_port):
    """The documented recipe for an instance's configuration: the sample
    with its /run and /var/lib paths moved into the instance's own
    directories, its own brokers and http.listen port."""
    text = json.dumps(sample)
    text = text.replace("/run/kproxyd/", "/run/kproxyd-%s/" % name)
    text = text.replace("/var/lib/kproxyd/", "/var/lib/kproxyd-%s/" % name)
    conf = json.loads(text)
    conf["brokers"] = bootstrap.split(",")
    conf["http"] = {"listen": "127.0.0.1:%d" % http_port}
    return conf


def test_units_under_systemd(t):
    """systemd (in a container) verifies the installed units, starts
    kproxyd.service with the installed sample configuration (only its
    brokers changed, and its http.listen port, as the sample's may be taken
    on this host) and kproxyd@east.service with the instance recipe; each
    runs as a dynamic user, has its state directory, delivers, and answers
    /readyz and /metrics (process_* readable under ProtectProc=invisible
    and ProcSubset=pid)."""
    if os.geteuid() != 0 or not shutil.which("systemd-nspawn") or \
            not shutil.which("nsenter"):
        raise Skip("needs root, systemd-nspawn and nsenter")
    c = t.cluster(topics={"events": 1})
    dest = t.path("root")
    _make(t, dest, "install", prefix="/opt/kproxyd")
    unitdir = os.path.join(dest, _unitdir().lstrip("/"))
    etc = os.path.join(dest, "etc/kproxyd")
    with open(os.path.join(etc, "kproxyd.json.sample")) as f:
        sample = json.load(f)
    ports = {"kproxyd.service": _free_port(),
             "kproxyd@east.service": _free_port()}
    conf = dict(sample, brokers=c.bootstrap.split(","),
                http={"listen": "127.0.0.1:%d" % ports["kproxyd.service"]})
    with open(os.path.join(etc, "kproxyd.json"), "w") as f:
        json.dump(conf, f, indent=2)
    with open(os.path.join(etc, "east.json"), "w") as f:
        json.dump(_instance_conf(sample, "east", c.bootstrap,
                                 ports["kproxyd@east.service"]), f, indent=2)
    if is_asan_binary(t.kproxyd_binary):
        # LeakSanitizer stops the process when the sandbox hides what it
        # reads at exit; address and UB checks still run.
        for u in ("kproxyd.service", "kproxyd@.service"):
            os.makedirs(os.path.join(unitdir, u + ".d"))
            with open(os.path.join(unitdir, u + ".d", "asan.conf"), "w") as f:
                f.write("[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n")
    box = Container(t, [(os.path.join(dest, "opt/kproxyd"), "/opt/kproxyd"),
                        (etc, "/etc/kproxyd"),
                        (unitdir, "/etc/systemd/system")])
    try:
        state = box.run(["systemctl", "is-system-running", "--wait"],
                        check=False, timeout=120).strip()
        assert state in ("running", "degraded"), state
        out = box.run(["systemd-analyze", "verify", "--man=no",
                       "/etc/systemd/system/kproxyd.service",
                       "/etc/systemd/system/kproxyd.socket"], check=False)
        assert "kproxyd" not in out, out
        out = box.run(["systemd-analyze", "verify", "--man=no",
                       "kproxyd@east.service"], check=False)
        assert "kproxyd" not in out, out
        for unit in ("kproxyd.service", "kproxyd@east.service"):
            out = box.run(["systemctl", "start", unit], check=False,
                          timeout=90)
            assert box.run(["systemctl", "is-active", unit],
                           check=False).strip() == "active", (
                unit, out, box.run(["journalctl", "-u", unit, "--no-pager"],
                                   check=False))
        for unit, sock, word in (
                ("kproxyd.service", "/run/kproxyd/kproxyd.sock", "main"),
                ("kproxyd@east.service", "/run/kproxyd-east/kproxyd.sock",
                 "east")):
            assert box.run(["systemctl", "is-active", unit]).strip() == \
                "active"
            pid = box.run(["systemctl", "show", "-p", "MainPID", "--value",
                           unit]).strip()
            st = box.run(["cat", "/proc/%s/status" % pid])
            uid = re.search(r"^Uid:\s+(\d+)", st, re.M).group(1)
            assert uid != "0", st
            reply = box.run(["/usr/bin/python3", "-c", SEND_INSIDE, sock,
                             "events via-%s" % word]).strip()
            assert reply == "delivered=1 failed=0 rejected=0", reply
            # The container shares the host's network.
            assert _http(ports[unit], "/readyz") == (200, "ok\n"), unit
            status, text = _http(ports[unit], "/metrics")
            pm = _process_metrics(text)
            assert status == 200 and pm.get("process_open_fds", 0) > 0 and \
                pm.get("process_resident_memory_bytes", 0) > 0 and \
                pm.get("process_start_time_seconds", 0) > 0, (unit, pm)
        box.run(["test", "-d", "/var/lib/kproxyd"])
        box.run(["test", "-d", "/var/lib/kproxyd-east"])
        msgs = t.consume(c, ["events"], expected=2)
        assert sorted(m["value"] for m in msgs) == [b"via-east",
                                                     b"via-main"], msgs
        box.run(["systemctl", "stop", "kproxyd.service",
                 "kproxyd@east.service"], timeout=90)
        for unit in ("kproxyd.service", "kproxyd@east.service"):
            res = box.run(["systemctl", "show", "-p", "Result", "--value",
                           unit]).strip()
            assert res == "success", (unit, res, box.run(
                ["journalctl", "-u", unit, "--no-pager"], check=False))
            journal = box.run(["journalctl", "-u", unit, "--no-pager"],
                              check=False)
            assert "AddressSanitizer" not in journal and \
                "runtime error:" not in journal, journal[-6000:]
    finally:
        box.stop()


# --------------------------------------------------------------------------
# The Grafana dashboard

METRIC_RE = re.compile(r"\b((?:kproxyd|process)_[a-z0-9_]+)")


def test_dashboard_uses_exported_names(t):
    """conf/grafana-dashboard.json queries only metric names a running
    kproxyd exports (its `metrics` reply) or the process_* families
    (kp_procstats), and groups by labels those families have."""
    with open(os.path.join(REPO, "conf", "grafana-dashboard.json")) as f:
        dash = json.load(f)
    exprs = [tg["expr"] for p in dash["panels"] for tg in p.get("targets",
                                                                   [])]
    for v in dash["templating"]["list"]:
        if isinstance(v.get("query"), dict):
            exprs.append(v["query"]["query"])
    assert len(exprs) > 20, exprs

    c = t.cluster(topics={"events": 2})
    k = t.kproxyd(c)
    r = send(k.sock, b"events one\nevents two\n")
    assert r["delivered"] == 2, r
    lines = k.control_lines("metrics", until="# EOF")
    samples = {}   # sample name -> set of label names (None: no sample)
    suffixes = {"counter": ("_total",), "info": ("_info",),
                "histogram": ("_bucket", "_count", "_sum")}
    for line in lines:
        if line.startswith("# TYPE "):
            _, _, fam, typ = line.split(" ", 3)
            for suf in suffixes.get(typ, ("",)):
                samples.setdefault(fam + suf, None)
            continue
        if line.startswith("#") or not line:
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        labels = set(re.findall(r'([a-zA-Z_]+)="', line.split(" ")[0]))
        samples[name] = (samples.get(name) or set()) | labels
    with open(os.path.join(REPO, "src", "kp_procstats.c")) as f:
        procsrc = f.read()
    for expr in exprs:
        for name in METRIC_RE.findall(expr):
            if name.startswith("process_"):
                base = name[:-len("_total")] if name.endswith("_total") \
                    else name
                assert '"%s"' % base in procsrc, (name, expr)
                continue
            assert name in samples, (name, expr, sorted(samples))
            for grp in re.findall(r"by \(([^)]*)\)", expr):
                for label in (x.strip() for x in grp.split(",")):
                    if label in ("instance", "job", "le"):
                        continue
                    assert samples[name] is None or \
                        label in samples[name], (name, label, expr)
    assert k.stop() == 0


# --------------------------------------------------------------------------
# make deps

def test_make_deps_skippable(t):
    """`make check` and `make run` call `make deps` (tests/deps.sh, which
    runs apt-get for what is missing) and say so; NO_DEPS=1 skips it, in
    the environment or on the command line, and nothing else changes."""
    if not shutil.which("make"):
        raise Skip("make not installed")

    def clean_env():
        # as a user's shell: not a sub-make of `make check` (whose
        # MAKEFLAGS/MAKELEVEL make the inner make print its directory)
        e = dict(os.environ)
        for k in ("NO_DEPS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
            e.pop(k, None)
        return e

    def dry(target, env=None, *args):
        e = clean_env()
        e.update(env or {})
        p = subprocess.run(["make", "-n", "-C", REPO, target] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=e, timeout=tmo(60))
        out = p.stdout.decode("utf-8", "replace")
        assert p.returncode == 0, out
        return out

    for target in ("check", "run"):
        out = dry(target)
        assert "sh tests/deps.sh" in out and "NO_DEPS=1 skips" in out, out
        for env, args in (({"NO_DEPS": "1"}, ()), ({}, ("NO_DEPS=1",))):
            out = dry(target, env, *args)
            assert "tests/deps.sh" not in out, out
            assert "deps: skipped (NO_DEPS=1)" in out, out
    # The real thing: skipped, exit 0, with no package tool run.
    e = dict(clean_env(), NO_DEPS="1", PATH="/nonexistent")
    p = subprocess.run([shutil.which("make"), "-s", "-C", REPO, "deps"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=e, timeout=tmo(60))
    assert p.returncode == 0, p.stdout
    assert p.stdout.decode().strip() == "deps: skipped (NO_DEPS=1)", p.stdout
