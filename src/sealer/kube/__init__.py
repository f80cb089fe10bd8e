"""Talking to the cluster API: readiness, labels, taints, state ConfigMap."""
