"""`make demo`: the whole kiln flow on the embedded cluster, narrated.

cluster up → helm install the chart → S3 bucket + credentials Secret → apply examples/tiny.yaml →
follow the run (prepare, 2-pod DeepSpeed training, export, Triton rollout) → generate text from the
served model → plot the loss curves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kiln_devcluster import controlplane
from kiln_devcluster.paths import REPO_ROOT, StatePaths

NAMESPACE = "default"
RUN = "tiny"
EXAMPLE = REPO_ROOT / "examples" / "tiny.yaml"
PROMPTS = ("Later, Tara wrote", "Fog covered the roofs, so", "张阿姨笑着回答：")


def say(msg: str) -> None:
    print(f"\033[1m==> {msg}\033[0m", flush=True)


def _env(paths: StatePaths) -> dict[str, str]:
    env = dict(os.environ)
    env["KUBECONFIG"] = str(paths.root / "kubeconfig")
    for line in (paths.root / "s3.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key:
            env[key] = value
    return env


def _run(argv: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, env=env, text=True, capture_output=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} … failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out


def _bin() -> Path:
    return Path(subprocess.check_output([str(REPO_ROOT / "devcluster" / "build.sh"), "--print-bin"], text=True).strip())


def install_chart(env: dict[str, str]) -> None:
    helm = str(_bin() / "helm")
    chart = REPO_ROOT / "charts" / "kiln"
    # devcluster-values.yaml names the operator image the process node maps to this checkout's venv.
    _run([helm, "upgrade", "--install", "kiln", str(chart), "--namespace", "kiln-system", "--create-namespace",
          "-f", str(chart / "ci" / "devcluster-values.yaml"), "--wait", "--timeout", "5m"], env)


def prepare_storage(env: dict[str, str]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    if "kiln" not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket="kiln")
    kubectl = str(_bin() / "kubectl")
    secret = _run([kubectl, "create", "secret", "generic", "kiln-s3", "-n", NAMESPACE,
                   f"--from-literal=AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
                   f"--from-literal=AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}",
                   "--dry-run=client", "-o", "yaml"], env).stdout
    subprocess.run([kubectl, "apply", "-f", "-"], input=secret, env=env, text=True, check=True,
                   capture_output=True)


def forget_checkpoints(env: dict[str, str]) -> None:
    """Remove the checkpoints and metrics of an earlier demo run (model versions stay)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    prefix = f"demo/{NAMESPACE}/runs/{RUN}/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="kiln", Prefix=prefix):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket="kiln", Key=obj["Key"])


def kiln(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "kiln_operator.cli", *args], env, check)


def follow(env: dict[str, str], deadline_s: float) -> str:
    """Print the run's status whenever it changes; return the final phase."""
    start, last = time.monotonic(), ""
    while time.monotonic() - start < deadline_s:
        out = kiln(["status", RUN], env, check=False)
        text = out.stdout.strip()
        first = text.splitlines()[0] if text else out.stderr.strip()
        progress = next((ln for ln in text.splitlines() if "progress" in ln), "")
        line = f"[{time.monotonic() - start:5.0f}s] {first.split('  ', 1)[-1]}  {progress.strip()}"
        if line.split("] ", 1)[1] != last:
            print(line, flush=True)
            last = line.split("] ", 1)[1]
        if "phase: Succeeded" in text or "phase: Failed" in text:
            print(text)
            return "Succeeded" if "phase: Succeeded" in text else "Failed"
        time.sleep(3)
    raise TimeoutError(f"run {RUN} did not finish within {deadline_s:.0f}s")


def main() -> int:
    t0 = time.monotonic()
    paths = StatePaths.from_env()
    say("starting the embedded cluster (etcd, kube-apiserver, controllers, scheduler, S3, process node)")
    controlplane.up(paths, controlplane.UpOptions())
    env = _env(paths)
    say("installing the kiln chart with helm")
    install_chart(env)
    say("creating the bucket and the credentials Secret")
    prepare_storage(env)
    say(f"applying {EXAMPLE.relative_to(REPO_ROOT)}")
    # A second `make demo` trains again from scratch and rolls a new version out to the same target.
    _run([str(_bin() / "kubectl"), "delete", "trainingrun", RUN, "-n", NAMESPACE, "--ignore-not-found",
          "--wait=true", "--timeout=120s"], env, check=False)
    forget_checkpoints(env)
    print(kiln(["submit", str(EXAMPLE)], env).stdout.strip())
    phase = follow(env, deadline_s=float(os.environ.get("KILN_DEMO_DEADLINE", "1800")))
    if phase != "Succeeded":
        say("the run failed; see `kiln status tiny` and `kubectl get events`")
        return 1
    say("text from the served model (kiln generate)")
    for prompt in PROMPTS:
        out = kiln(["generate", "tiny-llm", prompt, "--max-new-tokens", "40"], env)  # greedy
        print(f"  {prompt!r} → {out.stdout.strip()!r}")
    plot = paths.root / "loss.png"
    kiln(["plot", RUN, "-o", str(plot)], env)
    say(f"loss curves: {plot}")
    say(f"demo finished in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
