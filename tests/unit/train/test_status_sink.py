import json

import pytest
from kiln_trainer.train import status_sink
from kiln_trainer.train.status_sink import StatusProgress, status_progress_from_env


@pytest.fixture
def sa(tmp_path):
    (tmp_path / "token").write_text("tok-1\n")
    import subprocess
    # any PEM certificate will do for building the TLS context
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "k"),
                    "-out", str(tmp_path / "ca.crt"), "-days", "1", "-subj", "/CN=t"], check=True,
                   capture_output=True)
    return tmp_path


def test_not_in_a_pod_means_no_sink(tmp_path):
    assert status_progress_from_env({"KILN_RUN_NAME": "r"}, tmp_path) is None
    assert status_progress_from_env({}, tmp_path) is None


def test_patches_own_status_with_camel_case_and_rate_limits(sa, monkeypatch):
    sent = []

    class Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return b"{}"

    def fake_urlopen(req, timeout, context):
        sent.append((req.full_url, req.get_method(), dict(req.header_items()), json.loads(req.data)))
        return Resp()

    monkeypatch.setattr(status_sink.urllib.request, "urlopen", fake_urlopen)
    sink = status_progress_from_env({"KILN_RUN_NAME": "tiny", "KILN_RUN_NAMESPACE": "team",
                                     "KUBERNETES_SERVICE_HOST": "10.96.0.1"}, sa)
    assert isinstance(sink, StatusProgress)
    sink({"step": 10, "tokens": 5120, "loss": 3.2, "tokens_per_s": 900.4, "eta_seconds": 40.2,
          "last_committed_step": None, "updated_at": "2026-11-27T00:00:00Z"})
    sink({"step": 11, "tokens": 5632, "loss": 3.1, "tokens_per_s": 900.0, "eta_seconds": 39.0})
    assert len(sent) == 1, "a second record within the interval is not sent"
    url, method, headers, body = sent[0]
    # The run's progress ConfigMap, never the TrainingRun's status (the operator copies it there).
    assert url == "https://10.96.0.1:443/api/v1/namespaces/team/configmaps/tiny-progress"
    assert method == "PATCH" and headers["Authorization"] == "Bearer tok-1"
    assert json.loads(body["data"]["progress.json"]) == {"step": 10, "tokens": 5120, "loss": 3.2,
                                                          "tokensPerSecond": 900, "etaSeconds": 40,
                                                          "updatedAt": "2026-11-27T00:00:00Z"}
    sink({"step": 60, "tokens": 30720, "loss": 2.0, "tokens_per_s": 900.0, "eta_seconds": 0})
    assert len(sent) == 2, "the final record always goes out"


def test_unreachable_api_never_raises(sa, monkeypatch):
    def boom(*a, **k):
        raise OSError("connection refused")

    monkeypatch.setattr(status_sink.urllib.request, "urlopen", boom)
    sink = StatusProgress("tiny", "team", "10.96.0.1", "443", sa)
    sink({"step": 1})
