"""Pure data: Clusterfile, hosts/roles/IP ranges, env merge, image metadata. Imports nothing from sealer."""
