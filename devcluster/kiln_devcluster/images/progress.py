"""Named, timed steps and the one way this package runs a host command.

Every long action prints its name when it starts and its duration when it ends, so a cold build
(minutes) shows where the time goes; the full output of each command goes to a log file, and only
the lines that mark progress (buildah's `STEP n/m:`) are echoed.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

PREFIX = "[images]"


class CommandFailed(RuntimeError):
    """A host command exited non-zero; the message names it and ends with its output's tail."""


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Print `name` now and its duration when the block ends (also when it fails)."""
    print(f"{PREFIX} {name} ...", flush=True)
    start = time.monotonic()
    outcome = "failed"
    try:
        yield
        outcome = "done"
    finally:
        print(f"{PREFIX} {name}: {outcome} in {time.monotonic() - start:.1f}s", flush=True)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def run(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    echo: Callable[[str], bool] = lambda line: False,
    cwd: Path | None = None,
) -> str:
    """Run `argv`; return its stdout+stderr (or write it to `log`, echoing lines `echo` selects).

    Raises CommandFailed with the output's tail, so a failed build says why without a log hunt.
    """
    if log is None:
        proc = subprocess.run(list(argv), env=env, cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace")
        if proc.returncode != 0:
            raise CommandFailed(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}")
        return proc.stdout
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", buffering=1) as out:  # line-buffered: the log shows progress live
        proc2 = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc2.stdout is not None
        start = time.monotonic()
        for line in proc2.stdout:
            out.write(line)
            if echo(line):  # the time since the command started: each step's duration shows
                sys.stdout.write(f"{PREFIX}   +{time.monotonic() - start:5.0f}s {line.rstrip()[:150]}\n")
                sys.stdout.flush()
        rc = proc2.wait()
    if rc != 0:
        raise CommandFailed(f"{' '.join(argv)} exited {rc} (log: {log}):\n{_tail(log)}")
    return ""
