"""The measured calibration `kiln estimate` times CPU runs with (kiln_api.estimate_calibration).

Measured once per machine by the trainer's own code (`python -m kiln_trainer.calibrate`, run as a
subprocess: the operator side never imports the trainer) and cached under ~/.cache/kiln/calibration.
Where the trainer is not installed the estimate falls back to the fixed peak × MFU and says so.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from kiln_api.estimate_calibration import Calibration, cpu_device_class, load_cached


def cpu_calibration(remeasure: bool) -> tuple[Calibration | None, str]:
    """(calibration, note for the user): the cached one, or a fresh measurement when there is none
    or `remeasure` asks for it."""
    device = cpu_device_class()
    cached = None if remeasure else load_cached(device)
    if cached is not None:
        return cached, f"step time calibrated on {device} at {cached.measured_at} (cached; --calibrate re-measures)"
    if importlib.util.find_spec("kiln_trainer") is None:
        return None, "step time from the fixed peak x MFU: kiln_trainer is not installed here, so this CPU cannot be measured"
    print(f"measuring {device} once for the estimate (python -m kiln_trainer.calibrate, about a minute)...",
          file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "kiln_trainer.calibrate"], check=False)
    cal = load_cached(device) if done.returncode == 0 else None
    if cal is None:
        return None, f"step time from the fixed peak x MFU: calibration failed (exit {done.returncode})"
    return cal, f"step time calibrated on {device} at {cal.measured_at} (just measured)"
