"""The `kiln` subcommands. Each reads top-down: load, act, print; errors raise CLIError."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kiln_api.s3layout import RunLayout
from kiln_api.trainingrun import GROUP, PLURAL, TERMINAL_PHASES, VERSION

from kiln_operator.cli.render import duration, progress_bar, sparkline
from kiln_operator.cli.storage import StorageError, read_bytes


class CLIError(RuntimeError):
    """A problem the user can fix; printed without a traceback."""


# ------------------------------------------------------------------ cluster access


def _api(args: argparse.Namespace) -> tuple[Any, str]:
    from kubernetes import client, config

    path = args.kubeconfig or os.environ.get("KUBECONFIG") or _dev_kubeconfig()
    try:
        config.load_kube_config(config_file=path)
        _, active = config.list_kube_config_contexts(config_file=path)
    except Exception as e:  # noqa: BLE001 - any kubeconfig problem is the user's to fix
        raise CLIError(f"cannot load kubeconfig {path or '(default)'}: {e}") from e
    namespace = args.namespace or active.get("context", {}).get("namespace") or "default"
    return client.ApiClient(), namespace


def _dev_kubeconfig() -> str | None:
    here = Path.cwd() / ".kiln" / "kubeconfig"
    return str(here) if here.exists() else None


def _get_run(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api, ns = _api(args)
    try:
        run: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name
        )
    except ApiException as e:
        if e.status == 404:
            raise CLIError(f"TrainingRun {ns}/{name} not found") from e
        raise CLIError(f"reading TrainingRun {ns}/{name}: {e.reason}") from e
    return run


# ------------------------------------------------------------------ dev


def dev(args: argparse.Namespace) -> int:
    # The dev cluster lives in this checkout's devcluster/; the CLI runs it as a separate program.
    if importlib.util.find_spec("kiln_devcluster") is None:
        raise CLIError("kiln dev needs a kiln source checkout (kiln_devcluster is not installed)")
    return subprocess.call([sys.executable, "-m", "kiln_devcluster.cli", args.action])


# ------------------------------------------------------------------ submit


def submit(args: argparse.Namespace) -> int:
    from kiln_api.specfields import SpecError
    from kiln_api.trainingrun import parse_spec
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    docs = [d for d in yaml.safe_load_all(Path(args.file).read_text()) if d]
    runs = [d for d in docs if d.get("kind") == "TrainingRun"]
    if not runs:
        raise CLIError(f"{args.file} holds no TrainingRun")
    api, default_ns = _api(args)
    crd = client.CustomObjectsApi(api)
    for body in runs:
        name = body.get("metadata", {}).get("name", "?")
        try:  # the API server validates too; this names the field before anything is sent
            parse_spec(body.get("spec"))
        except SpecError as e:
            raise CLIError(f"TrainingRun {name}: {e}") from e
        ns = body["metadata"].get("namespace") or default_ns
        try:
            crd.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
            print(f"trainingrun.{GROUP}/{name} created")
        except ApiException as e:
            if e.status != 409:
                raise CLIError(f"TrainingRun {name}: {_api_message(e)}") from e
            crd.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": body["spec"]})
            print(f"trainingrun.{GROUP}/{name} configured")
    return 0


def _api_message(e: Any) -> str:
    try:
        return str(json.loads(e.body).get("message", e.reason))
    except (TypeError, ValueError):
        return str(e.reason)


# ------------------------------------------------------------------ status


def _metrics(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's metric records from its storage, read with the caller's own credentials."""
    spec = run["spec"]
    layout = RunLayout.of(spec["storage"]["uri"], run["metadata"]["namespace"], run["metadata"]["name"])
    try:
        lines = read_bytes(layout.metrics(), storage_endpoint(run)).decode().splitlines()
    except StorageError as e:  # metrics are optional for status, required for plot
        raise CLIError(f"cannot read metrics {layout.metrics()}: {e}") from e
    return [json.loads(line) for line in lines if line.strip()]


def storage_endpoint(run: dict[str, Any]) -> str | None:
    """The S3 endpoint for a run's storage: $AWS_ENDPOINT_URL, else the one in its spec."""
    return os.environ.get("AWS_ENDPOINT_URL") or run["spec"]["storage"].get("endpoint")


def _budget(spec: dict[str, Any], progress: dict[str, Any]) -> tuple[float, float, str]:
    training = spec.get("training", {})
    if training.get("maxSteps"):
        return float(progress.get("step") or 0), float(training["maxSteps"]), "steps"
    return float(progress.get("tokens") or 0), float(training.get("maxTokens") or 0), "tokens"


def status(args: argparse.Namespace) -> int:
    while True:
        run = _get_run(args, args.run)
        print(_status_text(run))
        phase = run.get("status", {}).get("phase")
        if not args.watch or phase in TERMINAL_PHASES:
            return 0 if phase != "Failed" else 1
        time.sleep(5)
        print()


