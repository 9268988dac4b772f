"""Few-shot and transfer curves of the `embedding` objective: `llmrec adapters curve`.

For a target scenario (say `books`), towers are trained on the first S users of a seeded permutation of its
training users (a *shot* is one user: their training prefix gives next-item examples, one per position after the
first, and their validation target joins the selection and gate halves), for each S in `shots`, and tested on
every test user of the scenario. The arms:

- `scratch`: towers from a random start over the LLM's item-text vectors;
- `transfer`: towers that start from another scenario's `embedding` adapter (`--init-from`), over the same LLM
  vectors (at 0 shots the source adapter is applied as it is: zero-shot transfer);
- `random`: the control with no text: towers over seeded Gaussian item vectors of the same width;
- `minilm`: the control with text but not the LLM: towers over the MiniLM sentence vectors llmrec indexes in Chroma.

The retriever (the hybrid) is fitted on every user's training prefix: the domain's interaction log is there at
inference; what the shots limit is the labelled data the ranker learns from. The fusion weight is chosen on the shot
users' validation targets and gated on the other half of them (`adapters.fit.fit_weight_halves`), so with few shots it
usually keeps the retriever's order; `alone` (the towers' own order over the candidates) shows what they learned.
Every point is reported with a bootstrap CI over test users (per-user NDCG@10 averaged over seeds), and each arm is
paired-tested against scratch and both controls on the same users.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from llmrec.adapters.embedding import EMBEDDING_GRID, EmbeddingTrainConfig, standardisation, train_towers
from llmrec.adapters.fit import fit_weight_halves, validation_runs
from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.engines.encoder import ItemEncoderConfig, ItemVectors, item_vectors
from llmrec.engines.models import pick_dtype, resolve_model
from llmrec.errors import AdapterMismatch, LLMRecError, RunConflict
from llmrec.eval.metrics import ndcg_at
from llmrec.eval.stats import bootstrap_ci
from llmrec.manifest import objective_of, read_manifest
from llmrec.objectives import EMBEDDING
from llmrec.ranking.embedding import EmbeddingRanker, TwoTower, load_two_tower
from llmrec.scenario import load_scenario
from llmrec.settings import Settings

ARMS = ("scratch", "transfer", "random", "minilm")
CONTROLS = ("random", "minilm")


class CurveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str
    init_from: str | None = Field(default=None, description="Scenario whose `embedding` adapter starts the transfer arm.")
    shots: tuple[int | None, ...] = Field(default=(0, 16, 64, 256, 1024, None), description="Training users per point; None: all.")
    seeds: int = Field(default=3, ge=1, description="Towers trained per point (one seed each), per-user NDCG averaged over them.")
    arms: tuple[str, ...] = ARMS
    epochs: int = Field(default=8, ge=1)
    candidates: int = Field(default=20, ge=2)
    seed: int = 0
    resamples: int = Field(default=1000, ge=100)


def shot_users(split: LeaveOneOutSplit, seed: int) -> list[str]:
    """Training users with at least one next-item example and a validation target, in a seeded order."""
    users = [u for u in split.valid_users() if len(split.train[u]) >= 2]
    random.Random(seed).shuffle(users)
    return users


def random_vectors(like: ItemVectors, seed: int) -> ItemVectors:
    """The no-text control: seeded Gaussian vectors of the same shape, one per item."""
    return ItemVectors(like.ids, np.random.default_rng(seed).standard_normal(like.matrix.shape).astype(np.float32))


def minilm_vectors(settings: Settings, items, ids: Sequence[str]) -> ItemVectors:
    """The text-but-not-the-LLM control: the MiniLM sentence vectors of each item's Chroma document."""
    from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
    from llmrec.retrieval.index import item_document

    embedder = SentenceEmbedder(ensure_minilm(settings.resolved_home()))
    return ItemVectors(tuple(ids), np.asarray(embedder.encode([item_document(items[i]) for i in ids]), dtype=np.float32))


def restandardised(tower: TwoTower, vectors: ItemVectors) -> TwoTower:
    """Another domain's towers over this catalog: their maps, this catalog's own standardisation (zero-shot transfer)."""
    center, scale = standardisation(vectors.matrix)
    return TwoTower({**tower.tensors, "center": center, "scale": scale}, tower.config)


