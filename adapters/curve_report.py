"""The few-shot curve's report: per-point estimates with CIs, paired tests, the item cold-start slice, and the
table (`curve.md`), the document (`curve.json`) and the plot (`curve.png`) written from them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from llmrec.eval.stats import bootstrap_ci

ARMS = ("scratch", "transfer", "meta", "random", "minilm")
CONTROLS = ("random", "minilm")
COMPARED = ("scratch", "transfer", *CONTROLS)
"""Every arm is paired-tested against each of these at the same shot count (where both ran)."""


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Student's paired t-test of per-user NDCG@10, a against b, and the users each wins and loses."""
    from scipy.stats import ttest_rel

    diff = a - b
    p = float(ttest_rel(a, b).pvalue) if np.any(diff) else 1.0
    return {"mean_diff": round(float(diff.mean()), 5), "p": None if math.isnan(p) else p,
            "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum())}


def estimate(values: np.ndarray, resamples: int) -> dict:
    if not len(values):
        return {"mean": None, "ci95": [None, None]}
    est = bootstrap_ci(values, resamples, 0)
    return {"mean": round(est.mean, 5), "ci95": [round(est.low, 5), round(est.high, 5)]}


def _slice(point, other, mask, resamples: int, hybrid: np.ndarray) -> dict:
    """One point on the users of `mask`: both orders with CIs, fused against the hybrid, and each arm of `other`."""
    out = {"fused": estimate(point.fused[mask], resamples), "alone": estimate(point.alone[mask], resamples),
           "vs_hybrid_fused": paired(point.fused[mask], hybrid[mask]), "vs_hybrid_alone": paired(point.alone[mask], hybrid[mask])}
    for name, against in other.items():
        out[f"vs_{name}"] = {"fused": paired(point.fused[mask], against.fused[mask]), "alone": paired(point.alone[mask], against.alone[mask])}
    return out


def build_report(config, points: dict, hybrid: np.ndarray, cold: np.ndarray, targets_in: np.ndarray, pool: int, seconds: float) -> dict:
    """`points`: (arm, shots) → a point with per-test-user `fused` and `alone` NDCG@10 (averaged over seeds) and its `runs`;
    `cold`: the mask of test users whose target is an item cold-start one; `targets_in`: whose target is a candidate."""
    everyone = np.ones(len(hybrid), dtype=bool)
    rows = []
    for (arm, shots), point in points.items():
        other = {name: points[(name, shots)] for name in COMPARED if name != arm and (name, shots) in points}
        examples = [r["examples"] for r in point.runs if "examples" in r]
        rows.append({"arm": arm, "shots": shots if shots is not None else pool, "shots_label": "all" if shots is None else str(shots),
                     "examples": round(float(np.mean(examples))) if examples else 0,
                     **_slice(point, other, everyone, config.resamples, hybrid),
                     "cold": _slice(point, other, cold, config.resamples, hybrid) if cold.any() else None, "runs": point.runs})
    return {"config": config.model_dump(mode="json"), "test_users": len(hybrid), "training_users": pool,
            "hybrid": estimate(hybrid, config.resamples), "test_targets_in_candidates": int(targets_in.sum()),
            "cold_slice": {"max_training_interactions": config.cold_items_max, "test_users": int(cold.sum()),
                           "test_targets_in_candidates": int((cold & targets_in).sum()), "hybrid": estimate(hybrid[cold], config.resamples)},
            "minutes": round(seconds / 60, 1), "points": rows}


def write(out: Path, report: dict) -> None:
    from llmrec.assets import atomic_write_text

    atomic_write_text(out / "curve.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "curve.md", markdown(report))
    try:
        plot(report, out / "curve.png")
    except ImportError:  # matplotlib is in the [eval] extra
        pass


def _ordered(report: dict) -> list[dict]:
    return sorted(report["points"], key=lambda r: (r["shots"], ARMS.index(r["arm"])))


def _fmt(e: dict) -> str:
    return "–" if e["mean"] is None else f"{e['mean']:.4f} [{e['ci95'][0]:.4f}, {e['ci95'][1]:.4f}]"


def _p(test: dict | None) -> str:
    return "–" if not test or test["p"] is None else f"{test['mean_diff']:+.4f} ({test['p']:.2g})"


def _table(rows: list[tuple[dict, dict]]) -> list[str]:
    lines = ["| arm | shots | examples | alone NDCG@10 [95% CI] | fused [95% CI] | fused vs hybrid (p) | alone vs hybrid (p) | "
             "alone vs scratch (p) | alone vs transfer (p) | alone vs random (p) | alone vs minilm (p) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row, part in rows:
        vs = [_p((part.get(f"vs_{name}") or {}).get("alone")) for name in COMPARED]
        lines.append(f"| {row['arm']} | {row['shots_label']} | {row['examples']} | {_fmt(part['alone'])} | {_fmt(part['fused'])} | "
                     f"{_p(part['vs_hybrid_fused'])} | {_p(part['vs_hybrid_alone'])} | {' | '.join(vs)} |")
    return lines


def markdown(report: dict) -> str:
    c, cold = report["config"], report["cold_slice"]
    source = [f"transfer from {c['init_from']}"] if c.get("init_from") else []
    source += [f"meta-learned start {c['meta_from']}"] if c.get("meta_from") else []
    lines = [f"# Few-shot curve: {c['scenario']}" + (f" ({', '.join(source)})" if source else ""), "",
             f"{report['test_users']} test users; hybrid retriever NDCG@10 {_fmt(report['hybrid'])}; the test target is among its "
             f"{c['candidates']} candidates for {report['test_targets_in_candidates']} users. A shot is one training user (their "
             f"training prefix's next-item examples, one per position after the first, and their validation target); "
             f"{report['training_users']} are available; `examples` is the next-item examples the shots make (mean over seeds). "
             f"{c['seeds']} seed(s) per point" + (f" ({c['seeds_all']} at all)" if c.get("seeds_all") else "") +
             f"; {report['minutes']} min. p: paired t-test over the test users.", "",
             *_table([(row, row) for row in _ordered(report)]), "",
             f"## Item cold-start slice: test targets with at most {cold['max_training_interactions']} training interactions", "",
             f"{cold['test_users']} of the {report['test_users']} test users; the target is among the hybrid's candidates for "
             f"{cold['test_targets_in_candidates']} of them; hybrid NDCG@10 on the slice {_fmt(cold['hybrid'])}.", ""]
    if cold["test_users"]:
        lines += _table([(row, row["cold"]) for row in _ordered(report)])
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Two panels, towers alone: NDCG@10 against shots for each arm with its 95% CI band, on every test user and on
    the item cold-start slice; the hybrid retriever as a dashed line. Shots sit at even steps (0 … all)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["all" if s is None else str(s) for s in report["config"]["shots"]]
    panels = [("every test user", lambda r: r, report["hybrid"])]
    if report["cold_slice"]["test_users"]:
        panels.append((f"item cold-start slice ({report['cold_slice']['test_users']} users)", lambda r: r["cold"], report["cold_slice"]["hybrid"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (title, part, hybrid) in zip(axes[0], panels):
        for arm in ARMS:
            rows = [r for r in report["points"] if r["arm"] == arm]
            rows.sort(key=lambda r: labels.index(r["shots_label"]))
            if not rows:
                continue
            x = [labels.index(r["shots_label"]) for r in rows]
            mean = [part(r)["alone"]["mean"] for r in rows]
            (line,) = ax.plot(x, mean, marker="o", label=arm)
            ax.fill_between(x, [part(r)["alone"]["ci95"][0] for r in rows], [part(r)["alone"]["ci95"][1] for r in rows],
                            color=line.get_color(), alpha=0.15)
        ax.axhline(hybrid["mean"], color="grey", linestyle="--", label="hybrid retriever")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("training users (shots)")
        ax.set_ylabel("test NDCG@10, towers alone")
        ax.set_title(title)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{report['config']['scenario']}: few-shot curve, 95% CIs over test users")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
