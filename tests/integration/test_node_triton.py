"""A tritonserver pod serves a python-backend model from an s3:// repository, reached via its ClusterIP."""

from __future__ import annotations

import numpy as np
import pytest
from kubernetes import client
from nodekit import SERVING_IMAGE, namespace, pod_log, read_pod
from waiting import wait_for

pytestmark = pytest.mark.timeout(420)

CONFIG = """name: "identity"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
MODEL = """import triton_python_backend_utils as pb
class TritonPythonModel:
    def execute(self, requests):
        return [pb.InferenceResponse([pb.Tensor("OUTPUT0", pb.get_input_tensor_by_name(r, "INPUT0").as_numpy())]) for r in requests]
"""


def upload_model(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="models/identity/config.pbtxt", Body=CONFIG.encode())
    s3.put_object(Bucket=bucket, Key="models/identity/1/model.py", Body=MODEL.encode())


def triton_pod(repo: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "triton", "labels": {"app": "triton"}},
            "spec": {"terminationGracePeriodSeconds": 5, "restartPolicy": "Never", "containers": [{
                "name": "triton", "image": SERVING_IMAGE,
                "command": ["tritonserver", f"--model-repository={repo}", "--model-control-mode=none"],
                "envFrom": [{"secretRef": {"name": "s3"}}],
                "ports": [{"name": "http", "containerPort": 8000}, {"name": "grpc", "containerPort": 8001}],
                "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 2}}]}}


def test_triton_serves_s3_model_over_http_and_grpc(cluster, s3_bucket):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    core = client.CoreV1Api(cluster.api)
    upload_model(cluster.s3_client(), s3_bucket)
    repo = f"s3://{cluster.s3['in_cluster_endpoint_url']}/{s3_bucket}/models"
    with namespace(core, "triton") as ns:
        core.create_namespaced_secret(ns, {"metadata": {"name": "s3"}, "stringData": {
            "AWS_ACCESS_KEY_ID": cluster.s3["access_key"], "AWS_SECRET_ACCESS_KEY": cluster.s3["secret_key"],
            "AWS_DEFAULT_REGION": "us-east-1"}})
        core.create_namespaced_service(ns, {"metadata": {"name": "triton"}, "spec": {
            "selector": {"app": "triton"}, "ports": [{"name": "http", "port": 8000, "targetPort": "http"},
                                                     {"name": "grpc", "port": 8001, "targetPort": "grpc"}]}})
        core.create_namespaced_pod(ns, triton_pod(repo))

        def ready_or_failed():
            p = read_pod(core, ns, "triton")
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
            return "Failed" if p["status"].get("phase") == "Failed" else ready

        # restartPolicy Never: a server that cannot start fails the test at once, with its log.
        state = wait_for(ready_or_failed, 240, "tritonserver pod Ready")
        assert state is True, pod_log(core, ns, "triton", container="triton", tail_lines=40)
        ip = core.read_namespaced_service("triton", ns).spec.cluster_ip
        data = np.arange(5, dtype=np.float32)

        http = httpclient.InferenceServerClient(f"{ip}:8000")
        wait_for(lambda: http.is_model_ready("identity"), 60, "identity model ready over the ClusterIP")
        inp = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
        inp.set_data_from_numpy(data)
        out = http.infer("identity", [inp]).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(out, data)

        grpc = grpcclient.InferenceServerClient(f"{ip}:8001")
        ginp = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
        ginp.set_data_from_numpy(data * 2)
        gout = grpc.infer("identity", [ginp]).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(gout, data * 2)
