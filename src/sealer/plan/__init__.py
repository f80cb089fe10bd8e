"""Pure planning: Clusterfile + observed state -> ordered Actions. No I/O."""
