"""Run ids, the output folder guard, and the files of an eval run (rankings, report.json).

A run id is a short sha256 over everything that changes results: the eval config, the split
fingerprint, the model, the adapter folder's bytes, the fusion weight, the prompt template names and
the retrieval/ranking settings. An output folder holding a report with another run id is refused
unless `force`; the same run id may overwrite its own files.

Files are written into a staging folder inside `out` and moved into place only at the end, so an
interrupted run never leaves a report that mixes two runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmrec.assets import folder_hash  # noqa: F401 - re-exported
from llmrec.errors import EmptyTestSet, RunConflict  # noqa: F401 - re-exported

RUN_ID_CHARS = 12


def run_id(payload: Mapping) -> str:
    """Short stable hash of a JSON-able payload (infinite floats become the string 'inf')."""
    def clean(value):
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    text = json.dumps(clean(payload), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_CHARS]


class OutputFolder:
    """Guards `out` against overwriting another run; stages files and moves them in at `commit`."""

    def __init__(self, out: Path, run_id: str, force: bool = False):
        self.out = Path(out)
        self.run_id = run_id
        self.force = force
        self.staging = self.out / f".staging-{run_id}"

    def existing_run_id(self) -> str | None:
        report = self.out / "report.json"
        if not report.is_file():
            return None
        try:
            return str(json.loads(report.read_text()).get("run_id"))
        except (OSError, ValueError):
            return "<unreadable report.json>"

    def check(self) -> None:
        """Raise RunConflict when `out` holds another run's report and `force` is off."""
        other = self.existing_run_id()
        if other is not None and other != self.run_id and not self.force:
            raise RunConflict(
                f"{self.out} holds the report of run {other}, but this run is {self.run_id} (different config, split, "
                f"model, adapter, fusion weight or prompts); choose another --out, or pass --force to replace it"
            )

    def begin(self) -> Path:
        self.check()
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self.staging

    def abandon(self) -> None:
        """Drop the staged files of a failed run; `out` keeps whatever it held before."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

    def commit(self) -> list[Path]:
        """Check again (another run may have finished meanwhile), drop the old run's files, move ours in."""
        self.check()
        other = self.existing_run_id()
        if other is not None and other != self.run_id:  # forced: remove the replaced run's outputs
            for old in list(self.out.glob("rankings-*.jsonl")) + list(self.out.glob("*.png")) + [self.out / "report.md"]:
                old.unlink(missing_ok=True)
        moved = []
        names = sorted(p.name for p in self.staging.iterdir())
        names.sort(key=lambda n: n == "report.json")  # the report last: it marks the run as complete
        for name in names:
            target = self.out / name
            (self.staging / name).replace(target)
            moved.append(target)
        self.staging.rmdir()
        return moved


def write_rankings(folder: Path, method: str, rankings: Mapping[str, Sequence[str]], targets: Mapping[str, str],
                   users: Sequence[str]) -> Path:
    """`rankings-<method>.jsonl`: one {"user_id", "target", "ranked"} object per line, in `users` order."""
    path = folder / f"rankings-{method}.jsonl"
    with path.open("w") as handle:
        for user in users:
            handle.write(json.dumps({"user_id": user, "target": targets[user], "ranked": list(rankings[user])}) + "\n")
    return path


def read_rankings(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def to_plain(payload: Mapping) -> dict:
    """JSON types only: pydantic models dumped, paths as strings, non-finite floats as strings ('inf')."""
    def default(value):
        if hasattr(value, "model_dump"):
            return value.model_dump(mode="json")
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, Mapping):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value

    return finite(json.loads(json.dumps(payload, default=default)))


def write_json(path: Path, payload: Mapping) -> Path:
    path.write_text(json.dumps(to_plain(payload), indent=2) + "\n")
    return path
