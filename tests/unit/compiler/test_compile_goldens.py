"""What the compiler emits for every preset on CPU, one GPU and 2 nodes × 8 GPUs, pinned by golden files.

Each golden holds the compiled train.yaml, the DeepSpeed config the trainer derives from it for the
run's world size and the compiler's notes, or the compiler's error where the preset cannot run on that hardware.
"""

from __future__ import annotations

from typing import Any

import pytest
from compilekit import HARDWARE, check_golden, compile_dict, spec_dict
from kiln_api import contract
from kiln_api.specfields import SpecError
from kiln_api.train_presets import PRESETS
from kiln_trainer.train.ds_config import deepspeed_config


def _outcome(preset: str, hardware: str) -> dict[str, Any]:
    try:
        run = compile_dict(spec_dict(preset, hardware))
    except SpecError as e:
        return {"error": str(e)}
    train = run.raw["train.yaml"]
    # The dataset's content hash belongs to the data pipeline (and its version); pinned in its own tests.
    train["data"]["path"] = train["data"]["path"].rsplit("/", 1)[0] + "/<data-hash>"
    return {"world_size": run.world_size, "train": train, "deepspeed": deepspeed_config(run.train, run.world_size),
            "notes": list(run.notes)}


@pytest.mark.parametrize("hardware", sorted(HARDWARE))
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_compiled_configs_match_golden(preset: str, hardware: str) -> None:
    out = _outcome(preset, hardware)
    check_golden(f"{preset}_{hardware}", out)
    if "train" in out:
        # Pods have a read-only root: every local path the trainer writes is below the work emptyDir.
        assert out["train"]["checkpoint"]["local_dir"].startswith(contract.WORK_DIR + "/")


def test_tiny_preset_cannot_split_its_batch_over_16_ranks() -> None:
    # The CRD cannot see the preset's batch (8 sequences, micro-batch 4), so the compiler checks it with
    # the same declared rule and names the spec field a user would set.
    with pytest.raises(SpecError, match=r"^spec.training.globalBatchSize: globalBatchSize=8 is not a multiple "
                                        r"of microBatchSize=4 × worldSize=16"):
        compile_dict(spec_dict("tiny_cpu", "2x8gpu"))
    compile_dict(spec_dict("tiny_cpu", "2x8gpu", microBatchSize=1, globalBatchSize=16))
