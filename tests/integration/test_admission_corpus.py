"""The invalid-manifest corpus (admission_corpus/, one defect per file) against the real API server.

Each file says what it expects in its header: ``# expect: refused <field>`` (the API server refuses
it with a cause naming that field, or for ``metadata.name`` a message naming it), or ``# expect:
<Reason>`` (accepted, because the defect depends on the preset or on other objects; the operator then
reports that reason in the Stalled condition within 60 s, before any pod starts). The README's own
TrainingRun examples must be accepted.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from clusterlib import REPO
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operatorkit import GROUP, PLURAL, VERSION, get_run, install_crd, operator, run_namespace
from waiting import wait_for

pytestmark = pytest.mark.timeout(600)
CORPUS = Path(__file__).parent / "admission_corpus"
REASON_DEADLINE_S = 60.0
LIVE: dict[str, dict[str, Any]] = {}


def _load(path: Path) -> tuple[str, dict[str, Any]]:
    text = path.read_text()
    found = re.search(r"^# expect: (.+)$", text, re.M)
    assert found, f"{path.name}: no '# expect:' header"
    return found.group(1).strip(), yaml.safe_load(text)


FILES = sorted(CORPUS.glob("*.yaml"))
REFUSED = [p for p in FILES if _load(p)[0].startswith("refused ")]
RUNTIME = [p for p in FILES if p not in REFUSED]


def test_corpus_is_large_and_one_defect_per_file() -> None:
    assert len(FILES) >= 100
    names = [_load(p)[1]["metadata"]["name"] for p in FILES]
    assert len(set(names)) == len(names)


@pytest.fixture(scope="module")
def api(cluster: Any) -> client.CustomObjectsApi:
    install_crd(cluster)
    return client.CustomObjectsApi(cluster.api)


@pytest.mark.parametrize("path", REFUSED, ids=[p.stem for p in REFUSED])
def test_refused_naming_the_field(api: client.CustomObjectsApi, path: Path) -> None:
    expect, body = _load(path)
    field = expect.removeprefix("refused ")
    with pytest.raises(ApiException) as err:
        # Dry run: admission (schema, CEL) runs in full, nothing is stored. No fieldValidation=Strict:
        # a forbidden field must be refused by a rule, not merely pruned.
        api.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body, dry_run="All")
    assert err.value.status == 422, err.value.body
    details = json.loads(err.value.body)
    causes = details.get("details", {}).get("causes", [])
    if field == "metadata.name":  # a root rule: the message names the field
        assert "metadata.name" in details["message"], details["message"]
    else:
        assert any(c.get("field") == field for c in causes), f"no cause names {field}: {causes}"


def _readme_runs() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    return [d for b in blocks for d in yaml.safe_load_all(b) if isinstance(d, dict) and d.get("kind") == "TrainingRun"]


def test_readme_examples_are_accepted(api: client.CustomObjectsApi) -> None:
    runs = _readme_runs()
    assert runs
    for body in runs:
        api.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body, dry_run="All")


@pytest.fixture(scope="module")
def runtime_outcomes(cluster: Any, api: client.CustomObjectsApi) -> dict[str, tuple[str, str, float]]:
    """Create every runtime case with the operator running; name → (reason, message, seconds to it).
    The live objects are kept in LIVE for the GitOps health checks below."""
    out: dict[str, tuple[str, str, float]] = {}
    with run_namespace(cluster, "corpus") as ns, operator(cluster, ns):
        started = {}
        for path in RUNTIME:
            _, body = _load(path)
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
            started[path.stem] = (body["metadata"]["name"], time.monotonic())

        def stalled(name: str) -> tuple[str, str] | None:
            conds = (get_run(cluster, ns, name).get("status") or {}).get("conditions") or []
            c = next((c for c in conds if c["type"] == "Stalled" and c["status"] == "True"), None)
            return (c["reason"], c["message"]) if c else None

        for stem, (name, t0) in started.items():
            reason, message = wait_for(lambda n=name: stalled(n), REASON_DEADLINE_S, f"{name} Stalled with a reason")
            out[stem] = (reason, message, time.monotonic() - t0)
            LIVE[stem] = get_run(cluster, ns, name)
            # Nothing ran for it: the checks come before any pod.
            pods = client.CoreV1Api(cluster.api).list_namespaced_pod(ns, label_selector=f"kiln.dev/run={name}")
            assert not pods.items, f"{name}: pods started although the run cannot go on"
    return out


@pytest.mark.parametrize("path", RUNTIME, ids=[p.stem for p in RUNTIME])
def test_failed_fast_with_a_reason(runtime_outcomes: dict[str, tuple[str, str, float]], path: Path) -> None:
    expect, _ = _load(path)
    reason, message, seconds = runtime_outcomes[path.stem]
    assert reason == expect, message
    assert message and seconds < REASON_DEADLINE_S


def test_gitops_tools_read_live_stuck_runs_as_failed(runtime_outcomes: dict[str, tuple[str, str, float]],
                                                      tmp_path: Path) -> None:
    """Flux's kstatus (the real cli-utils library) and the chart's Argo CD Lua on the live objects."""
    import lupa.lua51

    bin_dir = subprocess.run([str(REPO / "devcluster" / "build.sh"), "--print-bin"], check=True, capture_output=True,
                             text=True).stdout.strip()
    subprocess.run([str(REPO / "devcluster" / "build.sh"), "kstatus"], check=True, capture_output=True)
    files = []
    for stem, obj in LIVE.items():
        files.append(tmp_path / f"{stem}.json")
        files[-1].write_text(json.dumps(obj))
    out = subprocess.run([f"{bin_dir}/kstatus", *map(str, files)], check=True, capture_output=True, text=True).stdout
    verdicts = {Path(line.split("\t")[0]).stem: line.split("\t")[1] for line in out.splitlines()}
    assert verdicts == {stem: "Failed" for stem in LIVE}, out
    lua_src = (REPO / "charts" / "kiln" / "health" / "trainingrun.lua").read_text()
    for stem, obj in LIVE.items():
        lua = lupa.lua51.LuaRuntime()
        lua.globals().obj = lua.table_from(obj, recursive=True)
        hs = lua.execute(lua_src)
        assert hs["status"] == "Degraded" and runtime_outcomes[stem][0] in hs["message"], (stem, dict(hs))
