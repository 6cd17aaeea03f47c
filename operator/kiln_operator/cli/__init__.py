"""`kiln`: the command line for people who run TrainingRuns.

    kiln dev up|down                 the embedded cluster (this checkout only)
    kiln submit FILE                 create or update the TrainingRuns in FILE
    kiln status RUN                  phase, progress bar, loss sparkline, checkpoints, restarts, cost
    kiln plot RUN -o loss.png        loss / val loss / lr / grad-norm curves from the run's metrics
    kiln generate TARGET "prompt"    stream tokens from a serving target's Triton
    kiln estimate -f run.yaml        memory, FLOPs, time and cost before you submit
    kiln data report RUN|URI         documents by stage and reason, cleaning, tokens, tokenizer coverage
    kiln data sample RUN|URI [-n N]  cleaned documents as the trainer reads them
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiln", description="Train LLMs on Kubernetes and serve them.")
    p.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig's)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig path (default: $KUBECONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="the embedded development cluster")
    dev.add_argument("action", choices=["up", "down", "status"])

    submit = sub.add_parser("submit", help="create or update TrainingRuns from a YAML file")
    submit.add_argument("file")

    status = sub.add_parser("status", help="show a run")
    status.add_argument("run")
    status.add_argument("--watch", action="store_true", help="refresh until the run ends")

    plot = sub.add_parser("plot", help="plot a run's curves to a PNG")
    plot.add_argument("run")
    plot.add_argument("-o", "--output", default="loss.png")

    gen = sub.add_parser("generate", help="stream text from a serving target")
    gen.add_argument("target")
    gen.add_argument("prompt")
    gen.add_argument("--max-new-tokens", type=int, default=48)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    gen.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    gen.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N",
                     help="never repeat an N-token phrase of the prompt + continuation (N >= 2; 0 = off)")
    gen.add_argument("--min-new-tokens", type=int, default=0, metavar="N",
                     help="the model may not end (EOS) before N new tokens (0 = off)")
    gen.add_argument("--url", default=None, help="Triton gRPC host:port (default: the target Service)")

    est = sub.add_parser("estimate", help="preflight a run: memory per device, FLOPs, time, cost")
    est.add_argument("-f", "--file", required=True)
    est.add_argument("--calibrate", action="store_true",
                     help="re-measure this machine's CPU for the step time (otherwise measured once and cached)")

    data = sub.add_parser("data", help="inspect a run's prepared dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    rep = data_sub.add_parser("report", help="documents in/out by reason, dedup, tokens by domain, coverage")
    rep.add_argument("run", help="TrainingRun name, or a dataset URI (s3://…/datasets/<hash>, file:///…)")
    rep.add_argument("--json", action="store_true", help="print report.json as it is")
    smp = data_sub.add_parser("sample", help="cleaned documents decoded from the train shards")
    smp.add_argument("run", help="TrainingRun name, or a dataset URI")
    smp.add_argument("-n", type=int, default=5, help="how many documents (default 5)")
    return p


def _data(args: argparse.Namespace) -> int:
    from kiln_operator.cli import data

    return data.report(args) if args.data_command == "report" else data.sample(args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from kiln_operator.cli import commands

    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "dev": commands.dev,
        "submit": commands.submit,
        "status": commands.status,
        "plot": commands.plot,
        "generate": commands.generate,
        "estimate": commands.estimate,
        "data": _data,
    }
    try:
        return handlers[args.command](args)
    except commands.CLIError as e:
        print(f"kiln {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
