"""`kiln-trainer`: one subcommand per job, each a lazily imported `main(config_path, ...)`.

Keep this file tiny: a new job adds one `_sub(...)` line and its own module.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kiln_api.contract import EXIT_BAD_CONFIG


def _sub(subs: argparse._SubParsersAction, name: str, target: str, help_text: str) -> argparse.ArgumentParser:
    p = subs.add_parser(name, help=help_text)
    p.add_argument("--config", required=True, help="YAML config file")
    p.set_defaults(target=target)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln-trainer")
    subs = parser.add_subparsers(dest="command", required=True)
    prep = _sub(subs, "prepare", "kiln_trainer.data.prepare:main", "prepare a dataset from a data spec")
    prep.add_argument("--shard-index", type=int, default=None,
                      help="this process's slice of the inputs (default with --num-shards: $JOB_COMPLETION_INDEX)")
    prep.add_argument("--num-shards", type=int, default=None, help="number of parallel shard processes")
    prep.add_argument("--merge", action="store_true", help="merge finished parts into the dataset")
    _sub(subs, "train", "kiln_trainer.train.main:main", "train a model")
    _sub(subs, "export", "kiln_trainer.export.main:main", "export a checkpoint for serving")
    return parser


# Subcommands that take flags instead of a config file (they run in serving pods and gate Jobs).
_FLAG_COMMANDS = {"serve": "kiln_trainer.serving.launch", "gate": "kiln_trainer.serving.gate"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _FLAG_COMMANDS:
        return int(importlib.import_module(_FLAG_COMMANDS[argv[0]]).main(argv[1:]))
    args = build_parser().parse_args(argv)
    module, func = args.target.split(":")
    entry = getattr(importlib.import_module(module), func)
    extra = {k: v for k, v in vars(args).items() if k not in ("command", "target", "config")}
    try:
        return int(entry(args.config, **extra) or 0)
    except ValueError as e:  # config errors name their field; no traceback needed
        print(f"kiln-trainer {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG  # the pod contract's "never retry": a restart cannot fix a config


if __name__ == "__main__":
    sys.exit(main())
