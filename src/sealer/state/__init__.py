"""Cluster state on the operator machine: last-applied Clusterfile, journal, lock, known_hosts."""

from sealer.state.journal import Journal, JournalEntry, Operation, Run, StepKey, digest_of
from sealer.state.lock import ClusterLock, LockHolder, break_lock, read_lock_holder
from sealer.state.store import ClusterState, check_cluster_name, sealer_home

__all__ = [
    "ClusterLock",
    "ClusterState",
    "Journal",
    "JournalEntry",
    "LockHolder",
    "Operation",
    "Run",
    "StepKey",
    "break_lock",
    "check_cluster_name",
    "digest_of",
    "read_lock_holder",
    "sealer_home",
]
