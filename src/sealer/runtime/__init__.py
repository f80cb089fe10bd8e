"""Cluster runtimes (kubernetes, k3s, k0s) behind one ClusterRuntime protocol; containerd, registry, hooks."""
