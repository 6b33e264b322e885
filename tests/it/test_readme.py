"""The README's examples work as shown (issue 14, "README errors").

Every ```console block of README.md (`$ command` lines, each followed by
the output it prints) is run in order, as a reader following the README
would, in a scratch directory against `make run`'s own script
(tests/run_dev.sh: the mock cluster and kproxyd with
conf/kproxyd.dev.json, `run/` in that directory), with two substitutions:
`/run/kproxyd/` becomes `run/`, and the sample's HTTP address
127.0.0.1:9466 a free port (passed to kproxyd as -X http.listen). stdout
and stderr are compared together with the shown output; a line `...`
stands for any lines, `...` in a line for any text. Every command must
exit 0.

And `make run`'s banner suggests the README's quick-start commands.
"""

import os
import re
import shutil
import signal
import socket
import subprocess

from kptest import Skip, tmo, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONSOLE = re.compile(r"^```console\n(.*?)^```$", re.M | re.S)


def console_blocks(text):
    """[[(command, [expected lines])]] of each console block."""
    out = []
    for m in CONSOLE.finditer(text):
        steps = []
        for line in m.group(1).splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                assert steps, "console block starts with output: %r" % line
                steps[-1][1].append(line)
        out.append(steps)
    return out


def output_re(expected):
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:.*\n)*?")
        else:
            parts.append(".*".join(re.escape(p) for p in line.split("..."))
                         + r"\n")
    return re.compile("".join(parts))


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_readme_console_examples(t):
    for tool in ("socat", "kcat", "curl"):
        if not shutil.which(tool):
            raise Skip("%s not installed (tests/deps.sh installs it)" % tool)
    tools = os.path.join(REPO, "build", "tools")
    if not os.access(os.path.join(tools, "kp_mock"), os.X_OK):
        raise Skip("make run's script needs build/tools (make tools)")
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = console_blocks(f.read())
    assert len(blocks) >= 5, "README has %d console blocks" % len(blocks)

    work = t.path("work")
    run = os.path.join(work, "run")
    os.makedirs(run)
    port = _free_port()
    binary = os.path.abspath(t.kproxyd_binary)
    out_path = t.path("make-run.out")
    env = dict(os.environ, KP_RUN_DIR=run)
    for k in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC"):
        env.pop(k, None)
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            ["sh", os.path.join(REPO, "tests", "run_dev.sh"), binary,
             "-X", "http.listen=127.0.0.1:%d" % port],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, start_new_session=True)
    try:
        def up():
            assert proc.poll() is None, open(out_path).read()
            return all(_accepts(os.path.join(run, s))
                       for s in ("kproxyd.sock", "control.sock")) and \
                os.path.exists(os.path.join(run, "bootstrap"))
        wait_for(up, 30, "make run's kproxyd")

        shell_env = dict(env, PATH=os.path.dirname(binary) + os.pathsep +
                         env.get("PATH", ""))
        for steps in blocks:
            for cmd, expected in steps:
                real = cmd.replace("/run/kproxyd/", "run/").replace(
                    "127.0.0.1:9466", "127.0.0.1:%d" % port)
                p = subprocess.run(["bash", "-c", real], cwd=work,
                                   env=shell_env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT,
                                   timeout=tmo(90))
                got = p.stdout.decode("utf-8", "replace")
                assert p.returncode == 0, (cmd, p.returncode, got)
                assert output_re(expected).fullmatch(got), \
                    "README example %r printed:\n%s\nthe README shows:\n%s" \
                    % (cmd, got, "\n".join(expected))

        # make run's banner: the README's quick-start commands.
        banner = open(out_path).read()
        shown = [ln.strip().replace(run + "/", "run/")
                 for ln in banner.split("Ctrl-C")[0].splitlines()
                 if ln.startswith("    ")]
        readme_cmds = [cmd for cmd, _ in blocks[0]]
        assert shown == readme_cmds, (shown, readme_cmds)
        assert "nc -U" not in banner
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            rc = proc.wait(tmo(30))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    log = open(out_path).read()
    # SIGTERM to the group, as Ctrl-C's SIGINT: the script exits 130 once
    # kproxyd has drained, and the mock is gone.
    assert rc in (0, 130), log[-3000:]
    assert "shutdown: everything delivered or failed" in log, log[-3000:]
    assert "ERROR: AddressSanitizer" not in log and \
        "runtime error:" not in log, log[-6000:]


def test_readme_names_every_reason(t):
    """Every fate reason (include/kp_reason.h, the one fixed set receipts,
    stats, metrics and the dead letter use) is named in the README's list,
    and the list names nothing else."""
    with open(os.path.join(REPO, "include", "kp_reason.h")) as f:
        reasons = set(re.findall(r'^\s*X\(\w+, "(\w+)"', f.read(),
                                 re.M)) - {"none"}
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = text.index("REASON is one of the fixed")
    listed = set(re.findall(r"`([a-z_]+)`",
                            text[start:text.index("kproxyd writes the receipts",
                                                  start)]))
    listed -= {"stats", "rejected_by", "failed_by", "reason", "error"}
    assert reasons, "no reasons found in kp_reason.h"
    assert listed == reasons, (sorted(reasons - listed),
                               sorted(listed - reasons))
