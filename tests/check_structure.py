#!/usr/bin/env python3
"""check_structure.py - keeps the structure the README draws.

- Layers: every module (src/kp_X.c, include/kp_X.h) belongs to one layer; a
  module includes only headers of its own layer or lower ones (and no
  include cycle inside a layer), and reaches upward only through callbacks
  it was handed. A module missing from the table is an error too, so a new
  module is placed on purpose.
- Size: no function in src/ over 80 lines.

Prints the include graph with --graph. Exits 1 on a violation.
"""

import glob
import os
import re
import sys

# Bottom to top; the README's design section shows the same table.
LAYERS = [
    # 0: pure (no loop, no I/O) or self-contained helpers
    ["common", "log", "buf", "crc32c", "record", "proto", "line", "frame",
     "compress", "partitioner", "conf", "conf_impl", "conf_types",
     "conf_containers", "conf_value", "conf_rules", "conf_override",
     "kerr", "reason", "hist", "counters", "sasl", "tls", "dns",
     "procstats", "uidmap", "spool", "spool_seg", "spool_sync"],
    # 1: the message pipeline below the network
    ["tally", "batch", "linger", "deadletter", "partition", "topic",
     "router"],
    # 2: connections
    ["broker", "broker_auth", "broker_impl", "client", "listener"],
    # 3: cluster state and the sender
    ["metadata", "idemp", "produce"],
    # 4: interfaces to operators
    ["stats", "control", "http", "systemd", "health"],
    # 5: wiring
    ["ctx", "main"],
]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INCLUDE = re.compile(r'^#include "kp_([a-z0-9_]+)\.h"', re.M)


def layer_of():
    table = {}
    for n, mods in enumerate(LAYERS):
        for m in mods:
            table[m] = n
    return table


def modules():
    """module name -> [files]"""
    out = {}
    for path in glob.glob(os.path.join(ROOT, "src", "*.c")) + \
            glob.glob(os.path.join(ROOT, "include", "*.h")):
        base = os.path.splitext(os.path.basename(path))[0]
        name = "main" if base == "main" else base[3:] if \
            base.startswith("kp_") else None
        if name is not None:
            out.setdefault(name, []).append(path)
    return out


MAX_FUNCTION_LINES = 80


def long_functions():
    """Functions whose body (between a column-0 '{' and '}') is too long."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "src", "*.c"))):
        with open(path) as f:
            lines = f.read().split("\n")
        start = None
        for i, line in enumerate(lines):
            if line == "{" and start is None:
                start = i
            elif line == "}" and start is not None:
                if i - start - 1 > MAX_FUNCTION_LINES:
                    out.append("%s:%d: function of %d lines (> %d)"
                               % (os.path.relpath(path, ROOT), start + 1,
                                  i - start - 1, MAX_FUNCTION_LINES))
                start = None
    return out


def cycles(graph):
    """Include cycles, as lists of modules."""
    succ = {}
    for a, b in graph:
        succ.setdefault(a, set()).add(b)
    found, state = [], {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(succ.get(m, ())):
            if state.get(n) == 1:
                found.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(succ):
        if m not in state:
            visit(m, [m])
    return found


def main():
    table = layer_of()
    problems = []
    graph = set()
    for mod, files in sorted(modules().items()):
        if mod not in table:
            problems.append("kp_%s: not in any layer (tests/check_structure.py)"
                            % mod)
            continue
        for path in files:
            with open(path) as f:
                text = f.read()
            for inc in INCLUDE.findall(text):
                if inc == mod:
                    continue
                graph.add((mod, inc))
                if inc not in table:
                    problems.append("%s: includes kp_%s.h, in no layer"
                                    % (os.path.relpath(path, ROOT), inc))
                elif table[inc] > table[mod]:
                    problems.append(
                        "%s (layer %d) includes kp_%s.h (layer %d): a lower "
                        "module reaches up; hand it a callback instead"
                        % (os.path.relpath(path, ROOT), table[mod], inc,
                           table[inc]))
    for c in cycles(graph):
        problems.append("include cycle: " + " -> ".join("kp_" + m for m in c))
    problems += long_functions()
    if "--graph" in sys.argv:
        for a, b in sorted(graph, key=lambda e: (table.get(e[0], 9), e)):
            print("%-12s -> %s" % (a, b))
    for p in problems:
        print("structure: " + p)
    print("structure: %d modules, %d include arrows, %d problem(s)"
          % (len(modules()), len(graph), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
