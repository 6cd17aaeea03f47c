"""The `kiln data` tests read a dataset the real prepare step made: its builder lives with the data tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
