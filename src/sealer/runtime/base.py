"""The ClusterRuntime contract (DESIGN §3), the context runtimes work in, and `choose_runtime`.

Runtimes install, join and reset a cluster's control plane and nodes; the engine has already copied
the rootfs, set up the private registry and written /etc/hosts before any runtime method runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sealer.errors import ImageError, NotImplementedYet
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target
from sealer.model.cluster import Cluster, Host

LABEL_CLUSTER_RUNTIME = "cluster.alpha.sealer.io/cluster-runtime-type"
KUBERNETES = "kubernetes"
K3S = "k3s"
K0S = "k0s"
RUNTIME_TYPES = (KUBERNETES, K3S, K0S)
# The API endpoint name every master's certificate covers, so a cluster of one master can grow to
# three behind a load balancer or VIP without re-issuing certificates (issue 8).
API_ENDPOINT_NAME = "apiserver.cluster.local"

Say = Callable[[str, str], None]  # (host, message): progress notes from inside a runtime step


@dataclass(frozen=True)
class RegistryEndpoint:
    """How hosts reach the cluster's private registry (serving the image's registry/ dir)."""

    domain: str  # sea.hub
    port: int  # 5000
    ca_pem: str  # the cluster CA that signed the registry's certificate
    mirrored: tuple[str, ...] = ()  # source registries (docker.io, quay.io, ...) to pull through it
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.domain}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.address}"


@dataclass
class RuntimeContext:
    """What a runtime may use: the hosts' connections, the cluster, where the rootfs is and facts
    gathered about each host. Runtimes keep cross-host data (join tokens) in `shared`."""

    fleet: Fleet
    cluster: Cluster
    targets: Mapping[str, Target]  # by host IP
    node_names: Mapping[str, str]  # host IP -> Kubernetes node name
    registry: RegistryEndpoint | None
    say: Say = lambda host, msg: None
    shared: dict[str, str] = field(default_factory=dict, repr=False)
    # the Clusterfile's kubeadm/kubelet/kube-proxy documents (the kubernetes runtime merges them)
    kubeadm_documents: tuple[Mapping[str, Any], ...] = ()

    @property
    def rootfs(self) -> str:
        return self.cluster.rootfs

    @property
    def master0(self) -> Host:
        m0 = self.cluster.master0
        assert m0 is not None, "the plan refuses clusters without masters"
        return m0

    def target(self, host: Host | str) -> Target:
        ip = host if isinstance(host, str) else host.ip
        return self.targets[ip]


class ClusterRuntime(Protocol):
    """One cluster runtime (kubernetes, k3s, k0s). Every method is idempotent: a re-run after a
    failure may call it again for a host it already half-did."""

    name: str

    async def install(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        """Bring up the first control plane (masters[0] is master0), then join the rest."""

    async def join(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        """Add masters (one at a time) and workers (in parallel) to the running cluster."""

    async def remove(self, ctx: RuntimeContext, masters: list[Host], workers: list[Host]) -> None:
        """Take hosts out of the cluster and reset them."""

    async def reset(self, ctx: RuntimeContext, hosts: list[Host]) -> None:
        """Leave the hosts as if this runtime was never installed."""

    async def upgrade(self, ctx: RuntimeContext, image: str) -> None:
        """Move every host to the runtime version of the (already distributed) new image."""

    async def kubeconfig(self, ctx: RuntimeContext) -> str:
        """The admin kubeconfig, its server pointing at master0's address (not 127.0.0.1)."""

    def versions(self) -> Mapping[str, str]:
        """Versions of what was installed, for the run summary (may be empty before install)."""


def registers_node(runtime: ClusterRuntime, ctx: RuntimeContext, host: Host) -> bool:
    """Whether a host becomes a Kubernetes Node under this runtime (plain k0s controllers do not);
    runtimes without a `registers_node` method make every host a Node."""
    check = getattr(runtime, "registers_node", None)
    return True if check is None else bool(check(ctx, host))


def runtime_type_of(labels: Mapping[str, str], metadata: str | None, image: str) -> str:
    """The runtime an image asks for: the label first, then a legacy `Metadata` file's
    `ClusterRuntime`, else kubernetes (sealer's default)."""
    value = labels.get(LABEL_CLUSTER_RUNTIME)
    source = f"label {LABEL_CLUSTER_RUNTIME}"
    if not value and metadata:
        try:
            data = json.loads(metadata)
        except ValueError as err:
            raise ImageError(
                f"image {image}: its Metadata file is not valid JSON: {err}",
                f"rebuild the image with the label {LABEL_CLUSTER_RUNTIME}=k3s|k0s|kubernetes",
            )
        raw = data.get("ClusterRuntime") if isinstance(data, dict) else None
        value = str(raw) if raw else None
        source = "Metadata ClusterRuntime"
    if not value:
        return KUBERNETES
    normal = {"k8s": KUBERNETES, "kubernetes": KUBERNETES, "k3s": K3S, "k0s": K0S}.get(value.strip().lower())
    if normal is None:
        raise ImageError(
            f"image {image}: unknown cluster runtime {value!r} (from {source})",
            f"sealer runs {', '.join(RUNTIME_TYPES)} (Metadata may also say k8s); "
            "fix the image's label and rebuild it",
        )
    return normal


def choose_runtime(labels: Mapping[str, str], metadata: str | None, image: str) -> ClusterRuntime:
    """The ClusterRuntime implementation for an image (see `runtime_type_of`)."""
    kind = runtime_type_of(labels, metadata, image)
    if kind == K3S:
        from sealer.runtime.k3s import K3sRuntime

        return K3sRuntime()
    if kind == K0S:
        from sealer.runtime.k0s import K0sRuntime

        return K0sRuntime()
    if kind == KUBERNETES:
        from sealer.runtime.kubernetes import KubernetesRuntime

        return KubernetesRuntime()
    raise NotImplementedYet(
        f"image {image} asks for the {kind} runtime, which this sealer cannot install yet",
        "use a kubernetes, k3s or k0s ClusterImage",
    )
