"""Which local runtime stands in for a container image (rules in ``devcluster/images.yaml``)."""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RUNTIMES = ("venv", "triton", "host")
DEVCLUSTER_DIR = Path(__file__).resolve().parents[2]
"""The ``devcluster/`` folder (this file is devcluster/kiln_devcluster/node/images.py)."""
REPO_ROOT = DEVCLUSTER_DIR.parent
DEFAULT_IMAGES_FILE = DEVCLUSTER_DIR / "images.yaml"


class UnknownImage(Exception):
    """No rule matches the image: the node reports ErrImagePull / ImagePullBackOff."""


@dataclass(frozen=True)
class ImageRule:
    """One entry of images.yaml."""

    match: tuple[str, ...]
    """fnmatch patterns tried against the normalized image name."""
    runtime: str
    """One of RUNTIMES."""
    entrypoint: tuple[str, ...] = ()
    """The image's ENTRYPOINT: used when the container sets no ``command``."""
    cmd: tuple[str, ...] = ()
    """The image's CMD: used when the container sets neither ``command`` nor ``args``."""

    def __post_init__(self) -> None:
        if not self.match:
            raise ValueError("images.yaml: rules[].match must list at least one pattern")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"images.yaml: rules[].runtime {self.runtime!r} is not one of {RUNTIMES}")


@dataclass(frozen=True)
class ImageMap:
    """The ordered rules; the first match wins."""

    rules: tuple[ImageRule, ...] = field(default_factory=tuple)
    """Rules in file order."""

    @classmethod
    def load(cls, path: Path = DEFAULT_IMAGES_FILE) -> ImageMap:
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
            raise ValueError(f"{path}: expected a mapping with a 'rules' list")
        rules = []
        for i, raw in enumerate(doc["rules"]):
            if not isinstance(raw, dict) or set(raw) - {"match", "runtime", "entrypoint", "cmd"}:
                raise ValueError(f"{path}: rules[{i}] must have only match, runtime, entrypoint, cmd")
            rules.append(ImageRule(tuple(raw.get("match") or ()), raw.get("runtime", ""),
                                   tuple(raw.get("entrypoint") or ()), tuple(raw.get("cmd") or ())))
        return cls(tuple(rules))

    def resolve(self, image: str) -> ImageRule:
        """The rule for ``image``; raises UnknownImage naming the image when none matches."""
        name = normalize(image)
        for rule in self.rules:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in rule.match):
                return rule
        raise UnknownImage(f'image "{image}" has no local runtime in devcluster/images.yaml')


def normalize(image: str) -> str:
    """Drop the default registry and ``library/`` prefixes: docker.io/library/busybox:1 -> busybox:1."""
    name = image.strip()
    for prefix in ("index.docker.io/", "docker.io/", "registry-1.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.startswith("library/"):
        name = name[len("library/"):]
    return name


def venv_dir() -> Path:
    """The virtualenv the node runs in (the project's .venv), found from this interpreter."""
    return Path(sys.prefix)


def pytriton_dir() -> Path:
    import pytriton  # only the triton runtime needs it; imported late to keep the node light

    return Path(pytriton.__file__).resolve().parent


def triton_backend_dir(state_dir: Path) -> Path:
    """A backends/ folder whose python/ holds pytriton's python backend plus the 3.11 stub."""
    target = state_dir / "triton-backends"
    python_dir = target / "python"
    if (python_dir / "triton_python_backend_stub").exists():
        return target
    python_dir.mkdir(parents=True, exist_ok=True)
    root = pytriton_dir() / "tritonserver"
    for item in (root / "backends" / "python").iterdir():
        _copy(item, python_dir / item.name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    _copy(root / "python_backend_stubs" / version / "triton_python_backend_stub",
          python_dir / "triton_python_backend_stub")
    return target


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    tmp.write_bytes(src.read_bytes())
    os.chmod(tmp, src.stat().st_mode)
    tmp.replace(dst)


def runtime_env(runtime: str, host_path: str, shim_dir: Path) -> dict[str, str]:
    """Variables a runtime puts in front of the container's own env (PATH, LD_LIBRARY_PATH)."""
    venv_bin = str(venv_dir() / "bin")
    if runtime == "host":
        return {"PATH": f"{shim_dir}:{host_path}"}
    env = {"PATH": f"{venv_bin}:{host_path}", "VIRTUAL_ENV": str(venv_dir())}
    if runtime == "triton":
        libs = pytriton_dir().parent / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = str(libs)
    return env


def build_argv(rule: ImageRule, command: list[str], args: list[str], state_dir: Path) -> tuple[str, ...]:
    """argv as Kubernetes defines it, then the runtime's rewrites.

    ``command`` replaces ENTRYPOINT (and drops CMD); ``args`` replaces CMD.
    """
    if command:
        argv = list(command) + list(args)
    else:
        argv = list(rule.entrypoint) + (list(args) if args else list(rule.cmd))
    if not argv:
        raise UnknownImage(f"image rule {rule.match[0]!r} has no entrypoint and the container sets no command")
    if rule.runtime == "triton" and os.path.basename(argv[0]) == "tritonserver":
        backends = triton_backend_dir(state_dir)
        argv[0] = str(pytriton_dir() / "tritonserver" / "bin" / "tritonserver")
        if not any(a.startswith("--backend-directory") for a in argv[1:]):
            argv.append(f"--backend-directory={backends}")
    return tuple(argv)
