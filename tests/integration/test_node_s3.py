"""A pod reads and writes the cluster's S3 server through boto3, credentials from a Secret."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client
from nodekit import namespace, pod, pod_log, wait_phase

pytestmark = pytest.mark.timeout(240)

SCRIPT = """
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"])
bucket = os.environ["BUCKET"]
seen = s3.get_object(Bucket=bucket, Key="from-host.txt")["Body"].read().decode()
s3.put_object(Bucket=bucket, Key="from-pod.txt", Body=("pod read: " + seen).encode())
print("ok", seen)
"""


def test_pod_reads_and_writes_s3_with_secret_credentials(cluster, s3_bucket):
    core = client.CoreV1Api(cluster.api)
    s3 = cluster.s3_client()
    marker = uuid.uuid4().hex
    s3.put_object(Bucket=s3_bucket, Key="from-host.txt", Body=marker.encode())
    with namespace(core, "s3") as ns:
        core.create_namespaced_secret(ns, {"metadata": {"name": "s3"}, "stringData": {
            "AWS_ACCESS_KEY_ID": cluster.s3["access_key"], "AWS_SECRET_ACCESS_KEY": cluster.s3["secret_key"]}})
        manifest = pod("s3", ["python", "-c", SCRIPT],
                       envFrom=[{"secretRef": {"name": "s3"}}],
                       env=[{"name": "S3_ENDPOINT", "value": cluster.s3["in_cluster_endpoint_url"]},
                            {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
                            {"name": "BUCKET", "value": s3_bucket}])
        core.create_namespaced_pod(ns, manifest)
        p = wait_phase(core, ns, "s3", ("Succeeded", "Failed"), 120)
        logs = pod_log(core, ns, "s3")
        assert p["status"]["phase"] == "Succeeded", logs
        assert f"ok {marker}" in logs
    body = s3.get_object(Bucket=s3_bucket, Key="from-pod.txt")["Body"].read().decode()
    assert body == f"pod read: {marker}"
