"""kiln_api."""
