"""Phase lines stay readable at 300 hosts: equal outcomes are counted, failures and warnings named."""

from __future__ import annotations

import io

from rich.console import Console

from sealer.apply.progress import ALL_NAMED, NAMED_PER_GROUP, Progress


def _progress() -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    return Progress(Console(file=out, width=100000, highlight=False, no_color=True)), out


def test_a_few_hosts_are_each_named() -> None:
    progress, out = _progress()
    progress.phase("connect + facts")
    for i in range(ALL_NAMED):
        progress.host(f"10.0.0.{i}", "ok", "x86_64 debian 12")
    progress.end_phase()
    text = out.getvalue()
    assert text.count("x86_64 debian 12") == ALL_NAMED
    assert all(f"10.0.0.{i} x86_64" in text for i in range(ALL_NAMED))


def test_300_hosts_make_one_short_line_naming_only_those_to_act_on() -> None:
    progress, out = _progress()
    progress.phase("connect + facts")
    for i in range(300):
        ip = f"10.0.{i // 250}.{i % 250}"
        if i in (7, 150):
            progress.host(ip, "failed", "unreachable")
        elif i == 299:
            progress.host(ip, "warning", "clock differs by +40s")
        else:
            progress.host(ip, "ok", "x86_64 debian 12")
    progress.end_phase()
    (line,) = out.getvalue().splitlines()
    assert line.startswith("✗ connect + facts")
    assert "300 hosts: 2 failed (unreachable): 10.0.0.7, 10.0.0.150, 1 warning" in line
    assert "(clock differs by +40s): 10.0.1.49" in line
    assert "297 ok (x86_64 debian 12)" in line
    assert "10.0.0.8" not in line  # the ones that are fine are counted, not listed
    assert len(line) < 250


def test_many_failures_name_the_first_few_and_count_the_rest() -> None:
    progress, out = _progress()
    progress.phase("pre-flight")
    for i in range(40):
        progress.host(f"10.0.0.{i}", "failed", "port 6443 is already in use")
    progress.end_phase(failed=True)
    line = out.getvalue()
    assert "40 failed (port 6443 is already in use): 10.0.0.0, 10.0.0.1" in line
    assert f"10.0.0.{NAMED_PER_GROUP - 1}, +{40 - NAMED_PER_GROUP} more" in line
    assert f"10.0.0.{NAMED_PER_GROUP}," not in line


def test_quiet_prints_only_failed_phases() -> None:
    out = io.StringIO()
    progress = Progress(Console(file=out, width=1000, no_color=True), quiet=True)
    progress.phase("copy")
    for i in range(50):
        progress.host(f"10.0.0.{i}", "ok")
    progress.phase("install")
    progress.host("10.0.0.1", "failed", "exit 1")
    progress.end_phase(failed=True)
    assert out.getvalue().startswith("✗ install") and "copy" not in out.getvalue()
