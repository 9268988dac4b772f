"""The merge table: single and merged adapters, each evaluated by `llmrec eval` on each domain, in one table.

Serving adapters side by side routes each request to its own domain's adapter, so on each dataset the side-by-side
row is that domain's own adapter; every other row (the other domain's adapter, a merge) is paired-tested against it
on the same users, fused and alone, from the runs' exported rankings. Runs on one dataset must share the split, the
test users and the hybrid's candidates (its top 20, in one order): only the ranker differs.

    python -m llmrec.adapters.merge_report SPEC.json OUT   # writes OUT/report.md and OUT/report.json

SPEC: {"rows": {label: {dataset: eval folder}}, "side_by_side": {dataset: label}, "commands": [...], "notes": [...]}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import LLMRecError
from llmrec.eval import stats
from llmrec.eval.report import read_rankings

FUSED, ALONE, HYBRID = "llmrec-embedding", "embedding-only", "hybrid"


class MergeTableSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: dict[str, dict[str, Path]] = Field(description="adapter label -> dataset -> `llmrec eval` output folder")
    side_by_side: dict[str, str] = Field(description="dataset -> the label of its own domain's adapter (the reference)")
    commands: list[str] = Field(default_factory=list, description="How each run was made, printed in the report.")
    notes: list[str] = Field(default_factory=list)


class _Run:
    """One eval folder: its report and the per-user rankings of the hybrid, the fused and the alone rows."""

    def __init__(self, folder: Path):
        self.folder = folder
        try:
            self.report = json.loads((folder / "report.json").read_text())
        except (OSError, ValueError) as exc:
            raise LLMRecError(f"{folder}: no readable report.json ({exc})") from None
        self.rankings, self.targets = {}, {}
        for name in (HYBRID, FUSED, ALONE):
            path = folder / f"rankings-{name}.jsonl"
            if path.is_file():
                rows = read_rankings(path)
                self.rankings[name] = {r["user_id"]: r["ranked"] for r in rows}
                self.targets = {r["user_id"]: r["target"] for r in rows}
                self.users = [r["user_id"] for r in rows]
        if FUSED not in self.rankings:
            raise LLMRecError(f"{folder}: no {FUSED} rankings: not an eval of a scenario with an embedding adapter")
        if ALONE not in self.rankings:  # written only when the fused weight is not 0 already
            self.rankings[ALONE] = self.rankings[FUSED]
        self.split = self.report["identity"]["split"]["fingerprint"]

    def estimate(self, name: str) -> dict:
        method = name if name in self.report["methods"] else FUSED
        return self.report["methods"][method]["full"]["NDCG@10"]

    def fusion(self) -> dict:
        fit = self.report.get("fusion_fit") or {}
        return {"weight": self.report.get("fusion_weight"), "best_weight": fit.get("best_weight"), "gate_p": fit.get("p_value"),
                "gate_users": fit.get("gate_users")}


def _comparable(runs: dict[str, _Run], dataset: str) -> None:
    first_label, first = next(iter(runs.items()))
    for label, run in runs.items():
        if run.split != first.split or run.users != first.users or run.targets != first.targets:
            raise LLMRecError(f"{dataset}: runs {first_label!r} and {label!r} differ in split, test users or targets")
        n = first.report.get("candidates", 20)  # the hybrid's tail below them may break score ties in another order
        if any(run.rankings[HYBRID][u][:n] != first.rankings[HYBRID][u][:n] for u in first.users):
            raise LLMRecError(f"{dataset}: runs {first_label!r} and {label!r} rerank different hybrid candidates")


def _test(a: _Run, b: _Run, name: str, names: tuple[str, str]) -> dict:
    test = stats.paired_test(a.rankings[name], b.rankings[name], a.targets, a.users, names)
    return {"delta": round(test.mean_a - test.mean_b, 5), **test.model_dump(include={"p_value", "wins", "ties", "losses", "users"})}


def build(spec: MergeTableSpec) -> dict:
    """The table as plain data: per dataset the hybrid and the reference, per row and dataset the cell."""
    datasets = list(spec.side_by_side)
    runs = {label: {d: _Run(Path(f)) for d, f in cells.items()} for label, cells in spec.rows.items()}
    out = {"datasets": {}, "rows": [], "commands": spec.commands, "notes": spec.notes}
    for dataset in datasets:
        here = {label: cells[dataset] for label, cells in runs.items() if dataset in cells}
        own = spec.side_by_side[dataset]
        if own not in here:
            raise LLMRecError(f"{dataset}: the side-by-side row {own!r} has no run on it")
        _comparable(here, dataset)
        ref = here[own]
        out["datasets"][dataset] = {"users": len(ref.users), "side_by_side": own, "split": ref.split,
                                    "hybrid": ref.report["methods"][HYBRID]["full"]["NDCG@10"]}
    for label, cells in runs.items():
        row = {"adapter": label, "cells": {}}
        for dataset, run in cells.items():
            own = spec.side_by_side[dataset]
            ref = runs[own][dataset]
            cell = {"folder": str(run.folder), "run_id": run.report.get("run_id"), "adapter": run.report["identity"].get("adapter"),
                    "fusion": run.fusion(), "fused": run.estimate(FUSED), "alone": run.estimate(ALONE),
                    "fused_vs_hybrid": stats.paired_test(run.rankings[FUSED], run.rankings[HYBRID], run.targets, run.users,
                                                         (label, HYBRID)).model_dump(include={"p_value", "wins", "ties", "losses"})}
            if label != own:
                cell["fused_vs_side_by_side"] = _test(run, ref, FUSED, (label, own))
                cell["alone_vs_side_by_side"] = _test(run, ref, ALONE, (label, own))
            row["cells"][dataset] = cell
        out["rows"].append(row)
    return out


def _est(e: dict) -> str:
    return f"{e['mean']:.4f} [{e['low']:.4f}, {e['high']:.4f}]"


def _vs(test: dict | None) -> str:
    if test is None:
        return "(side by side)"
    p = test["p_value"]
    return f"{test['delta']:+.4f}, p = {'n/a' if p is None else f'{p:.2g}'}"


def markdown(table: dict) -> str:
    datasets = list(table["datasets"])
    lines = ["# Merging adapters vs serving them side by side", ""]
    for dataset, info in table["datasets"].items():
        lines.append(f"- **{dataset}**: {info['users']} test users (all), split `{info['split'][:12]}`; hybrid retriever NDCG@10 "
                     f"{_est(info['hybrid'])}; side-by-side serving = the `{info['side_by_side']}` adapter on it.")
    lines += ["", "NDCG@10 [95% bootstrap CI]; under each, the difference from side-by-side serving on the same users and its "
              "paired p (Student's t over per-user NDCG@10). *Fused*: the adapter's score fused with the retriever rank at the "
              "scenario's gated weight (w = inf: the gate kept the retriever's order, so fused = hybrid); *alone*: the adapter "
              "reranks the 20 candidates by itself (w = 0).", ""]
    head = "| adapter | " + " | ".join(f"{d} fused | {d} alone" for d in datasets) + " |"
    lines += [head, "|---" * (1 + 2 * len(datasets)) + "|"]
    for row in table["rows"]:
        parts = []
        for d in datasets:
            cell = row["cells"].get(d)
            if cell is None:
                parts += ["–", "–"]
                continue
            parts.append(f"{_est(cell['fused'])}<br>{_vs(cell.get('fused_vs_side_by_side'))}")
            parts.append(f"{_est(cell['alone'])}<br>{_vs(cell.get('alone_vs_side_by_side'))}")
        lines.append(f"| {row['adapter']} | " + " | ".join(parts) + " |")
    lines += ["", "## Fusion weights and the fused row against the hybrid", "",
              "| adapter | dataset | w served | best w on selection users | gate p (one-sided, gate users) | fused vs hybrid | wins / ties / losses |",
              "|---|---|---|---|---|---|---|"]
    for row in table["rows"]:
        for d, cell in row["cells"].items():
            f, t = cell["fusion"], cell["fused_vs_hybrid"]
            p = "n/a" if t["p_value"] is None else f"{t['p_value']:.2g}"
            gate = "–" if f["gate_p"] is None else f"{f['gate_p']:.3g} ({f['gate_users']})"
            served = "inf (retriever order)" if f["weight"] in (None, "inf") else f"{f['weight']:g}"
            best = "–" if f["best_weight"] is None else f"{f['best_weight']:g}"
            lines.append(f"| {row['adapter']} | {d} | {served} | {best} | {gate} | "
                         f"{cell['fused']['mean'] - table['datasets'][d]['hybrid']['mean']:+.4f}, p = {p} | "
                         f"{t['wins']} / {t['ties']} / {t['losses']} |")
    if table["notes"]:
        lines += ["", "## Notes", "", *(f"- {n}" for n in table["notes"])]
    if table["commands"]:
        lines += ["", "## Commands", "", "```", *table["commands"], "```"]
    return "\n".join(lines) + "\n"


def write(spec: MergeTableSpec, out: Path) -> dict:
    table = build(spec)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "report.md").write_text(markdown(table))
    return table


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m llmrec.adapters.merge_report SPEC.json OUT", file=sys.stderr)
        return 2
    try:
        write(MergeTableSpec.model_validate_json(Path(argv[0]).read_text()), Path(argv[1]))
    except (OSError, ValueError, LLMRecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    print(f"{argv[1]}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
