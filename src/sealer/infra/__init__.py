"""Reaching hosts: SSH connector, command runner, sudo, bastion, file transfer, fan-out.

The usual entry point is `Fleet` (one per run): `run`/`run_many` commands and `put`/`copy_many`
files on `Target`s built from a Clusterfile with `targets_from_cluster`.
"""

from sealer.infra.connector import Connector, Outcome, Result, TransferStats
from sealer.infra.fleet import Fleet
from sealer.infra.host import Target, target_from_host, targets_from_cluster

__all__ = [
    "Connector",
    "Fleet",
    "Outcome",
    "Result",
    "Target",
    "TransferStats",
    "target_from_host",
    "targets_from_cluster",
]
