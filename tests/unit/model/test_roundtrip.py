"""Property: any valid Clusterfile we generate is accepted, and what `dump_clusterfile` writes reads
back to an equal Clusterfile (the state file and `sealer diff` rely on this)."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import replace
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealer.model.clusterfile import dump_clusterfile, parse_clusterfile

word = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
value = st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?)?", fullmatch=True)
env_value = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=20
).filter(lambda v: v == v.strip() or v == "")
taint = st.builds(
    lambda k, v, e, rm: f"{k}={v}:{e}{'-' if rm else ''}",
    word,
    value,
    st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
    st.booleans(),
) | word.map(lambda k: f"{k}-")
ssh = st.fixed_dictionaries(
    {},
    optional={
        "user": word,
        "passwd": env_value,
        "pk": word.map(lambda w: f"/root/.ssh/{w}"),
        "port": st.integers(1, 65535).map(str),
        "sudoPasswd": env_value,
        "hostKeyPolicy": st.sampled_from(["tofu", "strict"]),
        "bastion": st.fixed_dictionaries(
            {"host": word, "port": st.integers(1, 65535)}, optional={"user": word}
        ),
    },
)


@st.composite
def clusterfiles(draw: st.DrawFn) -> str:
    v6 = draw(st.booleans())
    base = int(ipaddress.ip_address("fd00::1" if v6 else "10.0.0.1"))
    cls = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    offsets = draw(st.lists(st.integers(0, 5000), min_size=1, max_size=12, unique=True))
    cut = draw(st.lists(st.integers(1, len(offsets)), max_size=3, unique=True))
    bounds = sorted({0, *cut, len(offsets)})
    groups: list[dict[str, Any]] = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        roles = (
            ["master"]
            if i == 0
            else draw(
                st.lists(st.sampled_from(["master", "node", "db"]), min_size=1, max_size=2, unique=True)
            )
        )
        group: dict[str, Any] = {"ips": [str(cls(base + o)) for o in offsets[a:b]], "roles": roles}
        group.update(
            draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "labels": st.dictionaries(word, value, max_size=3),
                        "taints": st.lists(taint, max_size=3),
                        "env": st.lists(st.builds(lambda k, v: f"{k}={v}", word, env_value), max_size=3),
                        "ssh": ssh,
                    },
                )
            )
        )
        groups.append(group)
    spec: dict[str, Any] = {"image": draw(word) + ":v1", "hosts": groups}
    spec.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "env": st.lists(st.builds(lambda k, v: f"{k}={v}", word, env_value), max_size=4),
                    "cmd": st.lists(env_value, max_size=2),
                    "appNames": st.lists(word, max_size=2),
                    "ssh": ssh,
                    "containerRuntime": st.sampled_from([{"type": "docker"}, {"type": "containerd"}]),
                    "dataRoot": word.map(lambda w: f"/data/{w}"),
                    "registry": st.sampled_from(
                        [
                            {"localRegistry": {"domain": "hub.local", "port": 5443, "ha": False}},
                            {"externalRegistry": {"domain": "reg.example.com", "username": "u"}},
                        ]
                    ),
                },
            )
        )
    )
    doc = {"apiVersion": "sealer.io/v2", "kind": "Cluster", "metadata": {"name": draw(word)}, "spec": spec}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusterfiles())
def test_valid_files_are_accepted_and_round_trip(text: str) -> None:
    cf, problems = parse_clusterfile(text, "gen")
    assert cf is not None, "\n".join(p.render() for p in problems) + "\n" + text
    again, problems = parse_clusterfile(dump_clusterfile(cf), "dump")
    assert again is not None, "\n".join(p.render() for p in problems)
    assert replace(again, source=None) == replace(cf, source=None)
    # Hosts decode as written: order kept, master0 first of the first group.
    written = [ip for g in yaml.safe_load(text)["spec"]["hosts"] for ip in g["ips"]]
    assert [h.ip for h in cf.cluster.hosts] == written
    assert cf.cluster.master0 is not None and cf.cluster.master0.ip == written[0]
