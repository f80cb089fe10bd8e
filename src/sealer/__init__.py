"""sealer: build and run ClusterImages (a whole Kubernetes-family cluster in one OCI image)."""

__version__ = "0.1.0"
