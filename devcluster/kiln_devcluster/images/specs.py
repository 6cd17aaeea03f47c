"""The images the dev cluster builds, in build order, and the build arguments each one gets.

The project's three images are built from their production Dockerfiles (images/*/Dockerfile);
only BASE differs: a local stand-in with the same contract instead of the official base, which no
registry here could serve. The stand-ins' recipes live in devcluster/images/.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
RECIPES = REPO_ROOT / "devcluster" / "images"
BUILD_CA = "/run/kiln-build-ca.pem"
"""Where the host's CA bundle is mounted in RUN steps (for hosts behind a TLS-inspecting proxy)."""


@dataclass(frozen=True)
class ImageSpec:
    name: str
    """Short name: base-python, base-triton, operator, trainer, serving."""
    ref: str
    """The reference it is tagged and imported as."""
    dockerfile: Path
    base: str | None
    """Name of the spec whose image is passed as the BASE build argument."""
    product: bool
    """One of the project's images (imported into nodes); bases are only built on."""
    args: tuple[tuple[str, str], ...] = ()
    """Build arguments of this image besides BASE and the host's CA settings."""


def project_version(root: Path = REPO_ROOT) -> str:
    """pyproject's version: the tag the chart and the TrainingRun defaults use."""
    with open(root / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def locked_version(package: str, root: Path = REPO_ROOT) -> str:
    """The version requirements.lock pins for `package`; a clear error when it pins none."""
    m = re.search(rf"^{re.escape(package)}==(\S+)", (root / "requirements.lock").read_text(), re.M)
    if m is None:
        raise ValueError(f"requirements.lock: no pin for {package}")
    return m.group(1)


def all_specs(root: Path = REPO_ROOT) -> list[ImageSpec]:
    """Bases first, then the project's images (each after the base it needs)."""
    version = project_version(root)
    recipes = root / "devcluster" / "images"
    return [
        ImageSpec("base-python", "localhost/kiln-base-python:latest", recipes / "base-python" / "Dockerfile",
                  None, False),
        ImageSpec("base-triton", "localhost/kiln-base-triton:latest", recipes / "base-triton" / "Dockerfile",
                  "base-python", False, (("PYTRITON_VERSION", locked_version("nvidia-pytriton", root)),)),
        ImageSpec("operator", f"ghcr.io/kiln-dev/kiln-operator:{version}", root / "images/operator/Dockerfile",
                  "base-python", True),
        # The dev cluster has no GPU: DeepSpeed runs with its CPU accelerator there.
        ImageSpec("trainer", f"ghcr.io/kiln-dev/kiln-trainer:{version}", root / "images/trainer/Dockerfile",
                  "base-python", True, (("DS_ACCELERATOR", "cpu"),)),
        ImageSpec("serving", f"ghcr.io/kiln-dev/kiln-serving:{version}", root / "images/serving/Dockerfile",
                  "base-triton", True),
    ]


def select(names: list[str] | None, root: Path = REPO_ROOT) -> list[ImageSpec]:
    """The named specs plus the bases they need, in build order; unknown names are an error."""
    specs = all_specs(root)
    by_name = {s.name: s for s in specs}
    if not names:
        return specs
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"images: unknown image {unknown}; known: {sorted(by_name)}")
    wanted: set[str] = set()
    for name in names:
        while name:
            wanted.add(name)
            name = by_name[name].base or ""
    return [s for s in specs if s.name in wanted]


def host_ca_bundle() -> Path | None:
    """The CA bundle this host's pip/uv trust (env or /etc/pip.conf), when one is configured."""
    for var in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    pip_conf = Path("/etc/pip.conf")
    if pip_conf.exists():
        m = re.search(r"^\s*cert\s*=\s*(\S+)", pip_conf.read_text(), re.M)
        if m and Path(m.group(1)).is_file():
            return Path(m.group(1))
    return None


def host_build_args(ca: Path | None) -> dict[str, str]:
    """The host's network settings as build arguments: CA bundle path (mounted) and proxies."""
    out = {k: v for k, v in os.environ.items()
           if k.lower() in ("http_proxy", "https_proxy", "no_proxy") and v}
    if ca is not None:
        out.update(PIP_CERT=BUILD_CA, SSL_CERT_FILE=BUILD_CA)
    return out
