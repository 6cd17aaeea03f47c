"""kiln_devcluster."""
