"""kiln_trainer."""
