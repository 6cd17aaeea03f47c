"""A checkpoint writer the R7 test SIGKILLs: it commits step after step with kiln's commit protocol
(parts → manifest → COMMITTED → latest, then prune) until killed.

    python ckptwriter.py STORE_URI PREFIX

Each step's files have contents derived from the step alone (`expected_files`), so a reader can
tell a checkpoint assembled from different steps or attempts (a partial load) from a clean one.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import uuid
from pathlib import Path

# Sizes of one "checkpoint": one file above the store's multipart threshold (16 MiB would make
# every save slow; the S3 store's threshold applies per file, so 17 MiB forces one multipart upload).
FILES = {"mp_rank_00_model_states.pt": 300_000, "zero_pp_rank_0_mp_rank_00_optim_states.pt": 600_000,
         "kiln_rank_00000.pt": 2_000, "model_config.json": 200}
KEEP_LAST = 2


def expected_files(step: int) -> dict[str, bytes]:
    """The bytes of every file of `step` (a keyed stream, cheap to regenerate for checking)."""
    out = {}
    for name, size in FILES.items():
        seed = hashlib.sha256(f"{step}:{name}".encode()).digest()
        out[name] = (seed * (size // len(seed) + 1))[:size]
    return out


def main(uri: str, prefix: str) -> None:
    from kiln_trainer.storage import open_store
    from kiln_trainer.train.commit import RunCheckpoints

    ckpts = RunCheckpoints(open_store(uri), prefix)
    committed = ckpts.committed_steps()
    step = (committed[-1] if committed else 0) + 1
    print("ready", flush=True)  # the parent starts its kill timer now (imports are done)
    with tempfile.TemporaryDirectory() as tmp:
        while True:
            folder = Path(tmp) / f"step-{step}"
            folder.mkdir()
            for name, data in expected_files(step).items():
                (folder / name).write_bytes(data)
            attempt = uuid.uuid4().hex
            ckpts.upload_part(step, 0, attempt, sorted(folder.iterdir()))
            parts = ckpts.wait_parts(step, 1, attempt, timeout=30)
            ckpts.commit(step, parts, {"config_hash": "r7"})
            ckpts.prune(KEEP_LAST)
            step += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
