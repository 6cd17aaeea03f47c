"""The project's images for the dev cluster: local bases, buildah builds keyed by content, containerd import.

CLI: `python -m kiln_devcluster.images build|import --address SOCK|sizes` (see devcluster/images/README.md).
"""
