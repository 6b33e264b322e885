"""wiretrace - what kproxyd put on the wire, read from its debug log.

kproxyd logs one line per batch it sends (kp_broker_trace):

    produce: broker=N topic=T partition=P pid=.. epoch=.. seq=.. count=..
             crc=.. attempt=.. bytes=.. id=..

(`id` is unique per batch within its partition; a split's halves are new
batches.) The 2.0.2 mock cluster does not deduplicate idempotent retries,
so "no duplicates" is proven here, on the wire: a resend must be the
identical batch, and sequences must run without gaps.
"""

import re

PRODUCE_RE = re.compile(
    r"produce: broker=(-?\d+) topic=(\S+) partition=(\d+) pid=(-?\d+) "
    r"epoch=(-?\d+) seq=(-?\d+) count=(\d+) crc=([0-9a-f]{8}) "
    r"attempt=(\d+) bytes=(\d+) id=(\d+)")

FIELDS = ("broker", "topic", "partition", "pid", "epoch", "seq", "count",
          "crc", "attempt", "bytes", "id")


def sends(log_text, topics=None):
    """Every produce trace line, in order, as dicts."""
    out = []
    for line in log_text.splitlines():
        m = PRODUCE_RE.search(line)
        if not m:
            continue
        d = dict(zip(FIELDS, m.groups()))
        for f in FIELDS:
            if f not in ("topic", "crc"):
                d[f] = int(d[f])
        if topics is None or d["topic"] in topics:
            out.append(d)
    return out


def check(trace, idempotent=True):
    """Asserts the wire properties of idempotent delivery; returns a
    summary dict (sends, resends, pids, per-partition next sequence).

    - a batch (topic, partition, id) sent again under the same producer id
      and epoch carries the same sequence, count and CRC: it is the
      identical batch, which a real broker deduplicates;
    - per (topic, partition, pid, epoch) the first sends of the batches
      have sequences 0, then each the previous one's seq + count: no gap,
      no overlap, no step back;
    - attempts of a batch count up by one per send (no send unlogged).
    """
    first = {}       # (topic, part, id, pid, epoch) -> send
    attempts = {}    # (topic, part, id) -> last attempt
    next_seq = {}    # (topic, part, pid, epoch) -> expected next sequence
    resends = 0
    pids = set()
    for s in trace:
        bid = (s["topic"], s["partition"], s["id"])
        # A split's halves start from the attempts of the batch they
        # replace; then each send counts one more.
        assert bid not in attempts or s["attempt"] == attempts[bid] + 1, \
            "attempts of %r go %d -> %d" % (bid, attempts[bid],
                                             s["attempt"])
        attempts[bid] = s["attempt"]
        if s["attempt"] > 1:
            resends += 1
        if not idempotent:
            assert s["pid"] == -1 and s["seq"] == -1, s
            continue
        assert s["pid"] >= 0 and s["seq"] >= 0, "not stamped: %r" % s
        pids.add((s["pid"], s["epoch"]))
        key = bid + (s["pid"], s["epoch"])
        if key in first:
            f = first[key]
            for fld in ("seq", "count", "crc", "bytes"):
                assert s[fld] == f[fld], \
                    "resend of %r differs in %s: %r vs original %r" % (
                        bid, fld, s, f)
            continue
        first[key] = s
        pk = (s["topic"], s["partition"], s["pid"], s["epoch"])
        want = next_seq.get(pk, 0)
        assert s["seq"] == want, \
            "%s [%d] pid %d epoch %d: sequence %d, expected %d (%r)" % (
                s["topic"], s["partition"], s["pid"], s["epoch"], s["seq"],
                want, s)
        next_seq[pk] = s["seq"] + s["count"]
    return {"sends": len(trace), "resends": resends, "pids": pids,
            "next_seq": next_seq}


def check_by_seq(trace):
    """The check the issue words for case 7: every resend (attempt > 1) of
    (topic, partition, seq) has the pid, epoch, count and CRC of the
    original send of that sequence, and per partition the sequences of
    first sends run without gaps. Only valid when the producer id never
    changed (one pid/epoch in the trace)."""
    orig = {}
    nxt = {}
    resends = 0
    for s in trace:
        k = (s["topic"], s["partition"], s["seq"])
        if s["attempt"] > 1:
            resends += 1
            assert k in orig, "resend of a sequence never sent: %r" % s
            o = orig[k]
            for fld in ("pid", "epoch", "count", "crc"):
                assert s[fld] == o[fld], \
                    "resend %r differs from original %r in %s" % (s, o, fld)
            continue
        assert k not in orig, "sequence sent twice as new: %r / %r" % (
            orig[k], s)
        orig[k] = s
        pk = (s["topic"], s["partition"])
        assert s["seq"] == nxt.get(pk, 0), \
            "gap: %r, expected seq %d" % (s, nxt.get(pk, 0))
        nxt[pk] = s["seq"] + s["count"]
    return resends
