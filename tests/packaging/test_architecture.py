"""docs/architecture.md lists the layers and modules the code has (tools/architecture.py generates that part)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_architecture_document_matches_the_code():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "architecture.py"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
