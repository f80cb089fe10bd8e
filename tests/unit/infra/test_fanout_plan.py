"""The pure parts of the fan-out: pieces, per-host needs (resume bookkeeping), the stream
layout, chain/tree planning, re-routing around failed and slow hosts, rate and ETA."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealer.infra import transfer
from sealer.infra.fanout import commit_script, file_specs, parse_probe, stream
from sealer.infra.fanout_plan import (
    OPERATOR,
    FileSpec,
    Layout,
    Meter,
    Piece,
    host_need,
    plan_tree,
    reroute,
    slow_hosts,
    split,
    spread,
    union,
)


def spec(rel: str, data: bytes, chunk: int = 4, mode: int = 0o644) -> FileSpec:
    sums = [hashlib.sha256(data[i : i + chunk]).hexdigest() for i in range(0, len(data), chunk)]
    return split(rel, len(data), hashlib.sha256(data).hexdigest(), mode, 0, f"/src/{rel}", sums, chunk)


# ---------------------------------------------------------------- pieces and needs


def test_small_files_are_one_piece_by_path_large_ones_chunks_by_content() -> None:
    small = spec("a/b", b"abc")
    big = spec("big", b"0123456789")
    assert [p.name for p in small.pieces] == ["t/a/b"] and not small.chunked
    assert [p.name for p in big.pieces] == [f"c/{big.sha256}.{i}" for i in range(3)]
    assert [p.size for p in big.pieces] == [4, 4, 2]
    assert [p.offset for p in big.pieces] == [0, 4, 8]
    assert big.chunked
    with pytest.raises(ValueError):
        split("x", 10, "0" * 64, 0o644, 0, "/x", ["a"], 4)


def test_a_host_with_equal_files_needs_nothing() -> None:
    files = [spec("a", b"abc"), spec("big", b"0123456789")]
    dest = {f.rel: (f.sha256, f.mode) for f in files}
    need = host_need(files, dest, {})
    assert need.files == () and need.want == () and need.skipped == 2


def test_a_mode_change_alone_sends_the_file_again() -> None:
    f = spec("a", b"abc")
    need = host_need([f], {"a": (f.sha256, 0o600)}, {})
    assert [p.name for p in need.want] == ["t/a"]


def test_resume_keeps_good_staged_pieces_and_discards_bad_or_stale_ones() -> None:
    big = spec("big", b"0123456789")
    c0, c1, c2 = big.pieces
    staged = {
        c0.name: c0.sha256,  # arrived whole: kept
        c1.name: "f" * 64,  # corrupt or cut short: discarded and sent again
        "t/old": "e" * 64,  # from a tree that is gone: discarded
    }
    need = host_need([big], {}, staged)
    assert [p.name for p in need.want] == [c1.name, c2.name]
    assert need.staged_ok == {c0.name}
    assert set(need.discard) == {c1.name, "t/old"}
    assert need.want_bytes == 6 < big.size  # resumed, not from zero


def test_identical_content_travels_once() -> None:
    a, b = spec("x/one", b"0123456789"), spec("y/two", b"0123456789")
    need = host_need([a, b], {}, {})
    assert len(need.want) == 3 and len(need.files) == 2


def test_union_is_stable_and_deduplicated() -> None:
    f1, f2 = spec("b", b"x"), spec("a", b"y")
    n1 = host_need([f1, f2], {}, {})
    n2 = host_need([f1], {}, {})
    assert [p.name for p in union([n1, n2])] == ["t/a", "t/b"]
    assert union([n2, n1]) == union([n1, n2])


def test_small_pieces_are_spread_among_large_ones_by_bytes() -> None:
    def piece(name: str, size: int) -> Piece:
        return Piece(name, size, "0" * 64, 0o644, 0, "/src/" + name)

    large = [piece(f"t/big{i}", size) for i, size in enumerate([40 << 20, 5 << 20, 5 << 20])]
    small = [piece(f"t/s{i:03}", 10_000) for i in range(200)]
    out = spread([*large, *small])
    assert sorted(p.name for p in out) == sorted(p.name for p in [*large, *small])
    # each kind keeps its order
    assert [p for p in out if p in large] == large and [p for p in out if p in small] == small
    # big0 is 80% of the large bytes: it goes after 40% of the small files (its middle), the
    # 5 MB pieces after 85% and 95%; no run of small files is left for the end
    before = {p.name: sum(1 for q in out[: out.index(p)] if q in small) for p in large}
    assert before == {"t/big0": 80, "t/big1": 170, "t/big2": 190}
    assert out[-1] in small and sum(1 for q in out[out.index(large[-1]):] if q in small) == 10
    # nothing to spread: unchanged
    assert spread(small) == tuple(small) and spread(large) == tuple(large)


# ---------------------------------------------------------------- stream layout


def _files(tmp: Path, sizes: list[int]) -> list[FileSpec]:
    tree_dir = tmp / "src"
    tree_dir.mkdir()
    for i, size in enumerate(sizes):
        (tree_dir / ("n" * 120 if i == 0 else f"f{i}")).write_bytes(bytes((i + j) % 251 for j in range(size)))
    return file_specs(transfer.local_tree(tree_dir, "/dst"), chunk_bytes=1000)


async def _collect(layout: Layout, offset: int) -> bytes:
    return b"".join([c async for c in stream(layout, offset)])


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_the_stream_has_the_layouts_length_and_resumes_at_any_offset(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    tmp = tmp_path_factory.mktemp("s")
    sizes = data.draw(st.lists(st.integers(0, 2600), min_size=1, max_size=4))
    specs = _files(tmp, sizes)
    layout = Layout.of(union([host_need(specs, {}, {})]))
    whole = asyncio.run(_collect(layout, 0))
    assert len(whole) == layout.total
    offset = data.draw(st.integers(0, layout.total))
    assert asyncio.run(_collect(layout, offset)) == whole[offset:]
    # and it is a tar whose members are exactly the pieces, with their bytes
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        names = [m.name for m in tar.getmembers()]
        assert names == [p.name for p in layout.pieces]
        for p in layout.pieces:
            f = tar.extractfile(p.name)
            assert f is not None and hashlib.sha256(f.read()).hexdigest() == p.sha256


def test_gnu_tar_finds_the_end_of_the_stream_by_itself(tmp_path: Path) -> None:
    # a host's tar reads the stream from a pipe that stays open (tail -f of the spool): it must
    # exit after the last record on its own, with every piece written
    import subprocess

    specs = _files(tmp_path, [10, 2000, 0, 1500])
    layout = Layout.of(union([host_need(specs, {}, {})]))
    assert layout.total % tarfile.RECORDSIZE == 0 and layout.end < layout.total
    out = tmp_path / "out"
    out.mkdir()
    tar = subprocess.Popen(["tar", "-x", "-b", "20", "-f", "-", "-C", str(out)], stdin=subprocess.PIPE)
    assert tar.stdin is not None
    tar.stdin.write(asyncio.run(_collect(layout, 0)))
    tar.stdin.flush()  # and never closed while tar runs
    try:
        assert tar.wait(timeout=60) == 0
    finally:
        tar.kill()
        tar.stdin.close()
    for p in layout.pieces:
        assert hashlib.sha256((out / p.name).read_bytes()).hexdigest() == p.sha256


def test_first_at_finds_the_piece_holding_an_offset(tmp_path: Path) -> None:
    specs = _files(tmp_path, [10, 2000])
    layout = Layout.of(union([host_need(specs, {}, {})]))
    assert layout.first_at(0) == 0
    assert layout.first_at(layout.starts[1]) == 1
    assert layout.first_at(layout.starts[1] - 1) == 0
    assert layout.first_at(layout.total - 1) == len(layout.pieces)


# ---------------------------------------------------------------- trees and re-routing


def test_width_and_degree_one_is_a_chain() -> None:
    t = plan_tree(["a", "b", "c", "d"])
    assert t.parent == {"a": OPERATOR, "b": "a", "c": "b", "d": "c"}
    assert t.depth("d") == 3 and t.ancestors("d") == ["c", "b", "a"]


def test_a_tree_bounds_every_hosts_fan_out() -> None:
    hosts = [f"h{i}" for i in range(20)]
    t = plan_tree(hosts, width=2, degree=3)
    assert len(t.children(OPERATOR)) == 2
    assert all(len(t.children(h)) <= 3 for h in hosts)
    assert max(t.depth(h) for h in hosts) <= 3
    with pytest.raises(ValueError):
        plan_tree(hosts, degree=0)


def test_a_failed_host_is_cut_out_and_the_chain_re_forms() -> None:
    t = plan_tree(["a", "b", "c", "d"])
    links = reroute(t, "b", {"c": 50, "d": 40}, drop=True)
    assert links == [("a", "c")]
    assert t.parent == {"a": OPERATOR, "c": "a", "d": "c"}


def test_the_most_advanced_orphan_leads_the_others() -> None:
    t = plan_tree(["a", "b", "c", "d"], degree=3)  # a feeds b, c, d
    links = reroute(t, "a", {"b": 10, "c": 30, "d": 20}, drop=True)
    assert links[0] == (OPERATOR, "c")
    assert sorted(links[1:]) == [("c", "b"), ("c", "d")]
    assert "a" not in t.parent


def test_a_slow_host_stays_as_a_leaf() -> None:
    t = plan_tree(["a", "b", "c"])
    reroute(t, "b", {"c": 1}, drop=False)
    assert t.parent == {"a": OPERATOR, "b": "a", "c": "a"}
    assert t.children("b") == []


def test_rerouting_a_leaf_starts_no_links() -> None:
    t = plan_tree(["a", "b"])
    assert reroute(t, "b", {}, drop=True) == []
    assert t.parent == {"a": OPERATOR}


# ---------------------------------------------------------------- progress, slow hosts


def test_meter_rate_eta_and_stall() -> None:
    m = Meter(total=100)
    m.sample(0.0, 0)
    m.sample(1.0, 10)
    assert m.rate == 10.0 and m.eta == 9.0
    m.sample(2.0, 10)
    m.sample(5.0, 10)
    assert m.stalled_for(5.0) == 4.0  # nothing new since the sample at t=1
    m.sample(6.0, 100)
    assert m.stalled_for(6.0) == 0.0 and m.eta == 0.0
    assert Meter(total=5).eta is None  # no rate yet: no guess


def _meters(rates: dict[str, tuple[int, int]]) -> dict[str, Meter]:
    out = {}
    for h, (got, rate) in rates.items():
        m = Meter(total=1 << 30)
        m.sample(0.0, max(got - rate, 0))
        m.sample(1.0, got)
        out[h] = m
    return out


def test_slow_host_found_only_when_it_holds_a_subtree_back() -> None:
    t = plan_tree(["a", "b", "c"])
    meters = _meters({"a": (80 << 20, 10 << 20), "b": (20 << 20, 1 << 20), "c": (19 << 20, 1 << 20)})
    assert slow_hosts(t, meters) == ["b"]
    # a slow leaf holds nobody back; a host fed by the operator has nothing faster to go to
    assert slow_hosts(plan_tree(["a", "b"]), meters) == []
    # a small lag is normal pipelining
    close = _meters({"a": (21 << 20, 10 << 20), "b": (20 << 20, 1 << 20), "c": (19 << 20, 1 << 20)})
    assert slow_hosts(t, close) == []


# ---------------------------------------------------------------- host-side text


def test_probe_output_parses_destination_and_staged_digests() -> None:
    out = (
        b"a" * 64
        + b"  x/y\0"
        + transfer.STAT_MARK
        + b"644 regular file\tx/y\0"
        + b"\0::sealer-staged::\0"
        + b"b" * 64
        + b"  c/abc.0\0"
        + b"c" * 64
        + b"  t/x/y\0"
    )
    dest, staged = parse_probe(out)
    assert dest == {"x/y": ("a" * 64, 0o644)}
    assert staged == {"c/abc.0": "b" * 64, "t/x/y": "c" * 64}


def test_commit_verifies_what_it_received_and_joins_only_complete_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(b"x" * 2500)
    (src / "small").write_bytes(b"y")
    tree = transfer.local_tree(src, "/dst")
    specs = file_specs(tree, chunk_bytes=1000)
    need = host_need(specs, {}, {})
    from sealer.infra.fanout import _Paths

    script = commit_script(_Paths("r1", "/dst", "root"), need, tree)
    for p in need.want:  # every received piece is checked against its digest
        assert f"{p.sha256}  {p.name}" in script
    big = next(s for s in specs if s.rel == "big")
    assert f"{big.sha256}  big" in script  # and the joined file against the file's digest
    assert "mv -f" in script and "rm -rf -- /dst/.sealer-fanout/t" in script


# ---------------------------------------------------------------- key hygiene (run locally in bash)


def test_authorized_line_is_restricted_and_expires() -> None:
    import datetime as dt

    from sealer.infra.fanout import _Paths, authorized_line

    p = _Paths("abc123", "/var/lib/x y", "root")
    when = dt.datetime(2030, 1, 2, 3, 4, tzinfo=dt.UTC)
    line = authorized_line(p, "ssh-ed25519 AAAAkey", ["10.0.0.1", "10.0.0.2"], when)
    assert line.startswith('restrict,from="10.0.0.1,10.0.0.2",expiry-time="203001020304Z",command="')
    assert "exec dd of='/var/lib/x y/.sealer-fanout/spool-abc123' oflag=append" in line
    assert "$(cat /tmp/sealer-fanout-abc123/total)" in line
    assert line.rstrip().endswith(f"ssh-ed25519 AAAAkey sealer-fanout:abc123:{int(when.timestamp())}")


def test_cleanup_removes_this_runs_and_expired_keys_only(tmp_path: Path) -> None:
    import subprocess

    from sealer.infra.fanout import _cleanup_body, _Paths

    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    ak = ssh / "authorized_keys"
    keep = "ssh-ed25519 AAAAmine me@laptop\n"
    other_live = 'restrict,command="x" ssh-ed25519 AAAAb sealer-fanout:otherrun:9999999999\n'
    ak.write_text(
        keep
        + 'restrict,command="x" ssh-ed25519 AAAAa sealer-fanout:run1:9999999999\n'
        + other_live
        + 'restrict,command="x" ssh-ed25519 AAAAc sealer-fanout:oldrun:1000\n'
    )
    ak.chmod(0o600)
    inode = ak.stat().st_ino
    p = _Paths("run1", str(tmp_path / "dst"), "root")
    subprocess.run(["bash", "-c", _cleanup_body(p, str(tmp_path))], check=True)
    assert ak.read_text() == keep + other_live  # another live run's key stays
    assert ak.stat().st_ino == inode and (ak.stat().st_mode & 0o777) == 0o600
