"""ClusterImages as OCI images: local store, registry client, Kubefile parser and builder."""
