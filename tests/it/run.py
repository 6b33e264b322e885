#!/usr/bin/env python3
"""run.py - runs kproxyd's integration tests (tests/it/test_*.py).

    python3 tests/it/run.py --kproxyd build/kproxyd --tools build/tools
                            [-k SUBSTRING]... [-x] [--list] [--keep]

Every function `test_*(t)` of every tests/it/test_*.py module runs in
definition order with a fresh temporary directory (kptest.T). Prints
`PASS name (1.2s)` or `FAIL name` with the traceback and the kproxyd log
tails (or `SKIP name (why)`, counted in neither), and ends with the line
`N passed, N failed`; exits 1 if any failed.
-k selects tests whose `module.function` name contains a substring (any of
several -k). The temporary directory of a failed test is kept (and named);
--keep keeps them all.
"""

import argparse
import glob
import importlib
import inspect
import os
import shutil
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True   # no __pycache__ in the source tree

import kptest  # noqa: E402


def discover():
    tests = []
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        modname = os.path.splitext(os.path.basename(path))[0]
        mod = importlib.import_module(modname)
        fns = [(getattr(fn, "__code__").co_firstlineno, name, fn)
               for name, fn in vars(mod).items()
               if name.startswith("test_") and inspect.isfunction(fn)
               and fn.__module__ == modname]
        for _, name, fn in sorted(fns):
            tests.append(("%s.%s" % (modname, name), fn))
    return tests


def run_one(name, fn, keep):
    tmpdir = tempfile.mkdtemp(prefix="kpit-")
    t = kptest.T(name, tmpdir)
    start = time.monotonic()
    failure = None
    skipped = None
    try:
        fn(t)
    except kptest.Skip as e:
        skipped = str(e)
    except BaseException as e:  # noqa: a test may raise anything
        if isinstance(e, KeyboardInterrupt):
            raise
        failure = traceback.format_exc()
    try:
        problems = t.teardown()
    except BaseException:  # noqa
        problems = [traceback.format_exc()]
    elapsed = time.monotonic() - start
    if skipped is not None and not problems:
        print("SKIP %s (%s)" % (name, skipped), flush=True)
        shutil.rmtree(tmpdir, ignore_errors=True)
        return None
    if failure is None and not problems:
        print("PASS %s (%.1fs)" % (name, elapsed), flush=True)
        if not keep:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return True
    print("FAIL %s (%.1fs)" % (name, elapsed))
    if failure:
        print(failure.rstrip())
    for p in problems:
        print(p.rstrip())
    diag = t.diagnostics()
    if diag:
        print(diag)
    print("(files kept in %s)" % tmpdir, flush=True)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kproxyd", default="build/kproxyd")
    ap.add_argument("--tools", default="build/tools")
    ap.add_argument("-k", action="append", default=[],
                    help="run tests whose name contains this")
    ap.add_argument("-x", action="store_true", help="stop at first failure")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true",
                    help="keep every test's temporary directory")
    args = ap.parse_args()

    kptest.configure(os.path.abspath(args.kproxyd),
                     os.path.abspath(args.tools))
    tests = discover()
    if args.k:
        tests = [(n, f) for n, f in tests if any(k in n for k in args.k)]
    if args.list:
        for n, _ in tests:
            print(n)
        return 0
    print("kproxyd %s, tools %s, timeout scale %g, %d tests"
          % (kptest.KPROXYD, kptest.TOOLS, kptest.SCALE, len(tests)),
          flush=True)
    passed = failed = 0
    for name, fn in tests:
        ok = run_one(name, fn, args.keep)
        if ok is None:
            continue
        if ok:
            passed += 1
        else:
            failed += 1
            if args.x:
                break
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
