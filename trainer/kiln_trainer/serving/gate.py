"""`kiln-trainer gate`: decide with real inference whether a candidate version may serve.

Runs as a Job in the tenant's namespace (it reads the version's manifest with the tenant's
storage credentials) against the canary pod. Checks, per prompt:

* the model answers, with a non-empty continuation;
* greedy output is token-for-token the reference the export recorded in `manifest.json`
  (same weights, same code → same tokens; anything else means the artifact or the server is broken);
* the whole answer arrives within the latency bound;

and once per version, that the manifest's variant (float32, bfloat16, int8) is the one the run asked
for: the model name is the same for every variant, so only the version says what it holds.

Prints one JSON verdict line and exits 0 (pass) or 1 (fail); the operator reads both.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from kiln_api.triton_client import GenerateRequest, TritonRequestError, generate

from kiln_trainer.storage import NotFound, StoreError, open_store


@dataclass
class Check:
    prompt: str
    ok: bool
    reason: str = ""
    latency_ms: float = 0.0


@dataclass
class Verdict:
    passed: bool
    model: str
    version: int
    checks: list[Check] = field(default_factory=list)

    @property
    def reason(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        return "; ".join(f"{c.prompt[:30]!r}: {c.reason}" for c in failed) or "all checks passed"


def check_prompt(url: str, model: str, version: int, prompt: str, reference: dict[str, Any] | None,
                 max_latency_ms: float) -> Check:
    max_new = int(reference["max_new_tokens"]) if reference else 16
    try:
        got = generate(url, model, GenerateRequest(prompt=prompt, max_new_tokens=max_new), version=version,
                       timeout_s=max(max_latency_ms / 1000 * 3, 30))
    except TritonRequestError as e:
        return Check(prompt, False, f"request failed: {e}")
    latency = got.total_s * 1000
    if not got.token_ids:
        return Check(prompt, False, "empty output", latency)
    if reference is not None and got.token_ids != [int(t) for t in reference["token_ids"]]:
        return Check(prompt, False, f"greedy output {got.text!r} differs from the reference "
                     f"{reference.get('text', '')!r}", latency)
    if latency > max_latency_ms:
        return Check(prompt, False, f"took {latency:.0f} ms, bound {max_latency_ms:.0f} ms", latency)
    return Check(prompt, True, "", latency)


def check_variant(manifest: dict[str, Any], expected: str | None) -> Check | None:
    """A failed check when the version holds another variant than the run exported; else None.
    Versions exported before variants were recorded are full precision: their `dtype`."""
    if expected is None:
        return None
    got = manifest.get("variant") or manifest.get("dtype") or "float32"
    if got != expected:
        return Check("(variant)", False, f"the version holds {got} weights, the run asked for {expected}")
    return None


def run_gate(repository: str, model: str, version: int, url: str, prompts: list[str],
             max_latency_ms: float, variant: str | None = None) -> Verdict:
    store = open_store(repository)
    try:
        manifest = json.loads(store.get_bytes(f"{model}/{version}/manifest.json"))
    except (NotFound, StoreError, ValueError) as e:
        return Verdict(False, model, version, [Check("(manifest)", False, f"cannot read the manifest: {e}")])
    wrong = check_variant(manifest, variant)
    if wrong is not None:
        return Verdict(False, model, version, [wrong])
    refs = {r["prompt"]: r for r in manifest.get("reference_outputs", [])}
    todo = list(dict.fromkeys([*refs, *prompts]))  # recorded references first, then extra prompts
    if not todo:
        return Verdict(False, model, version, [Check("(none)", False, "no gate prompts and no references")])
    checks = [check_prompt(url, model, version, p, refs.get(p), max_latency_ms) for p in todo]
    return Verdict(all(c.ok for c in checks), model, version, checks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kiln-trainer gate", description=__doc__.splitlines()[0])
    p.add_argument("--repository", required=True, help="model repository URI")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--variant", help="variant the version must hold (float32, bfloat16, int8)")
    p.add_argument("--url", required=True, help="candidate's Triton gRPC host:port")
    p.add_argument("--prompt", action="append", default=[], help="extra prompt (repeatable)")
    p.add_argument("--max-latency-ms", type=float, default=5000.0)
    args = p.parse_args(argv)
    verdict = run_gate(args.repository, args.model, args.version, args.url, args.prompt, args.max_latency_ms,
                       args.variant)
    print(json.dumps({**asdict(verdict), "reason": verdict.reason}), flush=True)
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