def _status_text(run: dict[str, Any]) -> str:
    st = run.get("status", {})
    progress = st.get("progress") or {}
    done, total, unit = _budget(run["spec"], progress)
    lines = [
        f"{run['metadata']['namespace']}/{run['metadata']['name']}  phase: {st.get('phase', 'Pending')}",
        f"  progress   {progress_bar(done, total)}  {int(done):,}/{int(total):,} {unit}  "
        f"ETA {duration(progress.get('etaSeconds'))}",
    ]
    if progress.get("loss") is not None:
        lines.append(f"  loss       {progress['loss']:.4f}   tokens/s {progress.get('tokensPerSecond') or 0:,.0f}")
    try:
        losses = [float(r["loss"]) for r in _metrics(run) if r.get("loss") is not None]
        if losses:
            lines.append(f"  curve      {sparkline(losses)}  ({losses[0]:.3f} → {losses[-1]:.3f})")
    except CLIError:
        pass  # no credentials for the run's storage here: show what the API has
    lines.append(f"  checkpoint last committed step {progress.get('lastCommittedStep', '-')}")
    restarts = st.get("restarts") or {}
    lines.append(f"  restarts   failure {restarts.get('failure', 0)}, preemption {restarts.get('preemption', 0)}")
    if st.get("gpuHours") is not None:
        lines.append(f"  usage      {st['gpuHours']:.3f} device-hours, ${st.get('estimatedCost') or 0:,.2f}")
    for c in st.get("conditions", []):
        lines.append(f"  {c['type']:<12} {c['status']:<7} {c.get('reason', '')}: {c.get('message', '')}"[:160])
    return "\n".join(lines)


# ------------------------------------------------------------------ plot


def plot(args: argparse.Namespace) -> int:
    from kiln_operator.cli.plot import plot_curves

    run = _get_run(args, args.run)
    records = _metrics(run)
    if not records:
        raise CLIError(f"run {args.run} has no metric records yet")
    out = plot_curves(records, Path(args.output), title=f"TrainingRun {args.run}")
    print(out)
    return 0


# ------------------------------------------------------------------ generate


def generate(args: argparse.Namespace) -> int:
    from kiln_operator.cli.stream import stream_text

    url = args.url or _service_grpc(args, args.target)
    if not args.url:
        live = _live_version(args, args.target)
        if live:
            print(live, file=sys.stderr, flush=True)
    for piece in stream_text(url, args.target, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                             args.seed, args.no_repeat_ngram, args.min_new_tokens):
        print(piece, end="", flush=True)
    print()
    return 0


def live_line(target: str, data: dict[str, str]) -> str:
    """`tiny-llm serves v3 (int8)`: what the target's live ConfigMap records ("" when it records nothing).
    The model name is the target's whatever the variant; the variant belongs to the live version."""
    if not data.get("version"):
        return ""
    return f"{target} serves v{data['version']} ({data.get('variant') or 'float32'})"


def _live_version(args: argparse.Namespace, target: str) -> str:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api, ns = _api(args)
    try:
        cm = client.CoreV1Api(api).read_namespaced_config_map(f"{target}-serving", ns)
    except ApiException:
        return ""  # informational only: the Service answered, generation goes on
    return live_line(target, dict(cm.data or {}))


def _service_grpc(args: argparse.Namespace, target: str) -> str:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api, ns = _api(args)
    try:
        svc = client.CoreV1Api(api).read_namespaced_service(target, ns)
    except ApiException as e:
        raise CLIError(f"serving target {ns}/{target}: {e.reason}") from e
    return f"{svc.spec.cluster_ip}:8001"


# ------------------------------------------------------------------ estimate


def estimate(args: argparse.Namespace) -> int:
    from kiln_api.estimate import estimate as run_estimate
    from kiln_api.estimate import table
    from kiln_api.specfields import SpecError
    from kiln_api.trainingrun import parse_spec

    from kiln_operator.cli.calibration import cpu_calibration

    docs = [d for d in yaml.safe_load_all(Path(args.file).read_text()) if d and d.get("kind") == "TrainingRun"]
    if not docs:
        raise CLIError(f"{args.file} holds no TrainingRun")
    worst = 0
    for body in docs:
        try:
            spec = parse_spec(body.get("spec"))
            cal, note = cpu_calibration(args.calibrate) if spec.training.gpus_per_node == 0 else (None, "")
            e = run_estimate(spec, calibration=cal)
        except SpecError as err:
            raise CLIError(f"TrainingRun {body.get('metadata', {}).get('name', '?')}: {err}") from err
        print(f"TrainingRun {body['metadata']['name']}" + (f"  ({note})" if note else ""))
        for key, value in table(e):
            print(f"  {key:<22} {value}")
        worst = worst or (0 if e.fits else 1)
    return worst
