"""images/lib/common.sh, which every images/*/build.sh sources: flags, checksum verification and
the context layout fail loudly and clearly (no network: everything here is local files)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
COMMON = ROOT / "images/lib/common.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _bash(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; . {COMMON}; {script}", "bash", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@pytest.mark.parametrize("runtime", ["k3s", "k0s", "kubernetes"])
def test_each_build_script_refuses_unknown_flags_and_bad_arch(runtime: str) -> None:
    script = ROOT / "images" / runtime / "build.sh"
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "unknown argument --bogus (see --help)" in bad.stderr
    arch = subprocess.run(
        ["bash", str(script), "--arch", "s390x"], capture_output=True, text=True, check=False
    )
    assert arch.returncode == 1 and "unsupported --arch s390x" in arch.stderr
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, check=False)
    assert usage.returncode == 0 and "--no-lb" in usage.stdout and "--vip" in usage.stdout


def test_common_flags_set_the_shared_variables() -> None:
    out = _bash(
        'while [ $# -gt 0 ]; do common_arg "$@"; shift "$consumed"; done; '
        'echo "$base|$tag|$arch|$with_lb|$with_vip|$registry_version|$sealer"',
        "--mirror",
        "http://m/",
        "--tag",
        "t:1",
        "--arch",
        "arm64",
        "--lb",
        "--vip",
        "--registry-version",
        "3.0.0",
        "--sealer",
        "/x/sealer",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "http://m|t:1|arm64|1|1|3.0.0|/x/sealer"


def test_haproxy_is_bundled_by_default_and_no_lb_leaves_it_out() -> None:
    # workers run the node-local balancer by default (runtime/lb.py), so images carry haproxy
    default = _bash('echo "$with_lb"')
    off = _bash('common_arg --no-lb; echo "$with_lb"')
    assert (default.stdout.strip(), off.stdout.strip()) == ("1", "0")


def test_verify_accepts_the_listed_digest_and_names_a_mismatch(tmp_path: Path) -> None:
    f = tmp_path / "k3s"
    f.write_bytes(b"binary")
    good = hashlib.sha256(b"binary").hexdigest()
    sums = tmp_path / "sums.txt"
    sums.write_text(f"{good}  k3s\n{'0' * 64}  other\n")
    ok = _bash(f'verify "{f}" k3s "{sums}"')
    assert ok.returncode == 0 and "k3s sha256 ok" in ok.stderr
    sums.write_text(f"{'0' * 64}  k3s\n")
    bad = _bash(f'verify "{f}" k3s "{sums}"')
    assert bad.returncode == 1 and f"checksum mismatch for k3s: expected {'0' * 64}, got {good}" in bad.stderr
    missing = _bash(f'verify "{f}" k0s "{sums}"')
    assert missing.returncode == 1 and "k0s is not listed in sums.txt" in missing.stderr


def test_context_is_removed_on_exit_and_bundle_needs_the_tool(tmp_path: Path) -> None:
    out = _bash('new_context t; echo "$ctx"; ls "$ctx"', cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    ctx = Path(out.stdout.splitlines()[0])
    assert out.stdout.split()[1:] == ["bin", "dl", "lib", "manifests"]
    assert not ctx.exists()  # the EXIT trap removed it
    missing = _bash("new_context t; bundle_tool no-such-tool-here")
    assert missing.returncode == 1 and "no no-such-tool-here on this machine" in missing.stderr
