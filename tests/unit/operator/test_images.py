"""Dockerfiles, linted without a Docker engine: multi-stage, pinned bases, non-root, known entry points.

What each image holds is checked by building it and running its pods' commands inside it
(tests/integration/test_images.py); these checks need no build.
"""

from __future__ import annotations

import re

import pytest
from dockerfile_parse import DockerfileParser
from kiln_op_testlib import ROOT

IMAGES = {"operator": "kiln-operator", "trainer": "kiln-trainer", "serving": "tritonserver"}
_PINNED = re.compile(r"^[\w./-]+:(?!latest$)[\w.-]*\d[\w.-]*(@sha256:[0-9a-f]{64})?$|^[\w./-]+@sha256:[0-9a-f]{64}$")


def _parse(name: str) -> DockerfileParser:
    parser = DockerfileParser(path=str(ROOT / "images" / name / "Dockerfile"))
    assert parser.structure, f"images/{name}/Dockerfile is empty"
    return parser


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_multi_stage_with_pinned_bases(name: str) -> None:
    parser = _parse(name)
    # Every image takes its base as a build argument (the dev cluster passes a local stand-in);
    # the default is the production base and must be pinned.
    args = [i["value"] for i in parser.structure if i["instruction"] == "ARG"]
    base = next((a.split("=", 1)[1] for a in args if a.startswith("BASE=")), None)
    assert base, "no `ARG BASE=<production base>` before the first FROM"
    froms = [i["value"].replace("${BASE}", base).split() for i in parser.structure if i["instruction"] == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    stages = set()
    for parts in froms:
        image = parts[0]
        assert image in stages or _PINNED.match(image), f"FROM {image} is not pinned to a version"
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])
    assert any(i["instruction"] == "COPY" and "--from=" in i["value"] for i in parser.structure)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_runs_as_non_root(name: str) -> None:
    parser = _parse(name)
    last_from = max(n for n, i in enumerate(parser.structure) if i["instruction"] == "FROM")
    users = [i["value"] for i in parser.structure[last_from:] if i["instruction"] == "USER"]
    assert users, "final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]} must be a numeric non-root uid (PSS restricted)"


@pytest.mark.parametrize(("name", "entry"), sorted(IMAGES.items()))
def test_entrypoint_and_no_remote_add(name: str, entry: str) -> None:
    parser = _parse(name)
    entries = [i["value"] for i in parser.structure if i["instruction"] == "ENTRYPOINT"]
    assert entries and entry in entries[-1]
    for i in parser.structure:
        assert not (i["instruction"] == "ADD" and "://" in i["value"]), "ADD from a URL is unpinned"
        if i["instruction"] == "RUN" and "apt-get install" in i["value"]:
            assert "--no-install-recommends" in i["value"] and "rm -rf /var/lib/apt/lists" in i["value"]
            # Debian's archive serves only the current revision of a package: a `pkg=1.2-3` pin
            # breaks the build at the next point release (it did: libgomp1=12.2.0-14). The
            # pinned base and the lock are what make the image reproducible.
            apt = [part for part in i["value"].split("&&") if "apt-get install" in part]
            pinned = [w for part in apt for w in part.split() if re.match(r"^[a-z0-9][a-z0-9.+-]+=", w)]
            assert not pinned, f"apt packages pinned to a Debian revision: {pinned}"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_python_packages_come_from_the_lock(name: str) -> None:
    runs = [i["value"] for i in _parse(name).structure if i["instruction"] == "RUN"]
    # One RUN may bootstrap uv (pinned by version) and then install from the lock: judge each command.
    installs = [c for r in runs for c in r.split("&&") if "pip install" in c and "uv==" not in c]
    assert installs, "installs no Python packages"
    for r in installs:
        assert re.search(r"(-c|--constraint) requirements\.lock|--no-deps", r), f"not from the lock: {r}"
    # download.pytorch.org is not a package index every build host reaches; PyPI's torch is the lock's.
    assert not any("download.pytorch.org" in r for r in runs)
