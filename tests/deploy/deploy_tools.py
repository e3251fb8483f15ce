"""Helpers shared by the deploy tests (imported by name, like tests/segment/segment_fixtures.py)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def binary(name: str) -> str | None:
    """Find ``name`` on PATH, or in the running interpreter's bin folder (an unactivated venv)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if os.access(beside, os.X_OK) else None
