"""Run `lint-imports` (the layer and no-cycle contracts in pyproject.toml) on llmrec as it is installed.

llmrec's subpackages live in top-level folders mapped by `[tool.setuptools.package-dir]`, and import-linter finds
modules by walking the root package's folder, so it would see `llmrec/` alone. This copies the sources into one
`llmrec/` tree in a temporary folder, laid out as the wheel lays them out, and runs import-linter on that copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path


def stage(root: Path, target: Path) -> None:
    """Copy every mapped package's .py files to `target/<package path>`."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in mapping.items():
        dest = target.joinpath(*package.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for source in (root / folder).glob("*.py"):
            shutil.copy2(source, dest / source.name)


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="llmrec-layers-") as tmp:
        stage(root, Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp + os.pathsep + os.environ.get("PYTHONPATH", "")}
        lint = Path(sys.executable).with_name("lint-imports")
        return subprocess.call([str(lint) if lint.exists() else "lint-imports", str(root / "pyproject.toml"),
                                "--no-cache"], env=env, cwd=tmp)


if __name__ == "__main__":
    sys.exit(main())
