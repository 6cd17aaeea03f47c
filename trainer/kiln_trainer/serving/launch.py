"""`kiln-trainer serve`: the entry point of a Triton serving pod.

It starts the real tritonserver in explicit model-control mode with nothing loaded, then loads one
model pinned to ONE version (a config override with `version_policy: specific`). Pinning matters:
the repository already holds versions that were exported but not yet gated, and a pod that restarts
must come back with the version that is live, never with the newest one on disk. The version comes
from `--version N` (a canary) or from `--version-file` (the target's ConfigMap, for serving pods).
Promotion to a new version happens later through Triton's repository API (see the operator's
rollout), which swaps versions inside the running server without dropping requests.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from kiln_api import contract as c
from kiln_api.s3layout import StorageURI

from kiln_trainer.serving.tritonserver import build_backend_dir, triton_launch_spec, wait_ready
from kiln_trainer.storage import open_store


class ServeError(RuntimeError):
    """The serving pod cannot start; the message names the flag or setting at fault."""


def triton_repository(uri: str, endpoint: str | None) -> str:
    """Our storage URI → the form tritonserver reads (`s3://http://host:port/bucket/path` or a path)."""
    parsed = StorageURI.parse(uri, field="--repository")
    if parsed.scheme == "file":
        return parsed.prefix
    if not endpoint:
        return f"s3://{parsed.bucket}/{parsed.prefix}".rstrip("/")
    ep = urlparse(endpoint)
    if ep.scheme not in ("http", "https") or not ep.netloc:
        raise ServeError(f"AWS_ENDPOINT_URL: {endpoint!r} is not an http(s) URL")
    return f"s3://{ep.scheme}://{ep.netloc}/{parsed.bucket}/{parsed.prefix}".rstrip("/")


def pinned_config(config_pbtxt: str, version: int) -> dict[str, object]:
    """The model's config.pbtxt as Triton's JSON config, with the version policy pinned to `version`."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    cfg = text_format.Parse(config_pbtxt, model_config_pb2.ModelConfig())
    cfg.version_policy.Clear()
    cfg.version_policy.specific.versions.append(version)
    out: dict[str, object] = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
    return out


def load_pinned(http: str, model: str, config: dict[str, object], timeout_s: float = 300,
                key: str | None = None) -> None:
    """Ask the running server to load `model` with `config` (a reload if it is loaded already);
    `key` is the repository-API key the server was started with, if any."""
    body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
    headers = {"Content-Type": "application/json", **({c.TRITON_KEY_HEADER: key} if key else {})}
    req = urllib.request.Request(
        f"http://{http}/v2/repository/models/{model}/load", data=body, method="POST", headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        raise ServeError(f"loading {model}: {e.read().decode(errors='replace')}") from e


def read_version(args: argparse.Namespace) -> int:
    if args.version is not None:
        return int(args.version)
    text = Path(args.version_file).read_text().strip()
    if not text.isdigit() or int(text) < 1:
        raise ServeError(f"--version-file {args.version_file}: {text!r} is not a positive version number")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiln-trainer serve", description=__doc__.splitlines()[0])
    p.add_argument("--repository", required=True, help="model repository URI (s3://bucket/prefix/models)")
    p.add_argument("--model", required=True, help="model name (folder in the repository)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--version", type=int, help="serve exactly this version")
    group.add_argument("--version-file", help="file holding the version to serve (the target's ConfigMap)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for the server")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    version = read_version(args)
    store = open_store(args.repository)
    config = pinned_config(store.get_bytes(f"{args.model}/config.pbtxt").decode(), version)
    if not store.exists(f"{args.model}/{version}/manifest.json"):
        raise ServeError(f"--version: {store.uri(f'{args.model}/{version}')} is not an exported version")

    work = Path(tempfile.mkdtemp(prefix="kiln-serve-"))
    # With a key (the operator's per-target Secret), only its holders may load or unload models.
    key = os.environ.get(c.ENV_TRITON_REPOSITORY_KEY) or None
    spec = triton_launch_spec(
        triton_repository(args.repository, os.environ.get("AWS_ENDPOINT_URL")),
        build_backend_dir(work / "backends"),
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
        extra_args=c.triton_restricted_args(key) if key else (),
    )
    proc = subprocess.Popen(spec.argv, env=spec.env)
    # Pass the pod's SIGTERM on, so Triton finishes in-flight requests before it exits.
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    http = f"127.0.0.1:{args.http_port}"
    try:
        wait_ready(f"http://{http}/v2/health/live", args.ready_timeout, proc)
        print(f"kiln serve: loading {args.model} version {version}", flush=True)
        load_pinned(http, args.model, config, key=key)
        print(f"kiln serve: {args.model} version {version} ready", flush=True)
    except Exception as e:  # noqa: BLE001 - a pod that cannot load its model must exit non-zero
        print(f"kiln serve: {e}", file=sys.stderr, flush=True)
        proc.terminate()
        proc.wait(timeout=30)
        return 1
    return proc.wait()
