"""The decision table (DistCp CopyMapper.FileAction, rclone NeedTransfer)."""

from __future__ import annotations

import pytest

from replicator.diff import Action, Side, decide, same

F = "f"
D = "d"
S = 1_000_000_000  # one second in ns


def f(size: int, mtime: int, checksum: str | None = None) -> Side:
    return Side(F, size, mtime, checksum)


CASES = [
    # name, src, recorded, dst, dst_listed, kwargs, expected
    ("new file, nothing known", f(1, S), None, None, False, {}, Action.COPY),
    ("new file, destination listed and empty", f(1, S), None, None, True, {}, Action.COPY),
    ("recorded and unchanged", f(1, S), f(1, S), None, False, {}, Action.SKIP),
    ("recorded, size changed", f(2, S), f(1, S), None, False, {}, Action.UPDATE),
    ("recorded, mtime changed", f(1, 2 * S), f(1, S), None, False, {}, Action.UPDATE),
    ("recorded, mtime within precision", f(1, S + 500), f(1, S), None, False, {"precision_ns": S}, Action.SKIP),
    ("recorded, mtime beyond precision", f(1, 3 * S), f(1, S), None, False, {"precision_ns": S}, Action.UPDATE),
    ("no record, destination same", f(1, S), None, f(1, S), True, {}, Action.SKIP),
    ("no record, destination differs in size", f(1, S), None, f(2, S), True, {}, Action.UPDATE),
    ("no record, destination older", f(1, 2 * S), None, f(1, S), True, {}, Action.UPDATE),
    ("FTP-like 1 s precision on destination", f(1, S + 123_456_789), None, f(1, S), True, {"precision_ns": S}, Action.SKIP),
    ("recorded but gone from destination", f(1, S), f(1, S), None, True, {}, Action.COPY),
    ("recorded but destination changed by someone", f(1, S), f(1, S), f(9, S), True, {}, Action.UPDATE),
    ("checksum mode, same content", f(1, S, "crc32c:01"), f(1, 5 * S, "crc32c:01"), None, False, {"checksum": True}, Action.SKIP),
    ("checksum mode, different content", f(1, S, "crc32c:01"), f(1, S, "crc32c:02"), None, False, {"checksum": True}, Action.UPDATE),
    ("checksum mode, unknown checksum", f(1, S, "crc32c:01"), f(1, S), None, False, {"checksum": True}, Action.UPDATE),
    ("held back (too new)", f(1, S), None, None, True, {"held": True}, Action.SKIP),
    ("held back, recorded and changed", f(2, S), f(1, S), None, False, {"held": True}, Action.SKIP),
    ("only at destination, no --delete", None, None, f(1, S), True, {}, Action.SKIP),
    ("only at destination, --delete", None, None, f(1, S), True, {"delete": True}, Action.DELETE),
    ("only in manifest, not listed, --delete", None, f(1, S), None, False, {"delete": True}, Action.SKIP),
    ("directory new", Side(D, 0, S), None, None, True, {}, Action.COPY),
    ("directory exists", Side(D, 0, S), None, Side(D, 0, 7 * S), True, {}, Action.SKIP),
    ("directory recorded", Side(D, 0, S), Side(D, 0, 2 * S), None, False, {}, Action.SKIP),
    ("file where a directory is", f(1, S), None, Side(D, 0, S), True, {}, Action.UPDATE),
]


