"""kiln_operator."""
