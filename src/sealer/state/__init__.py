"""Cluster state on the operator machine: last-applied Clusterfile, journal, lock, known_hosts."""
