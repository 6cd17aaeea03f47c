"""`make demo`: the whole kiln flow on the embedded cluster, narrated.

cluster up → helm install the chart → S3 bucket + credentials Secret → the demo corpus (real Chinese
and English text from package registries, see ``kiln_trainer.data.demo_corpus``) uploaded to the
bucket → apply examples/demo.yaml → follow the run (prepare, 2-pod DeepSpeed training, export, Triton
rollout) → generate text from the served model and measure its Chinese → plot the loss curves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kiln_devcluster import controlplane
from kiln_devcluster.paths import REPO_ROOT, StatePaths

NAMESPACE = "default"
RUN = "demo"
TARGET = "demo-llm"
EXAMPLE = REPO_ROOT / "examples" / "demo.yaml"
CORPUS_PREFIX = "corpora/demo"
"""Where examples/demo.yaml's sources point: s3://kiln/corpora/demo/{zh,en}/."""
ZH_PROMPTS = ("《浣溪沙》 苏轼\n\n", "春风又绿江南岸，", "明月几时有，")
EN_PROMPTS = ("The list type",)
NO_REPEAT_NGRAM = 3
"""Greedy decoding with the served model's no-repeat rule (`kiln generate --no-repeat-ngram 3`):
no three-token phrase comes back, so no token runs more than three times (the figures say so)."""
MIN_NEW_TOKENS = 12
"""The EOS floor (`kiln generate --min-new-tokens 12`): a small model often finds EOS the likeliest
token right after a mark (a poem may end there) and then answered nothing; 12 tokens are more than
one line of seven characters and its mark."""
MAX_NEW_TOKENS = 40


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
    # devcluster-values.yaml names the operator image `up` built from images/operator/Dockerfile.
    _run([helm, "upgrade", "--install", "kiln", str(chart), "--namespace", "kiln-system", "--create-namespace",
          "-f", str(chart / "ci" / "devcluster-values.yaml"), "--wait", "--timeout", "5m"], env)


def _s3(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")


def prepare_storage(env: dict[str, str]) -> None:
    s3 = _s3(env)
    if "kiln" not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket="kiln")
    kubectl = str(_bin() / "kubectl")
    secret = _run([kubectl, "create", "secret", "generic", "kiln-s3", "-n", NAMESPACE,
                   f"--from-literal=AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
                   f"--from-literal=AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}",
                   "--dry-run=client", "-o", "yaml"], env).stdout
    subprocess.run([kubectl, "apply", "-f", "-"], input=secret, env=env, text=True, check=True,
                   capture_output=True)


def upload_corpus(env: dict[str, str]) -> Path:
    """The demo corpus (built once from the fetched registry packages) in the bucket the prepare Job reads."""
    from kiln_trainer.data import demo_corpus

    folder = demo_corpus.cached()
    s3 = _s3(env)
    for part in ("zh", "en"):
        for f in sorted((folder / part).glob("*.jsonl.zst")):
            s3.upload_file(str(f), "kiln", f"{CORPUS_PREFIX}/{part}/{f.name}")
    return folder


def forget_checkpoints(env: dict[str, str]) -> None:
    """Remove the checkpoints and metrics of an earlier demo run (model versions stay)."""
    s3 = _s3(env)
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


def generate_all(env: dict[str, str]) -> list[tuple[str, str]]:
    """Greedy continuations of the demo's prompts from the served model, printed as they come."""
    pairs = []
    for prompt in (*ZH_PROMPTS, *EN_PROMPTS):
        out = kiln(["generate", TARGET, prompt, "--max-new-tokens", str(MAX_NEW_TOKENS),
                    "--no-repeat-ngram", str(NO_REPEAT_NGRAM), "--min-new-tokens", str(MIN_NEW_TOKENS)], env)
        text = out.stdout.rstrip("\n")
        print(f"  {prompt!r} → {text!r}", flush=True)
        pairs.append((prompt, text))
    return pairs


def download_served(env: dict[str, str], dest: Path) -> Path:
    """The newest version of the target's model from the run's model repository (what Triton serves)."""
    s3, prefix = _s3(env), f"demo/{NAMESPACE}/models/{TARGET}/"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="kiln", Prefix=prefix)
            for o in page.get("Contents", [])]
    version = max(int(k[len(prefix):].split("/", 1)[0]) for k in keys if k[len(prefix):].split("/", 1)[0].isdigit())
    folder = dest / str(version)
    for key in keys:
        rest = key[len(prefix):]
        if rest.startswith(f"{version}/") and "/" not in rest[len(f"{version}/"):]:
            folder.mkdir(parents=True, exist_ok=True)
            s3.download_file("kiln", key, str(folder / rest.split("/", 1)[1]))
    return folder


def measure(env: dict[str, str], corpus: Path, pairs: list[tuple[str, str]]) -> bool:
    """Print the Chinese quality figures of the served version; True when every goal is met."""
    from kiln_trainer.data.demo_corpus import heldout_texts
    from kiln_trainer.eval.quality import report

    with tempfile.TemporaryDirectory(prefix="kiln-demo-") as tmp:
        r = report(download_served(env, Path(tmp)), heldout_texts(corpus),
                   [(p, t) for p, t in pairs if p in ZH_PROMPTS])
    for line in r.lines():
        print(f"  {line}", flush=True)
    return r.met()


def main() -> int:
    t0 = time.monotonic()
    paths = StatePaths.from_env()
    say("starting the embedded cluster (etcd, kube-apiserver, controllers, scheduler, S3, nodes; images built and imported)")
    controlplane.up(paths, controlplane.UpOptions())
    env = _env(paths)
    say("installing the kiln chart with helm")
    install_chart(env)
    say("creating the bucket and the credentials Secret")
    prepare_storage(env)
    say(f"uploading the demo corpus (verse of chinese-poetry from npm, python3.11-doc from Debian) to "
        f"s3://kiln/{CORPUS_PREFIX}")
    corpus = upload_corpus(env)
    say(f"applying {EXAMPLE.relative_to(REPO_ROOT)}")
    # A second `make demo` trains again from scratch and rolls a new version out to the same target.
    _run([str(_bin() / "kubectl"), "delete", "trainingrun", RUN, "-n", NAMESPACE, "--ignore-not-found",
          "--wait=true", "--timeout=120s"], env, check=False)
    forget_checkpoints(env)
    print(kiln(["submit", str(EXAMPLE)], env).stdout.strip())
    phase = follow(env, deadline_s=float(os.environ.get("KILN_DEMO_DEADLINE", "1800")))
    if phase != "Succeeded":
        say(f"the run failed; see `kiln status {RUN}` and `kubectl get events`")
        return 1
    say(f"text from the served model (kiln generate, greedy, --no-repeat-ngram {NO_REPEAT_NGRAM}, "
        f"--min-new-tokens {MIN_NEW_TOKENS})")
    pairs = generate_all(env)
    say("Chinese quality of the served version (held-out poems; python -m kiln_trainer.eval.quality)")
    met = measure(env, corpus, pairs)
    plot = paths.root / "loss.png"
    kiln(["plot", RUN, "-o", str(plot)], env)
    say(f"loss curves: {plot}")
    say(f"demo finished in {time.monotonic() - t0:.0f}s; Chinese quality goals {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
