"""Serving targets: Triton Deployments that runs roll out to, with an inference gate."""
