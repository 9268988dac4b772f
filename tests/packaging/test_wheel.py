"""The built wheel holds every module and data file of every package.

`pyproject.toml` maps each top-level folder to `llmrec.<folder>`; a folder missing from `packages` or `package-dir`
would be left out of the wheel without a word, and only an installed (non-editable) llmrec would notice.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _expected() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    files = set()
    for package, folder in config["package-dir"].items():
        prefix = package.replace(".", "/")
        files |= {f"{prefix}/{p.name}" for p in (ROOT / folder).glob("*.py")}
        for pattern in config.get("package-data", {}).get(package, []):
            files |= {f"{prefix}/{p.relative_to(ROOT / folder).as_posix()}" for p in (ROOT / folder).glob(pattern)}
    return files


def test_every_folder_with_python_modules_is_a_mapped_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = set(config["package-dir"].values())
    assert set(config["packages"]) == set(config["package-dir"])
    skip = {"tests", "bench", "tools", "docs", "build", "dist"}
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in skip and not p.parent.name.startswith(".")}
    assert folders <= mapped, f"folders with an __init__.py that no package maps: {sorted(folders - mapped)}"


def test_the_wheel_contains_every_module_and_data_file(tmp_path):
    source = tmp_path / "src"  # a clean copy: setuptools reuses a stale build/ folder in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv*", ".llmrec", ".git", "build", "dist", "reports", "*.egg-info",
                                                                "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("llmrec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _expected()
    assert len(expected) > 80
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)[:10]}"
    assert {"llmrec/scenarios/movies.json", "llmrec/prompts/templates/rank_v1.j2", "llmrec/pipeline/recommend.py"} <= names
