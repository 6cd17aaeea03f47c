"""Content keys of a Dockerfile's layers, the way a layer cache sees them.

Each instruction's key chains the previous key, the instruction's text (build arguments
substituted) and, for COPY/ADD from the build context, the content of what it copies (paths,
modes, bytes; `.dockerignore` applied). So a change to a file invalidates the first layer that
copies it and every layer after it, and nothing before: with requirements copied and installed
before the code, a code change leaves the heavy dependency layer's key alone. The image's key is
the last key of its final stage; the build skips an image whose key is unchanged.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    """Upper-cased: FROM, RUN, COPY, ..."""
    args: str
    """The rest of the instruction, continuation lines joined."""


@dataclass(frozen=True)
class LayerKey:
    stage: str
    """Stage name (`AS x`) or its index."""
    instruction: str
    """The instruction as keyed (arguments substituted)."""
    key: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order; comments and blank lines dropped, `\\` continuations joined."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # comment lines inside a continuation are dropped
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            out.append(Instruction(keyword.upper(), rest.strip()))
    if pending.strip():
        keyword, _, rest = pending.strip().partition(" ")
        out.append(Instruction(keyword.upper(), rest.strip()))
    return out


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace $NAME and ${NAME} for known build arguments; other variables are left as written."""
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))
    return _VAR.sub(repl, text)


def read_ignore(context: Path) -> list[str]:
    """The context's .dockerignore patterns (comments and blanks dropped)."""
    path = context / ".dockerignore"
    if not path.exists():
        return []
    return [ln.strip().rstrip("/") for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether a context-relative path is excluded (`**/x` matches at any depth; no `!` rules)."""
    parts = rel.split("/")
    for pat in patterns:
        if pat.startswith("**/"):
            tail = pat[3:]
            if any(fnmatch.fnmatchcase(p, tail) for p in parts):
                return True
        elif any(fnmatch.fnmatchcase("/".join(parts[: i + 1]), pat) for i in range(len(parts))):
            return True
    return False


def hash_sources(context: Path, sources: list[str], patterns: list[str]) -> str:
    """sha256 over the relative path, mode and bytes of every file the sources name."""
    h = hashlib.sha256()
    for src in sources:
        matches = sorted(context.glob(src.lstrip("/"))) if any(c in src for c in "*?[") else [context / src]
        if not matches or not matches[0].exists():
            raise FileNotFoundError(f"COPY source {src!r} not found in the build context {context}")
        for top in matches:
            files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
            for f in files:
                rel = f.relative_to(context).as_posix()
                if ignored(rel, patterns):
                    continue
                h.update(f"{rel}\0{os.stat(f).st_mode & 0o777:o}\0".encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def _copy_parts(args: str) -> tuple[dict[str, str], list[str]]:
    """COPY/ADD flags (--from=x ...) and the source paths (the last word is the destination)."""
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, words[:-1]


def _chain(prev: str, *parts: str) -> str:
    return hashlib.sha256("\0".join((prev, *parts)).encode()).hexdigest()


def layer_keys(
    dockerfile: str, context: Path, build_args: dict[str, str], base_ids: dict[str, str]
) -> list[LayerKey]:
    """The key of every instruction, in order. `base_ids` maps a FROM image to its local image id
    (images not in it, e.g. a production base, are keyed by name)."""
    patterns = read_ignore(context)
    args: dict[str, str] = {}
    stage_keys: dict[str, str] = {}
    keys: list[LayerKey] = []
    stage, current = "", ""
    for inst in parse_dockerfile(dockerfile):
        text = substitute(inst.args, {**args, **build_args})
        if inst.keyword == "ARG":
            name, _, default = text.partition("=")
            value = build_args.get(name.strip(), default.strip())
            args[name.strip()] = value
            if stage:  # an ARG inside a stage is part of its key; global ARGs only feed FROM
                current = _chain(current, "ARG", name.strip(), value)
                keys.append(LayerKey(stage, f"ARG {name.strip()}={value}", current))
            continue
        if inst.keyword == "FROM":
            words = text.split()
            image = words[0]
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stage_keys))
            origin = stage_keys.get(image) or base_ids.get(image) or f"name:{image}"
            current = _chain("FROM", origin)
            stage_keys[stage] = current
        elif inst.keyword in ("COPY", "ADD"):
            flags, sources = _copy_parts(text)
            if "from" in flags:
                origin = stage_keys.get(flags["from"]) or base_ids.get(flags["from"]) or f"name:{flags['from']}"
            else:
                origin = hash_sources(context, sources, patterns)
            current = _chain(current, inst.keyword, text, origin)
        else:
            current = _chain(current, inst.keyword, text)
        stage_keys[stage] = current
        keys.append(LayerKey(stage, f"{inst.keyword} {text}", current))
    return keys


def image_key(keys: list[LayerKey]) -> str:
    """The key of the final stage's last layer (what the built image is)."""
    if not keys:
        raise ValueError("the Dockerfile has no instructions")
    return keys[-1].key
