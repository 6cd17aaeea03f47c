"""The commit protocol: a checkpoint is loadable only when every write before its marker finished."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from kiln_trainer.storage import LocalStore
from kiln_trainer.train.commit import COMMIT, CheckpointError, RunCheckpoints, sha256_file


class Killed(Exception):
    """The writer process 'died' here."""


class DyingStore(LocalStore):
    """A local store that dies at its N-th write; a dying put_file leaves a truncated object behind."""

    def __init__(self, base: Path, die_at: int) -> None:
        super().__init__(base)
        self.writes, self.die_at = 0, die_at

    def _tick(self) -> bool:
        self.writes += 1
        return self.writes == self.die_at

    def put_file(self, key: str, path: str | Path) -> None:
        if self._tick():
            data = Path(path).read_bytes()
            super().put_bytes(key, data[: len(data) // 2])  # a torn object, as a non-atomic store could leave
            raise Killed(key)
        super().put_file(key, path)

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if self._tick():
            raise Killed(key)
        super().put_bytes(key, data, if_absent=if_absent)


def _files(folder: Path, step: int, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"file{i}.pt"
        p.write_bytes(bytes([step % 256, i]) * (1000 + 37 * i))
        out.append(p)
    return out


def _save(ck: RunCheckpoints, tmp: Path, step: int, world: int = 2) -> None:
    parts = []
    for rank in range(world):
        files = _files(tmp / f"local-{step}-{rank}", step * 10 + rank)
        for f in files:
            f.rename(f.with_name(f"r{rank}-{f.name}"))
        files = sorted((tmp / f"local-{step}-{rank}").iterdir())
        parts.append(ck.upload_part(step, rank, f"a{step}", files))
    ck.commit(step, ck.wait_parts(step, world, f"a{step}", timeout=5), {"config_hash": "h"})
    ck.prune(keep_last=2)


def test_kill_writer_at_random_points_resume_never_loads_partial(tmp_path: Path) -> None:
    rng = random.Random(7)
    trials = 0
    for trial in range(40):
        root = tmp_path / f"t{trial}"
        good = RunCheckpoints(LocalStore(root), "runs/r/checkpoints")
        _save(good, root, 10)
        _save(good, root, 20)
        die_at = rng.randint(1, 12)  # 2 ranks × (3 files + 1 part) + manifest + marker + latest + prune
        dying = RunCheckpoints(DyingStore(root, die_at), "runs/r/checkpoints")
        try:
            _save(dying, root, 30)
            finished = True
        except Killed:
            finished = False
        trials += not finished
        got = good.fetch_newest_valid(lambda s, root=root: root / "restore" / str(s))
        assert got is not None
        step, manifest = got
        # Either the new checkpoint committed completely, or resume falls back to the previous one.
        committed_30 = (root / "runs/r/checkpoints/step-00000030" / COMMIT).exists()
        assert step == (30 if committed_30 else 20)
        for name, meta in manifest["files"].items():
            assert sha256_file(root / "restore" / str(step) / name) == meta["sha256"]
    assert trials >= 25  # most trials really died mid-write


def test_corrupt_newest_checkpoint_is_skipped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ck = RunCheckpoints(LocalStore(tmp_path), "runs/r/checkpoints")
    _save(ck, tmp_path, 10)
    _save(ck, tmp_path, 20)
    victim = tmp_path / "runs/r/checkpoints/step-00000020/r1-file2.pt"
    victim.write_bytes(b"bit rot" + victim.read_bytes()[7:])
    step, _ = ck.fetch_newest_valid(lambda s: tmp_path / "restore" / str(s)) or (None, None)
    assert step == 10
    assert "step-00000020" in caplog.text and "sha256" in caplog.text


def test_tampered_manifest_is_rejected(tmp_path: Path) -> None:
    ck = RunCheckpoints(LocalStore(tmp_path), "runs/r/checkpoints")
    _save(ck, tmp_path, 10)
    path = tmp_path / "runs/r/checkpoints/step-00000010/manifest.json"
    m = json.loads(path.read_text())
    m["files"].popitem()
    path.write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="COMMITTED"):
        ck.manifest(10)
    assert ck.fetch_newest_valid(lambda s: tmp_path / "x") is None


def test_prune_keeps_last_k_and_marker_is_conditional(tmp_path: Path) -> None:
    ck = RunCheckpoints(LocalStore(tmp_path), "runs/r/checkpoints")
    for step in (10, 20, 30):
        _save(ck, tmp_path, step)
    assert ck.committed_steps() == [20, 30]
    assert not (tmp_path / "runs/r/checkpoints/step-00000010").exists() or not any(
        (tmp_path / "runs/r/checkpoints/step-00000010").rglob("*.*")
    )
    assert (tmp_path / "runs/r/checkpoints/latest").read_text() == "step-00000030"
    parts = ck.wait_parts(30, 2, "a30", timeout=1)
    with pytest.raises(CheckpointError, match="already committed"):
        ck.commit(30, parts, {})


def test_stale_part_from_crashed_attempt_is_not_used(tmp_path: Path) -> None:
    ck = RunCheckpoints(LocalStore(tmp_path), "runs/r/checkpoints")
    ck.upload_part(40, 0, "old", _files(tmp_path / "a", 1))
    with pytest.raises(CheckpointError, match=r"ranks \[0\] did not finish"):
        ck.wait_parts(40, 1, "new", timeout=0.2)