def _source_tower(settings: Settings, name: str, base_model: str) -> tuple[TwoTower, ItemEncoderConfig]:
    scenario = load_scenario(name, settings.resolved_home())
    if scenario.adapter is None or objective_of(scenario.adapter) != EMBEDDING:
        raise AdapterMismatch(f"--init-from {name}: the scenario has no `embedding` adapter to start from; train one with "
                              f"`llmrec adapters train --scenario {name} --objective embedding`")
    tower, manifest = load_two_tower(scenario.adapter, base_model)  # exit 6 for another base model
    return tower, ItemEncoderConfig.model_validate(read_manifest(scenario.adapter.path)["config"]["encoder"])


class _Memo:
    """The retriever's answers, kept: every arm and seed asks for the same users' validation candidates."""

    def __init__(self, retriever):
        self.retriever, self.name, self.seen = retriever, retriever.name, {}

    def retrieve(self, history, k):
        key = (history.user_id, history.item_ids, k)
        if key not in self.seen:
            self.seen[key] = self.retriever.retrieve(history, k)
        return self.seen[key]


class _Point:
    """One (arm, shots) point: per-user NDCG@10 on the test users, fused and alone, averaged over seeds."""

    def __init__(self, users: Sequence[str]):
        self.users = list(users)
        self.fused = np.zeros(len(users))
        self.alone = np.zeros(len(users))
        self.runs: list[dict] = []

    def add(self, fused: np.ndarray, alone: np.ndarray, run: dict) -> None:
        self.fused += fused
        self.alone += alone
        self.runs.append(run)

    def finish(self) -> None:
        self.fused /= max(len(self.runs), 1)
        self.alone /= max(len(self.runs), 1)


