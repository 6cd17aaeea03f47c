"""The rollout's serving pieces on the real tritonserver, with kiln's exported model.

`kiln-trainer serve` pins one version; `kiln-trainer gate` passes a good version and refuses one
whose answers differ from the export's reference; `promote_pod` swaps versions inside a running
server while clients keep sending requests, and none of them fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kiln_api.triton_client import GenerateRequest, generate
from kiln_operator.serving.promote import promote_pod, version_ready
from kiln_trainer.export.fixture import make_checkpoint_tree
from kiln_trainer.export.main import main as export_main
from kiln_trainer.serving.tritonserver import free_port
from waiting import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from kilnflow import Load  # noqa: E402

MODEL = "llm"
PROMPT = "the cat sees"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """file:// repository with versions 1 and 2 of MODEL exported from different checkpoints."""
    tmp = tmp_path_factory.mktemp("rollout")
    for version, (run, steps) in enumerate((("a", 30), ("b", 8)), start=1):
        ckpts = make_checkpoint_tree(tmp / "ck", run=run, step=steps)
        cfg = tmp / f"export-{run}.json"
        cfg.write_text(json.dumps({"checkpoints_uri": f"file://{ckpts}", "model_repository": f"file://{tmp}/models",
                                   "model_name": MODEL, "version": version, "reference_prompts": [PROMPT],
                                   "reference_max_new_tokens": 8, "hf_export": False}))
        assert export_main(str(cfg)) == 0
    return tmp / "models"


class Server:
    """`kiln-trainer serve` as a serving pod would run it."""

    def __init__(self, repo: Path, version: int, log: Path) -> None:
        self.http, self.grpc, metrics = free_port(), free_port(), free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiln_trainer.cli", "serve", "--repository", f"file://{repo}", "--model", MODEL,
             "--version", str(version), "--http-port", str(self.http), "--grpc-port", str(self.grpc),
             "--metrics-port", str(metrics)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        )
        wait_for(lambda: self.proc.poll() is not None or version_ready(f"127.0.0.1:{self.http}", MODEL, version),
                 180, f"{MODEL} v{version} ready")
        assert self.proc.poll() is None, log.read_text()[-3000:]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def gate(repo: Path, version: int, url: str) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, "-m", "kiln_trainer.cli", "gate", "--repository", f"file://{repo}",
                          "--model", MODEL, "--version", str(version), "--url", url, "--max-latency-ms", "20000"],
                         capture_output=True, text=True, timeout=300)
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])


def reference(repo: Path, version: int) -> list[int]:
    manifest = json.loads((repo / MODEL / str(version) / "manifest.json").read_text())
    return manifest["reference_outputs"][0]["token_ids"]


@pytest.mark.timeout(900)
def test_pinned_serve_gate_and_swap_under_load(repo, tmp_path):
    server = Server(repo, 1, tmp_path / "serve.log")
    try:
        url = f"127.0.0.1:{server.grpc}"
        # Pinned: only version 1 is loaded, although version 2 is in the repository.
        assert not version_ready(f"127.0.0.1:{server.http}", MODEL, 2)
        rc, verdict = gate(repo, 1, url)
        assert rc == 0 and verdict["passed"], verdict

        # A version whose answers differ from its recorded reference is refused.
        m = repo / MODEL / "1" / "manifest.json"
        good = m.read_text()
        doc = json.loads(good)
        doc["reference_outputs"][0]["token_ids"] = [(t + 1) % 96 for t in reference(repo, 1)]
        m.write_text(json.dumps(doc))
        try:
            rc, verdict = gate(repo, 1, url)
        finally:
            m.write_text(good)
        assert rc == 1 and not verdict["passed"] and "differs" in verdict["reason"], verdict

        with Load(url, MODEL, clients=3) as load:
            wait_for(lambda: load.ok >= 10, 120, "requests on version 1")
            promote_pod(f"127.0.0.1:{server.http}", MODEL, 2)
            seen = load.ok
            wait_for(lambda: load.ok >= seen + 10, 120, "requests on version 2")
        assert load.failures == [], load.failures[:3]
        assert version_ready(f"127.0.0.1:{server.http}", MODEL, 2)
        assert not version_ready(f"127.0.0.1:{server.http}", MODEL, 1)
        got = generate(url, MODEL, GenerateRequest(prompt=PROMPT, max_new_tokens=8))
        assert got.token_ids == reference(repo, 2)
    finally:
        server.close()


@pytest.mark.timeout(600)
def test_serve_refuses_a_version_that_was_never_exported(repo, tmp_path):
    out = subprocess.run([sys.executable, "-m", "kiln_trainer.cli", "serve", "--repository", f"file://{repo}",
                          "--model", MODEL, "--version", "9", "--http-port", str(free_port())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "--version" in out.stderr and "not an exported version" in out.stderr, out.stderr[-500:]
