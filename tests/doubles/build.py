"""Package a stand-in as one executable file (a Python zipapp run by /usr/bin/python3), the way the real
tool ships as one static binary: `python3 -m tests.doubles.build k3s OUT`, or build_executable()."""

from __future__ import annotations

import io
import os
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = (
    "apiserver.py",
    "cliflags.py",
    "kubeclient.py",
    "kubectl.py",
    "patch.py",
    "pki.py",
    "k3s.py",
    "k0s.py",
    "kubelet.py",
    "kubeadm.py",
    "etcdctl.py",
)
ENTRY = {
    "k3s": "k3s",
    "k0s": "k0s",
    "kubeadm": "kubeadm",
    "kubelet": "kubelet",
    "apiserver": "apiserver",
    "kubectl": "kubectl",
    # module[:function]: etcdutl is the second entry point of the etcdctl module
    "etcdctl": "etcdctl",
    "etcdutl": "etcdctl:etcdutl_main",
}
# Debian's python3 carries the PyYAML and cryptography versions the test-bed hosts have.
INTERPRETER = "/usr/bin/python3"


# What `version=` stamps, and the form it must have (the release strings the real tools print).
VERSIONED = {
    "k3s": ("k3s.py", r"v\d+\.\d+\.\d+\+k3s\d+", "v1.30.6+k3s1"),
    "k0s": ("k0s.py", r"v\d+\.\d+\.\d+\+k0s\.\d+", "v1.30.5+k0s.0"),
    "kubeadm": ("kubeadm.py", r"v\d+\.\d+\.\d+", "v1.31.2"),
    "kubelet": ("kubelet.py", r"v\d+\.\d+\.\d+", "v1.31.2"),
}


def build_executable(
    name: str, out: Path, interpreter: str = INTERPRETER, version: str | None = None
) -> Path:
    """`version` stamps another release into the binary (k3s, k0s, kubeadm, kubelet), for upgrade tests."""
    if name not in ENTRY:
        raise ValueError(f"unknown stand-in {name!r}; known: {', '.join(ENTRY)}")
    stamp = None
    if version is not None:
        if name not in VERSIONED:
            raise ValueError(f"{name} has no version to stamp")
        module, pattern, example = VERSIONED[name]
        if not re.fullmatch(pattern, version):
            raise ValueError(f"version {version!r} is not of the form {example}")
        stamp = module
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for m in MODULES:
            text = (HERE / m).read_text()
            if m == stamp:
                text, n = re.subn(r'^VERSION = ".*"$', f'VERSION = "{version}"', text, count=1, flags=re.M)
                assert n == 1, f"{m} lost its VERSION line"
            z.writestr(m, text)
        module, _, func = ENTRY[name].partition(":")
        main = f"import sys\nimport {module} as _m\nsys.exit(_m.{func or 'main'}(sys.argv[1:]))\n"
        z.writestr("__main__.py", main)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(f"#!{interpreter}\n".encode() + buf.getvalue())
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(
            "usage: python3 -m tests.doubles.build NAME OUTPUT (NAME: k3s, k0s, kubeadm, kubelet, apiserver, "
            "kubectl, etcdctl, etcdutl)",
            file=sys.stderr,
        )
        sys.exit(2)
    print(build_executable(sys.argv[1], Path(sys.argv[2])))
