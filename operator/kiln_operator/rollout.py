"""The RollingOut phase: the hook the serving work (issue 7) implements.

Contract: ``step_rolling_out(ctx)`` is called on every reconcile while ``status.phase`` is
RollingOut (only runs with ``spec.serving`` get there, see ``status.after_export``). It must be
idempotent like every other step: ensure the serving target exists, load the exported version
(``ctx.status["artifacts"]["modelVersion"]``), gate it with real inference, promote or roll back,
and return ``Transition("Succeeded", ...)``, ``Transition("Failed", "RolloutFailed", reason)`` or
None to be called again.

Until that lands, a run with ``spec.serving`` stays in RollingOut with condition RolledOut=False,
reason RolloutNotImplemented; nothing pretends to have served the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln_operator.status import Transition

if TYPE_CHECKING:
    from kiln_operator.phases import Ctx


def step_rolling_out(ctx: Ctx) -> Transition | None:
    ctx.status_patch["message"] = "RolloutNotImplemented: rollout to Triton is not in this build (issue 7)"
    return None
