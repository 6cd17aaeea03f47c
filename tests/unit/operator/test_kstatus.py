"""Flux's verdict on TrainingRuns in every phase, computed by the real kstatus library.

``devcluster/build.sh kstatus`` builds a small Go program over sigs.k8s.io/cli-utils/pkg/kstatus
(pinned like the cluster's other Go binaries, cached under ~/.cache/kiln/bin); the objects carry the
status the operator's own functions write (kiln_phase_objects), the same objects the Argo CD Lua
test reads.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from kiln_phase_objects import cases

pytestmark = pytest.mark.timeout(600)  # the first run builds the Go program (~30 s, then cached)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def kstatus() -> Path:
    subprocess.run([str(ROOT / "devcluster" / "build.sh"), "kstatus"], check=True, capture_output=True)
    out = subprocess.run([str(ROOT / "devcluster" / "build.sh"), "--print-bin"], check=True, capture_output=True,
                         text=True)
    return Path(out.stdout.strip()) / "kstatus"


def test_every_phase_reads_as_expected(kstatus: Path, tmp_path: Path) -> None:
    want = {}
    for case in cases():
        (tmp_path / f"{case.name}.json").write_text(json.dumps(case.obj))
        want[case.name] = case.kstatus
    out = subprocess.run([str(kstatus), *sorted(str(p) for p in tmp_path.glob("*.json"))], check=True,
                         capture_output=True, text=True).stdout
    got = {Path(line.split("\t")[0]).stem: line.split("\t")[1] for line in out.splitlines()}
    assert got == want
    messages = {Path(line.split("\t")[0]).stem: line.split("\t")[2] for line in out.splitlines()}
    assert "not found" in messages["pending-held"], "Flux shows the cause of a held run"
