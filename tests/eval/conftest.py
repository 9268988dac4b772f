"""Fixtures shared by the eval tests."""

from pathlib import Path

import pytest


@pytest.fixture
def eval_home(tmp_path, settings) -> Path:
    """A fresh home sharing the real cache's data, models and index (read-mostly), with its own scenarios and eval cache."""
    real = settings.resolved_home()
    home = tmp_path / "home"
    home.mkdir()
    for name in ("datasets", "models", "wheels", "chroma"):
        (home / name).symlink_to(real / name)
    return home
