"""The chart's Argo CD health check (charts/kiln/health/trainingrun.lua) run by a real Lua interpreter
(lupa) against TrainingRuns in every phase, their status written by the operator's own functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51
import pytest
from kiln_phase_objects import Case, cases

LUA = Path(__file__).resolve().parents[3] / "charts" / "kiln" / "health" / "trainingrun.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """What Argo CD does: the script's body as a function with ``obj`` a global table."""
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)  # Argo CD runs gopher-lua, a Lua 5.1
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(LUA.read_text())
    return str(hs["status"]), str(hs["message"])


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_health_of_every_phase(case: Case) -> None:
    status, message = health(case.obj)
    assert status == case.argo, message
    stalled = next((c for c in (case.obj.get("status") or {}).get("conditions") or []
                    if c["type"] == "Stalled" and c["status"] == "True"), None)
    if stalled is not None:  # a person reading Argo CD's UI sees the cause, not just "Degraded"
        assert stalled["reason"] in message and stalled["message"] in message


def test_chart_readme_points_at_the_file() -> None:
    readme = (LUA.parents[1] / "README.md").read_text()
    assert "health/trainingrun.lua" in readme