def _test_ndcg(ranker: EmbeddingRanker, weight: float, heads: dict, catalog, split: LeaveOneOutSplit, users: Sequence[str]):
    """Per-user NDCG@10 of the fused order and of the towers alone over each test user's candidates."""
    from llmrec.eval.methods import fused_order

    fused, alone = np.zeros(len(users)), np.zeros(len(users))
    batch = 256
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        requests = [([catalog[i] for i in split.test_history(u).item_ids], heads[u]) for u in chunk]
        for n, (u, (_, cands), scores) in enumerate(zip(chunk, requests, ranker.score_many(requests))):
            fused[start + n] = ndcg_at(fused_order(cands, scores, weight), split.test[u], 10)
            alone[start + n] = ndcg_at(fused_order(cands, scores, 0.0), split.test[u], 10)
    return fused, alone


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    from scipy.stats import ttest_rel

    diff = a - b
    p = float(ttest_rel(a, b).pvalue) if np.any(diff) else 1.0
    return {"mean_diff": round(float(diff.mean()), 5), "p": None if math.isnan(p) else p,
            "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum())}


def _estimate(values: np.ndarray, resamples: int) -> dict:
    est = bootstrap_ci(values, resamples, 0)
    return {"mean": round(est.mean, 5), "ci95": [round(est.low, 5), round(est.high, 5)]}


def run_curve(settings: Settings, config: CurveConfig, out: Path, force: bool = False, progress: bool = True) -> dict:
    """Train and test every (arm, shots, seed); write curve.json, curve.md and curve.png into `out`."""
    from llmrec.pipeline import build_index
    from llmrec.retrieval.retrievers import HybridRetriever

    started = time.perf_counter()
    unknown = set(config.arms) - set(ARMS)
    if unknown:
        raise LLMRecError(f"unknown arm(s) {sorted(unknown)}: choose from {', '.join(ARMS)}")
    if "transfer" in config.arms and config.init_from is None:
        raise LLMRecError("the transfer arm needs --init-from <scenario with an embedding adapter>")
    home = settings.resolved_home()
    scenario = load_scenario(config.scenario, home)
    dataset = load_dataset(scenario.dataset, home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    pool = shot_users(split, config.seed)
    too_many = [s for s in config.shots if s is not None and s > len(pool)]
    if too_many:
        raise LLMRecError(f"--shots {too_many[0]} is more than the {len(pool)} training users of {config.scenario}")
    base = resolve_model(settings.model, home)
    source, encoder = (None, ItemEncoderConfig(dtype=pick_dtype(settings.dtype)))
    if config.init_from is not None:
        source, encoder = _source_tower(settings, config.init_from, base)
    _claim_folder(out, config, force)  # after the checks: a refused request leaves no folder behind
    items = list(dataset.items.values())
    llm = item_vectors(base, items, home, encoder, progress)
    vectors = {"scratch": llm, "transfer": llm}
    if "random" in config.arms:
        vectors["random"] = random_vectors(llm, config.seed)
    if "minilm" in config.arms:
        vectors["minilm"] = minilm_vectors(settings, dataset.items, llm.ids)
    retriever = _Memo(HybridRetriever(index=build_index(settings, dataset, progress=progress)).fit(split.train_histories()))
    test_users = split.test_users()
    heads = {u: retriever.retrieve(split.test_history(u), config.candidates)
             for u in tqdm(test_users, desc="test candidates", unit="user", disable=not progress)}
    targets_in = sum(split.test[u] in {c.item_id for c in heads[u]} for u in test_users)
    hybrid = np.array([ndcg_at([c.item_id for c in heads[u]], split.test[u], 10) for u in test_users])
    points: dict[tuple[str, int | None], _Point] = {}
    for shots in config.shots:
        for arm in config.arms:
            if shots == 0 and arm != "transfer":
                continue  # nothing to learn from: the retriever's order, reported once
            point = points.setdefault((arm, shots), _Point(test_users))
            for seed in range(config.seed, config.seed + (1 if shots == 0 else config.seeds)):
                point.add(*_one(settings, config, split, dataset.items, vectors[arm], retriever, heads, test_users, pool, arm, shots,
                                seed, source, progress))
            point.finish()
    report = _report(config, split, points, hybrid, targets_in, len(pool), time.perf_counter() - started)
    report["dataset_notes"] = list(dataset.report.notes)  # e.g. book-crossing's random (not temporal) split
    _write(out, report)
    return report


def _one(settings, config, split, catalog, vectors, retriever, heads, test_users, pool, arm, shots, seed, source, progress):
    users = pool if shots is None else pool[:shots]
    train = EmbeddingTrainConfig(epochs=config.epochs, seeds=1, seed=seed, candidates=config.candidates)
    clock = time.perf_counter()
    if shots == 0:
        tower, trained = restandardised(source, vectors), {"zero_shot": True}
    else:
        result = train_towers(vectors, split, train, progress=False, users=users, init=source if arm == "transfer" else None)
        tower, trained = result.tower, {"examples": result.manifest["examples"], "best_epoch": result.manifest["seeds"][0]["best_epoch"]}
    ranker = EmbeddingRanker(tower, vectors)
    weight, gate = math.inf, None
    if shots:
        runs = validation_runs(ranker, catalog, split, users, config.candidates, retriever, seed=seed, progress=False)
        fit = fit_weight_halves(runs, seed, EMBEDDING_GRID)
        weight, gate = fit.weight, {"best": fit.best, "p": fit.p_value}
    fused, alone = _test_ndcg(ranker, weight, heads, catalog, split, test_users)
    run = {"seed": seed, "weight": None if math.isinf(weight) else weight, "gate": gate, **trained,
           "seconds": round(time.perf_counter() - clock, 1)}
    if progress:
        print(f"  {arm:<8} shots {shots if shots is not None else 'all':>5} seed {seed}: alone {alone.mean():.4f} fused "
              f"{fused.mean():.4f} (w {run['weight']}) in {run['seconds']} s", flush=True)
    return fused, alone, run


def _report(config, split, points, hybrid, targets_in, pool, seconds) -> dict:
    rows = []
    for (arm, shots), point in points.items():
        row = {"arm": arm, "shots": shots if shots is not None else pool, "shots_label": "all" if shots is None else str(shots),
               "fused": _estimate(point.fused, config.resamples), "alone": _estimate(point.alone, config.resamples),
               "vs_hybrid_fused": _paired(point.fused, hybrid), "runs": point.runs}
        for other in ("scratch", *CONTROLS):
            if other != arm and (other, shots) in points:
                row[f"vs_{other}"] = {"fused": _paired(point.fused, points[(other, shots)].fused),
                                      "alone": _paired(point.alone, points[(other, shots)].alone)}
        rows.append(row)
    return {"config": config.model_dump(mode="json"), "test_users": len(hybrid), "training_users": pool,
            "hybrid": _estimate(hybrid, config.resamples), "test_targets_in_candidates": targets_in,
            "minutes": round(seconds / 60, 1), "points": rows}


def _claim_folder(out: Path, config: CurveConfig, force: bool) -> None:
    existing = out / "curve.json"
    if existing.is_file() and not force:
        try:
            same = json.loads(existing.read_text()).get("config") == config.model_dump(mode="json")
        except ValueError:
            same = False
        if not same:
            raise RunConflict(f"{out} holds another run's curve; use --force to replace it, or another --out")
    out.mkdir(parents=True, exist_ok=True)


def _write(out: Path, report: dict) -> None:
    from llmrec.assets import atomic_write_text

    atomic_write_text(out / "curve.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "curve.md", markdown(report))
    try:
        plot(report, out / "curve.png")
    except ImportError:  # matplotlib is in the [eval] extra
        pass


def markdown(report: dict) -> str:
    c = report["config"]
    lines = [f"# Few-shot curve: {c['scenario']}" + (f", transfer from {c['init_from']}" if c["init_from"] else ""), "",
             f"{report['test_users']} test users; hybrid retriever NDCG@10 {report['hybrid']['mean']:.4f} "
             f"[{report['hybrid']['ci95'][0]:.4f}, {report['hybrid']['ci95'][1]:.4f}]; the test target is among its "
             f"{c['candidates']} candidates for {report['test_targets_in_candidates']} users. A shot is one training user (their "
             f"training prefix's next-item examples and their validation target); {report['training_users']} are available. "
             f"{c['seeds']} seed(s) per point; {report['minutes']} min.", "",
             "| arm | shots | alone NDCG@10 [95% CI] | fused [95% CI] | fused vs hybrid (p) | alone vs scratch (p) | alone vs random (p) | alone vs minilm (p) |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda e: f"{e['mean']:.4f} [{e['ci95'][0]:.4f}, {e['ci95'][1]:.4f}]"  # noqa: E731
    pv = lambda row, key: (f"{row[key]['alone']['mean_diff']:+.4f} ({row[key]['alone']['p']:.2g})"  # noqa: E731
                           if key in row and row[key]["alone"]["p"] is not None else "–")
    for row in sorted(report["points"], key=lambda r: (r["shots"], ARMS.index(r["arm"]))):
        vs = row["vs_hybrid_fused"]
        lines.append(f"| {row['arm']} | {row['shots_label']} | {fmt(row['alone'])} | {fmt(row['fused'])} | "
                     f"{vs['mean_diff']:+.4f} ({vs['p']:.2g}) | {pv(row, 'vs_scratch')} | {pv(row, 'vs_random')} | {pv(row, 'vs_minilm')} |"
                     if vs["p"] is not None else f"| {row['arm']} | {row['shots_label']} | {fmt(row['alone'])} | {fmt(row['fused'])} | – | – | – | – |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind in zip(axes, ("alone", "fused")):
        for arm in ARMS:
            rows = sorted((r for r in report["points"] if r["arm"] == arm and r["shots"] > 0), key=lambda r: r["shots"])
            if rows:
                x = [r["shots"] for r in rows]
                ax.errorbar(x, [r[kind]["mean"] for r in rows], yerr=[[r[kind]["mean"] - r[kind]["ci95"][0] for r in rows],
                                                                       [r[kind]["ci95"][1] - r[kind]["mean"] for r in rows]],
                            marker="o", capsize=3, label=arm)
        ax.axhline(report["hybrid"]["mean"], color="grey", linestyle="--", label="hybrid retriever")
        ax.set_xscale("log")
        ax.set_xlabel("training users (shots)")
        ax.set_title(f"test NDCG@10, towers {kind}" + (" (fused with the retriever)" if kind == "fused" else ""))
    axes[0].set_ylabel("NDCG@10")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
