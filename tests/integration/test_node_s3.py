"""A pod reads and writes the cluster's S3 server through boto3, credentials from a Secret."""

from __future__ import annotations

import uuid

import boto3
import pytest
from kubernetes import client
from nodekit import api_client, namespace, pod, pod_log, s3_settings, wait_phase

pytestmark = pytest.mark.timeout(240)

SCRIPT = """
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"])
bucket = os.environ["BUCKET"]
seen = s3.get_object(Bucket=bucket, Key="from-host.txt")["Body"].read().decode()
s3.put_object(Bucket=bucket, Key="from-pod.txt", Body=("pod read: " + seen).encode())
print("ok", seen)
"""


def test_pod_reads_and_writes_s3_with_secret_credentials(cluster):
    core = client.CoreV1Api(api_client(cluster.kubeconfig))
    cfg = s3_settings()
    s3 = boto3.client("s3", endpoint_url=cfg["AWS_ENDPOINT_URL"], aws_access_key_id=cfg["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=cfg["AWS_SECRET_ACCESS_KEY"], region_name=cfg["AWS_DEFAULT_REGION"])
    bucket = f"node-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    marker = uuid.uuid4().hex
    s3.put_object(Bucket=bucket, Key="from-host.txt", Body=marker.encode())
    with namespace(core, "s3") as ns:
        core.create_namespaced_secret(ns, {"metadata": {"name": "s3"}, "stringData": {
            "AWS_ACCESS_KEY_ID": cfg["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": cfg["AWS_SECRET_ACCESS_KEY"]}})
        manifest = pod("s3", ["python", "-c", SCRIPT],
                       envFrom=[{"secretRef": {"name": "s3"}}],
                       env=[{"name": "S3_ENDPOINT", "value": cfg["S3_ENDPOINT_IN_CLUSTER"]},
                            {"name": "AWS_DEFAULT_REGION", "value": cfg["AWS_DEFAULT_REGION"]},
                            {"name": "BUCKET", "value": bucket}])
        core.create_namespaced_pod(ns, manifest)
        p = wait_phase(core, ns, "s3", ("Succeeded", "Failed"), 120)
        logs = pod_log(core, ns, "s3")
        assert p["status"]["phase"] == "Succeeded", logs
        assert f"ok {marker}" in logs
    body = s3.get_object(Bucket=bucket, Key="from-pod.txt")["Body"].read().decode()
    assert body == f"pod read: {marker}"