@pytest.mark.parametrize(("name", "src", "rec", "dst", "listed", "kw", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_decide(name, src, rec, dst, listed, kw, expected) -> None:
    assert decide(src, rec, dst, dst_listed=listed, **kw) is expected


def test_same_is_symmetric_and_respects_kind() -> None:
    a, b = f(3, S), f(3, S + 10)
    assert same(a, b, checksum=False, precision_ns=100) == same(b, a, checksum=False, precision_ns=100)
    assert not same(a, Side(D, 3, S), checksum=False, precision_ns=1)


def _scratch_cases():
    """Every combination of source, manifest and destination row for one path each, over the
    cases the bulk filter must tell apart (equal, off by a size, an mtime, a kind, held)."""
    import itertools

    src = [("f", 1, S, 0), ("f", 1, S, 1), ("d", 0, S, 0)]
    rec = [None, ("f", 1, S), ("f", 2, S), ("f", 1, S + 5), ("f", -1, 0), ("d", 0, 3 * S)]
    dst = [None, ("f", 1, S), ("f", 1, S + 5), ("f", 1, S + 2 * S), ("f", 2, S), ("d", 0, 9 * S)]
    return list(itertools.product(src, rec, dst))


@pytest.mark.parametrize("dst_listed", [False, True])
@pytest.mark.parametrize("precision", [1, 1000])
def test_bulk_settled_rows_are_exactly_skips_with_nothing_to_record(dst_listed, precision) -> None:
    """The rows the scratch database sets aside in bulk (the no-op re-sync's fast path) are
    decided SKIP row by row too, for a path whose record already says what the destination
    holds; every other row still reaches :func:`decide`, with the same decision."""
    from replicator.diff import iter_decisions
    from replicator.state.scratch import Scratch

    cases = _scratch_cases()
    with Scratch() as scratch:
        scratch.add_listing("src", [(f"p{i:04d}", k, size, m, None, None, None, held)
                                    for i, ((k, size, m, held), _r, _d) in enumerate(cases)])
        scratch.load_manifest([(f"p{i:04d}", *r, None, 0.0) for i, (_s, r, _d) in enumerate(cases)
                               if r is not None])
        scratch.add_listing("dst", [(f"p{i:04d}", *d, None, None, None, 0)
                                    for i, (_s, _r, d) in enumerate(cases) if d is not None])
        kw = {"dst_listed": dst_listed, "checksum": False, "precision_ns": precision, "delete": False}
        every = {d.rel: d for d in iter_decisions(scratch, **kw)}
        settled: list[int] = []
        bulk = {d.rel: d for d in iter_decisions(scratch, **kw, settled=settled)}
    left_out = set(every) - set(bulk)
    assert left_out, "the table has settled rows"
    assert all(bulk[p] == every[p] for p in bulk)
    for p in left_out:
        (kind, size, mtime, held), rec, dst = cases[int(p[1:])]
        assert every[p].action is Action.SKIP and not held
        assert rec is not None and rec[0] == kind and (kind == "d" or rec[1:] == (size, mtime))
        if dst_listed:
            assert dst is not None and dst[0] == kind
    assert settled == [sum(1 for p in left_out if every[p].kind == "f")]


@pytest.mark.parametrize("manifest_order", ["path", "reversed"])
def test_settling_merge_leaves_out_exactly_the_settled_rows(manifest_order) -> None:
    """:meth:`Scratch.load_settling` (the ordered listing merged with the manifest in one
    pass) decides every path as loading both sides in full does: the paths it leaves out
    of the scratch tables are the ones the bulk filter settles, its count is theirs, and
    the stale manifest rows are the same. A manifest in another order than the listing
    (two sorts that disagree) changes only what is left out, never a decision."""
    from replicator.diff import iter_decisions
    from replicator.listing import Entry
    from replicator.state.scratch import Scratch

    cases = [c for c in _scratch_cases() if c[2] is None]  # no destination listing
    entries = [Entry(f"p{i:04d}", k, size, m, None, None, None, bool(held))
               for i, ((k, size, m, held), _r, _d) in enumerate(cases)]
    manifest = [(f"p{i:04d}", *r, None, 0.0) for i, (_s, r, _d) in enumerate(cases) if r is not None]
    manifest += [("p9999-gone", "f", 3, S, None, 0.0), ("o-gone-first", "f", 3, S, None, 0.0)]
    # directories whose every row is unchanged, before and after the table's (settled in bulk)
    same_before = [Entry(f"a{i}", "f", i, S) for i in range(5)] + [Entry("a9", "d", 0, S)]
    same_after = [Entry(f"q{i}", "f", i, S) for i in range(3)]
    manifest += [(e.rel, e.kind, e.size, e.mtime_ns, None, 0.0) for e in same_before + same_after]
    # a directory whose paths all line up with the manifest, a few of them changed (a 1%
    # re-sync): a size, an mtime, a file now a directory, a directory whose mtime moved
    same_paths = [Entry(f"m{i}", "f", i, S) for i in range(6)] + [Entry("m6", "d", 0, S + 5),
                                                                  Entry("m7", "d", 0, S)]
    manifest += [("m0", "f", 0, S, None, 0.0), ("m1", "f", 99, S, None, 0.0),
                 ("m2", "f", 2, S - 7, None, 0.0), ("m3", "f", 3, S, None, 0.0),
                 ("m4", "f", 4, S, None, 0.0), ("m5", "f", 5, S, None, 0.0),
                 ("m6", "d", 0, S, None, 0.0), ("m7", "f", 0, S, None, 0.0)]
    manifest.sort()
    batches = [same_before, same_paths, entries[:7], entries[7:], same_after]
    kw = {"dst_listed": False, "checksum": False, "precision_ns": 1, "delete": False}
    with Scratch() as full:
        full.load_listing("src", batches)
        full.load_manifest(manifest)
        every = {d.rel: d for d in iter_decisions(full, **kw)}
        stale = sorted(full.stale_manifest_entries())
    with Scratch() as merged:
        order = manifest if manifest_order == "path" else manifest[::-1]
        settled = merged.load_settling([[e.row() for e in b] for b in batches], iter(order))
        bulk: list[int] = []
        got = {d.rel: d for d in iter_decisions(merged, **kw, settled=bulk)}
        assert sorted(merged.stale_manifest_entries()) == stale == [
            ("o-gone-first", "f"), ("p9999-gone", "f")]
    left_out = set(every) - set(got)
    assert all(got[p] == every[p] for p in got)
    assert all(every[p].action is Action.SKIP for p in left_out)
    files_left_out = sum(1 for p in left_out if every[p].kind == "f")
    assert settled + bulk[0] == files_left_out  # each settled file counted once
    if manifest_order == "path":  # the merge settles every one of them itself
        assert bulk == [0] and {e.rel for e in same_before + same_after} < left_out
        assert {"m0", "m3", "m4", "m5", "m6"} < left_out
        assert {"m1", "m2", "m7"} <= set(got) and got["m7"].action is not Action.SKIP
        assert got["m1"].action is Action.UPDATE and got["m2"].action is Action.UPDATE
    else:  # few paths meet in the merge: the join settles the others
        assert bulk[0] > settled
