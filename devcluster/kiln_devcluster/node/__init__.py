"""The process node: kiln's stand-in for the kubelet and the container runtime.

It registers a Node, runs every container of every pod bound to it as a local process inside a
per-pod network namespace and a private mount namespace, proxies ClusterIP Services in user space,
keeps each pod's /etc/hosts current and serves the kubelet log endpoint the API server proxies to.
Run it as ``python -m kiln_devcluster.node --kubeconfig .kiln/kubeconfig --name kiln-node-0``.
"""
