"""Few-shot and transfer curves of the `embedding` objective: `llmrec adapters curve`.

For a target scenario (say `books`), towers are trained on the first S users of a seeded permutation of its
training users (a *shot* is one user: their training prefix gives next-item examples, one per position after the
first, and their validation target joins the selection and gate halves), for each S in `shots`, and tested on
every test user of the scenario. The arms:

- `scratch`: towers from a random start over the LLM's item-text vectors;
- `transfer`: towers that start from another scenario's `embedding` adapter (`--init-from`), over the same LLM
  vectors (at 0 shots the source adapter is applied as it is: zero-shot transfer);
- `meta`: towers that start from a meta-learned adapter (`--meta-from`, written by `llmrec adapters meta`, see
  `adapters.meta`), exactly as `transfer` starts from its source (at 0 shots: the meta start applied as it is);
- `random`: the control with no text: towers over seeded Gaussian item vectors of the same width;
- `minilm`: the control with text but not the LLM: towers over the MiniLM sentence vectors llmrec indexes in Chroma.

The retriever (the hybrid) is fitted on every user's training prefix: the domain's interaction log is there at
inference; what the shots limit is the labelled data the ranker learns from. The fusion weight is chosen on the shot
users' validation targets and gated on the other half of them (`adapters.fit.fit_weight_halves`), so with few shots it
usually keeps the retriever's order; `alone` (the towers' own order over the candidates) shows what they learned.
Every point is reported with a bootstrap CI over test users (per-user NDCG@10 averaged over seeds), and each arm is
paired-tested against scratch, transfer and both controls on the same users; the same again on the item cold-start
slice (test targets whose item has at most `cold_items_max` interactions in the training prefixes), where text is the
ranker's only knowledge of an item. The report, table and plot are `adapters.curve_report`'s.
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

from llmrec.adapters.curve_report import ARMS, build_report, markdown, write
from llmrec.adapters.embedding import EMBEDDING_GRID, EmbeddingTrainConfig, standardisation, train_towers
from llmrec.adapters.fit import fit_weight_halves, validation_runs
from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.engines.encoder import ItemEncoderConfig, ItemVectors, item_vectors
from llmrec.engines.models import pick_dtype, resolve_model
from llmrec.errors import AdapterMismatch, LLMRecError, RunConflict
from llmrec.eval.harness import item_cold_users
from llmrec.eval.metrics import ndcg_at
from llmrec.manifest import objective_of, read_manifest
from llmrec.objectives import EMBEDDING
from llmrec.ranking.embedding import EmbeddingRanker, TwoTower, load_two_tower
from llmrec.scenario import load_scenario
from llmrec.settings import Settings


class CurveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str
    init_from: str | None = Field(default=None, description="Scenario whose `embedding` adapter starts the transfer arm.")
    meta_from: str | None = Field(default=None, description="Scenario whose meta-learned `embedding` adapter starts the meta arm.")
    shots: tuple[int | None, ...] = Field(default=(0, 16, 64, 256, 1024, None), description="Training users per point; None: all.")
    seeds: int = Field(default=3, ge=1, description="Towers trained per point (one seed each), per-user NDCG averaged over them.")
    seeds_all: int | None = Field(default=None, ge=1, description=(
        "Seeds at the `all` point (None: `seeds`): training on every user costs the most, and varies least from seed to seed."))
    arms: tuple[str, ...] = Field(default=("scratch", "transfer", "random", "minilm"), description=(
        f"Of {', '.join(ARMS)}; `meta` needs `meta_from` (a meta-learned start: `llmrec adapters meta`)."))
    epochs: int = Field(default=8, ge=1)
    candidates: int = Field(default=20, ge=2)
    seed: int = 0
    resamples: int = Field(default=1000, ge=100)
    cold_items_max: int = Field(default=5, ge=0, description="The item cold-start slice: test targets with at most this many "
                                                             "training interactions.")


def shot_users(split: LeaveOneOutSplit, seed: int) -> list[str]:
    """Training users with at least one next-item example and a validation target, in a seeded order."""
    users = [u for u in split.valid_users() if len(split.train[u]) >= 2]
    random.Random(seed).shuffle(users)
    return users


def random_vectors(like: ItemVectors, seed: int) -> ItemVectors:
    """The no-text control: seeded Gaussian vectors of the same shape, one per item."""
    return ItemVectors(like.ids, np.random.default_rng(seed).standard_normal(like.matrix.shape).astype(np.float32))


def minilm_vectors(settings: Settings, items, ids: Sequence[str], index=None) -> ItemVectors:
    """The text-but-not-the-LLM control: the MiniLM sentence vectors of each item's Chroma document; read from the
    built Chroma `index` when given (it stores exactly these: MiniLM over `item_document`), else encoded here."""
    from llmrec.retrieval.index import item_document

    if index is not None:
        stored = index.embeddings_for(ids)
        if len(stored) == len(ids):
            return ItemVectors(tuple(ids), np.stack([stored[i] for i in ids]).astype(np.float32))
    from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm

    embedder = SentenceEmbedder(ensure_minilm(settings.resolved_home()))
    return ItemVectors(tuple(ids), np.asarray(embedder.encode([item_document(items[i]) for i in ids]), dtype=np.float32))


def restandardised(tower: TwoTower, vectors: ItemVectors) -> TwoTower:
    """Another domain's towers over this catalog: their maps, this catalog's own standardisation (zero-shot transfer)."""
    center, scale = standardisation(vectors.matrix)
    return TwoTower({**tower.tensors, "center": center, "scale": scale}, tower.config)


def _source_tower(settings: Settings, name: str, base_model: str, option: str = "--init-from") -> tuple[TwoTower, ItemEncoderConfig]:
    scenario = load_scenario(name, settings.resolved_home())  # unknown: exit 3
    if scenario.adapter is None or objective_of(scenario.adapter) != EMBEDDING:
        make = (f"`llmrec adapters meta --from <scenarios> --into {name}`" if option == "--meta-from"
                else f"`llmrec adapters train --scenario {name} --objective embedding`")
        raise AdapterMismatch(f"{option} {name}: the scenario has no `embedding` adapter to start from; make one with {make}")
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


def run_curve(settings: Settings, config: CurveConfig, out: Path, force: bool = False, progress: bool = True) -> dict:
    """Train and test every (arm, shots, seed); write curve.json, curve.md and curve.png into `out`."""
    from llmrec.pipeline import build_index
    from llmrec.retrieval.retrievers import HybridRetriever

    started = time.perf_counter()
    unknown = set(config.arms) - set(ARMS)
    if unknown:
        raise LLMRecError(f"unknown arm(s) {sorted(unknown)}: choose from {', '.join(ARMS)}")
    for arm, option, given in (("transfer", "--init-from", config.init_from), ("meta", "--meta-from", config.meta_from)):
        if arm in config.arms and given is None:
            raise LLMRecError(f"the {arm} arm needs {option} <scenario with an embedding adapter>")
    home = settings.resolved_home()
    scenario = load_scenario(config.scenario, home)
    dataset = load_dataset(scenario.dataset, home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    pool = shot_users(split, config.seed)
    too_many = [s for s in config.shots if s is not None and s > len(pool)]
    if too_many:
        raise LLMRecError(f"--shots {too_many[0]} is more than the {len(pool)} training users of {config.scenario}")
    base = resolve_model(settings.model, home)
    starts, encoder = _starts(settings, config, base)
    _claim_folder(out, config, force)  # after the checks: a refused request leaves no folder behind
    items = list(dataset.items.values())
    llm = item_vectors(base, items, home, encoder, progress)
    vectors = {"scratch": llm, "transfer": llm, "meta": llm}
    if "random" in config.arms:
        vectors["random"] = random_vectors(llm, config.seed)
    index = build_index(settings, dataset, progress=progress)
    if "minilm" in config.arms:
        vectors["minilm"] = minilm_vectors(settings, dataset.items, llm.ids, index)
    retriever = _Memo(HybridRetriever(index=index).fit(split.train_histories()))
    test_users = split.test_users()
    heads = {u: retriever.retrieve(split.test_history(u), config.candidates)
             for u in tqdm(test_users, desc="test candidates", unit="user", disable=not progress)}
    targets_in = np.array([split.test[u] in {c.item_id for c in heads[u]} for u in test_users])
    hybrid = np.array([ndcg_at([c.item_id for c in heads[u]], split.test[u], 10) for u in test_users])
    cold = set(item_cold_users(split, test_users, config.cold_items_max))
    points: dict[tuple[str, int | None], _Point] = {}
    for shots in config.shots:
        for arm in config.arms:
            if shots == 0 and arm not in starts:
                continue  # nothing to learn from and no start: the retriever's order, reported once
            point = points.setdefault((arm, shots), _Point(test_users))
            for seed in range(config.seed, config.seed + _seeds(config, shots)):
                point.add(*_one(config, split, dataset.items, vectors[arm], retriever, heads, test_users, pool, arm, shots,
                                seed, starts.get(arm), progress))
            point.finish()
    report = build_report(config, points, hybrid, np.array([u in cold for u in test_users], dtype=bool), targets_in, len(pool),
                          time.perf_counter() - started)
    report["dataset_notes"] = list(dataset.report.notes)  # e.g. book-crossing's random (not temporal) split
    write(out, report)
    return report


def _seeds(config: CurveConfig, shots: int | None) -> int:
    return 1 if shots == 0 else (config.seeds_all or config.seeds) if shots is None else config.seeds


def _starts(settings: Settings, config: CurveConfig, base: str) -> tuple[dict[str, TwoTower], ItemEncoderConfig]:
    """The towers the transfer and meta arms start from, and the item encoder they were trained over (the curve's LLM
    vectors are computed with it, so both starts must share it)."""
    starts, encoders = {}, {}
    for arm, option, name in (("transfer", "--init-from", config.init_from), ("meta", "--meta-from", config.meta_from)):
        if name is not None:
            starts[arm], encoders[option] = _source_tower(settings, name, base, option)
    if len(set(encoders.values())) > 1:
        raise AdapterMismatch(f"--init-from {config.init_from} and --meta-from {config.meta_from} were trained over different item "
                              f"vectors ({', '.join(f'{k}: {v.model_dump()}' for k, v in encoders.items())}); start both from one encoder")
    return starts, next(iter(encoders.values()), ItemEncoderConfig(dtype=pick_dtype(settings.dtype)))


def _one(config, split, catalog, vectors, retriever, heads, test_users, pool, arm, shots, seed, start, progress):
    users = pool if shots is None else pool[:shots]
    train = EmbeddingTrainConfig(epochs=config.epochs, seeds=1, seed=seed, candidates=config.candidates)
    clock = time.perf_counter()
    if shots == 0:
        tower, trained = restandardised(start, vectors), {"zero_shot": True}
    else:
        result = train_towers(vectors, split, train, progress=False, users=users, init=start)
        tower, trained = result.tower, {"examples": result.manifest["examples"], "best_epoch": result.manifest["seeds"][0]["best_epoch"]}
    ranker = EmbeddingRanker(tower, vectors)
    weight, gate = math.inf, None
    if shots != 0:  # None is the `all` point: every training user, fitted and gated like the others
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


__all__ = ["ARMS", "CurveConfig", "markdown", "minilm_vectors", "random_vectors", "restandardised", "run_curve", "shot_users"]
