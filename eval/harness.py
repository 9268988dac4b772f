"""`llmrec eval`: every method on the same split and users, with uncertainty, diagnostics and cost.

Flow: load and split the dataset → build the pipeline on training histories only → rank with each
method → (optional) SASRec via RecBole, the sampled protocol → position bias and explanation quality
on small subsamples → metrics, bootstrap intervals and paired tests → rankings, plots, report.json
and report.md, staged and moved into `out` at the end (see `report.OutputFolder`).
"""

from __future__ import annotations

import random
import resource
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.data.datasets import BUILTINS, load_dataset
from llmrec.data.split import SPLIT_VERSION, LeaveOneOutSplit
from llmrec.errors import LLMRecError
from llmrec.eval import explanations, methods, plots, position_bias, stats
from llmrec.eval.als_implicit import ALSGrid, ALSResult, run_als
from llmrec.eval.knn import KNNGrid, KNNResult, run_knn
from llmrec.eval.markdown import render
from llmrec.eval.methods import Case, LLMVariant
from llmrec.eval.report import EmptyTestSet, OutputFolder, folder_hash, run_id, to_plain, write_json, write_rankings
from llmrec.eval.sasrec_recbole import SASRecConfig, SASRecResult, run_sasrec
from llmrec.ranking.listwise import LLMRanker
from llmrec.scenario import load_scenario
from llmrec.schemas import UserHistory
from llmrec.settings import Settings

HARNESS_VERSION = "eval/v1"
CURVE_KS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100)


class EvalConfig(BaseModel):
    """Everything about an eval run that changes its results (all of it goes into the run id, except `batch`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str | None = Field(default=None, description="Must be the scenario's dataset; None: the scenario's.")
    scenario: str = "movies"
    users: int | None = Field(default=None, ge=0, description="Seeded sample of test users; None: all of them.")
    seed: int = Field(default=0, description="User samples, sampled negatives, bootstrap, SASRec.")
    depth: int = Field(default=100, ge=20, le=1000, description="Length of every ranked list; MRR is over it.")
    sampled: bool = Field(default=False, description="Also the sampled protocol: target + `sampled_negatives` (inflated).")
    sampled_negatives: int = Field(default=19, ge=1)
    bootstrap: int = Field(default=1000, ge=100, description="Bootstrap resamples over users for the 95% intervals.")
    stat_test: Literal["student", "fisher"] = "student"
    position_bias_users: int = Field(default=5, ge=0, description="Users (target among the candidates) placed at every position.")
    position_bias_permutations: int = Field(default=3, ge=2, le=8, description="Candidate orders averaged in the damped run.")
    explain_users: int = Field(default=20, ge=0)
    explain_k: int = Field(default=5, ge=1, le=20)
    llm: bool = Field(default=True, description="False: the retrievers and peers only (no LLM rows, position bias or explanations).")
    baselines: tuple[Literal["sasrec", "als", "knn"], ...] = ()
    sasrec_max_epochs: int = Field(default=200, ge=1, description="Cap on SASRec's epochs; early stopping on validation ends it sooner.")
    sasrec_patience: int = Field(default=10, ge=1, description="SASRec stops after this many epochs without a better validation NDCG@10.")
    als_grid: ALSGrid = Field(default_factory=ALSGrid, description="ALS hyper-parameters tried on validation NDCG@10.")
    knn_grid: KNNGrid = Field(default_factory=KNNGrid, description="Item-kNN neighbourhood sizes and shrinkages tried on validation NDCG@10.")
    cold_start_items: int = Field(default=3, ge=0, description="The cold-start slice: every test user again with only the first "
                                  "this many training items as history; 0 leaves the slice out.")
    cold_items_max: int = Field(default=5, ge=0, description="The item cold-start slice: the test targets whose item has at most "
                                "this many training interactions, every method's own rankings restricted to those users.")
    batch: int = Field(default=16, ge=1, description="Users per LLM engine call (speed only).")
    recbole_python: Path = Field(default=Path(".venv-recbole/bin/python"), description="Relative: to the cwd, then the repo.")


class EvalOutcome(BaseModel):
    run_id: str
    out: Path
    files: list[Path]
    report: dict
    seconds: float


def _cases(split: LeaveOneOutSplit, config: EvalConfig) -> list[Case]:
    from llmrec.data.sampling import sample

    users = split.test_users()
    if not users:
        raise EmptyTestSet(f"no user has the {3} interactions a leave-one-out test target needs")
    chosen = sample(users, len(users) if config.users is None else config.users, config.seed)
    if not chosen:
        raise EmptyTestSet("--users 0 leaves nobody to evaluate")
    return [Case(u, split.test_history(u), split.test[u]) for u in chosen]


def _same_dataset(a: str, b: str) -> bool:
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _subsample(cases: list[Case], n: int, seed: int, salt: str) -> list[Case]:
    if n >= len(cases):
        return list(cases)
    picked = set(random.Random(f"{seed}:{salt}").sample(range(len(cases)), n))
    return [c for i, c in enumerate(cases) if i in picked]


def _variants(pipeline) -> list[LLMVariant]:
    """The base LLM and, where the scenario has one, its adapter; each gets the stored weight only if it was fitted for it.

    An `embedding` adapter's two-tower ranker is the only variant of its scenario: the zero-shot LLM rows
    belong to the base scenario's report (they cost the LLM's prompts, this costs dot products)."""
    if not isinstance(pipeline.ranker, LLMRanker):
        weight, note = pipeline.ranker.config.fusion_weight, pipeline.fusion_note
        return [LLMVariant("embedding", pipeline.ranker, {"llmrec-embedding": weight, **({"embedding-only": 0.0} if weight != 0 else {})},
                           adapter=pipeline.scenario.adapter, descriptions={"llmrec-embedding": note} if note else {},
                           short=pipeline.ranker.short_history)]
    scenario, model, permutations = pipeline.scenario, pipeline.engine.model_name, pipeline.ranker.config.permutations
    weight, note = scenario.fusion.weight_for(model, None, permutations, scenario.name)
    base = LLMRanker(pipeline.engine, pipeline.dataset.items, pipeline.ranker.prompts, pipeline.ranker.config, adapter=None)
    out = [LLMVariant("base", base, {"llmrec": weight, **({"llm-only": 0.0} if weight != 0 else {})},
                      descriptions={"llmrec": note} if note else {})]
    if scenario.adapter is not None:
        weight, note = scenario.fusion.weight_for(model, scenario.adapter, permutations, scenario.name)
        out.append(LLMVariant("lora", pipeline.ranker, {"llmrec-lora": weight, **({"llm-only-lora": 0.0} if weight != 0 else {})},
                              adapter=scenario.adapter, descriptions={"llmrec-lora": note} if note else {}))
    return out


def _short(variant: LLMVariant, weight: float):
    """The variant's short-history weight for its fused methods; none for the LLM-alone ones (w = 0)."""
    return variant.short if weight != 0 else None


def history_order(dataset) -> str:
    """What orders a history, so the split can be called temporal or not: "timestamp", "seeded random" (a built-in
    whose timestamps are not times, e.g. Book-Crossing's) or "file line" (no timestamp column)."""
    builtin = BUILTINS.get(dataset.source)
    if builtin is not None and not builtin.timestamps:
        return "seeded random"
    return "timestamp" if dataset.report.has_timestamps else "file line"


def _dataset_summary(dataset) -> dict:
    """What was loaded, and every load note (dropped rows, repeated interactions, no timestamps)."""
    report = dataset.report
    return {"name": dataset.name, "interactions": report.interactions, "users": report.users, "items": report.items,
            "dropped_unknown_items": report.dropped_unknown_items, "duplicate_interactions": report.duplicate_interactions,
            "history_order": history_order(dataset), "notes": list(report.notes)}


def item_cold_users(split: LeaveOneOutSplit, users, max_interactions: int) -> list[str]:
    """The `users` (in their order) whose test target has at most `max_interactions` interactions in the training
    prefixes (0: an item no training prefix holds). Every method is fitted on those prefixes, so these are the items
    co-occurrence and the peers know least about."""
    counts: dict[str, int] = {}
    for history in split.train.values():
        for item in history:
            counts[item] = counts.get(item, 0) + 1
    return [u for u in users if counts.get(split.test[u], 0) <= max_interactions]


def _seconds(values) -> dict[str, float]:
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return {}
    return {"mean": round(float(arr.mean()), 4), "p50": round(float(np.median(arr)), 4), "p95": round(float(np.percentile(arr, 95)), 4)}


def _identity(settings: Settings, config: EvalConfig, pipeline, split: LeaveOneOutSplit) -> dict:
    adapter = pipeline.scenario.adapter
    return {
        "harness": HARNESS_VERSION, "eval": config.model_dump(mode="json", exclude={"batch", "recbole_python"}),
        "split": {"version": SPLIT_VERSION, "fingerprint": split.fingerprint()},
        "model": pipeline.engine.model_name, "model_setting": settings.model,
        "dtype": getattr(getattr(pipeline.engine, "config", None), "dtype", settings.dtype),
        "adapter": {"name": adapter.name, "sha256": folder_hash(Path(adapter.path))} if adapter else None,
        "fusion_weight": pipeline.scenario.fusion.effective_weight(),
        "prompts": {"rank": pipeline.ranker.prompts.config.model_dump() if isinstance(pipeline.ranker, LLMRanker) else None,
                    "explain": pipeline.explainer.prompts.config.model_dump()},
        "ranker": {"candidates": settings.candidates, "permutations": settings.permutations, "seed": settings.seed},
        "retriever": pipeline.retriever.config.model_dump(mode="json"),
    }


def run_eval(settings: Settings, config: EvalConfig, out: Path, *, force: bool = False, engine=None,
             progress: bool = True, notify=None) -> EvalOutcome:
    """`notify(notes)`, when given, receives the dataset's load notes as soon as it is loaded (the CLI prints them)."""
    from llmrec.pipeline import build_pipeline

    started = time.perf_counter()
    home = settings.resolved_home()
    scenario = load_scenario(config.scenario, home)
    dataset = load_dataset(config.dataset or scenario.dataset, home)
    if config.dataset and not _same_dataset(config.dataset, scenario.dataset):
        raise LLMRecError(f"scenario {scenario.name!r} is built on dataset {scenario.dataset!r}, not {config.dataset!r}; "
                          "give that scenario's dataset, or another --scenario")
    if notify is not None:
        notify(dataset.report.notes)
    split = LeaveOneOutSplit.from_dataset(dataset)
    cases = _cases(split, config)
    pipeline = build_pipeline(settings, scenario.name, train_histories=split.train_histories(), engine=engine, progress=progress)
    identity = _identity(settings, config, pipeline, split)
    folder = OutputFolder(Path(out), run_id(identity), force)
    stage = folder.begin()
    try:
        run = _Run(settings, config, pipeline, split, cases, progress)
        report = run.execute()
        data = {**_dataset_summary(dataset), "repeated_test_targets_dropped": split.repeated_targets["test"]}
        report = to_plain({"run_id": folder.run_id, "identity": identity, "dataset": data, **report,
                           "wall_seconds": round(time.perf_counter() - started, 1)})
        run.write(stage, report)
        files = folder.commit()
    except BaseException:
        folder.abandon()
        raise
    return EvalOutcome(run_id=folder.run_id, out=Path(out), files=files, report=report, seconds=report["wall_seconds"])


class _Run:
    """The state of one eval run while it executes."""

    def __init__(self, settings: Settings, config: EvalConfig, pipeline, split: LeaveOneOutSplit, cases: list[Case], progress: bool):
        self.settings, self.config, self.pipeline, self.split, self.cases, self.progress = settings, config, pipeline, split, cases, progress
        self.users = [c.user_id for c in cases]
        self.targets = {c.user_id: c.target for c in cases}
        self.catalog = pipeline.dataset.items
        self.rankings: dict[str, dict[str, list[str]]] = {}
        self.sampled: dict[str, dict[str, list[str]]] = {}
        self.descriptions: dict[str, str] = {}
        self.cost: dict = {}
        self.extra: dict = {}

    # --- ranking ----------------------------------------------------------------------------------

    def _timed(self, stage: str, fn) -> None:
        start = time.perf_counter()
        fn()
        self.stage_seconds[stage] = round(time.perf_counter() - start, 1)

    def execute(self) -> dict:
        self.stage_seconds: dict[str, float] = {}
        self._timed("retrieval methods", self._retrievers)
        self._timed("LLM rerank", self._llm)
        self.rankings["oracle"] = methods.oracle(self.head, self.rankings["hybrid"], self.targets)
        self.descriptions["oracle"] = (f"the reranker's ceiling: the target first wherever it is among the hybrid's {self.settings.candidates} "
                                       "candidates, else the hybrid order; no method can beat it by reranking")
        if self.config.cold_start_items:
            self._timed("cold-start slice", self._cold_start)
        self._timed("SASRec", self._sasrec)
        self._timed("ALS", self._als)
        self._timed("item-kNN", self._knn)
        if self.config.sampled:
            self._timed("sampled protocol", self._sampled_protocol)
        self._timed("position bias", self._position_bias)
        self._timed("explanations", self._explanations)
        self.cost["peak_rss_mb (this process, vLLM in-process)"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        self.cost["peak_rss_mb (largest child process)"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
        start = time.perf_counter()
        report = self._metrics()
        self.stage_seconds["metrics and tests"] = round(time.perf_counter() - start, 1)
        report["stage_seconds"] = self.stage_seconds
        return report

    def _retrievers(self) -> None:
        n = self.settings.candidates
        for method in methods.retriever_methods(self.pipeline.retriever):
            cands, secs = methods.retrieve_all(method.retriever, self.cases, self.config.depth, f"retrieve {method.name}", self.progress)
            self.rankings[method.name] = methods.ids(cands)
            self.descriptions[method.name] = method.description
            if method.name == "hybrid":
                self.head = {u: c[:n] for u, c in cands.items()}
                self.cost["retrieve_s_per_user"] = _seconds(secs)

    def _llm(self) -> None:
        n = self.settings.candidates
        self.variants = _variants(self.pipeline) if self.config.llm else []
        if any(isinstance(v.ranker, LLMRanker) for v in self.variants):
            start = time.perf_counter()
            self.pipeline.engine.generate(["warm-up"], max_tokens=1)  # loads vLLM, so per-user times exclude the load
            self.cost["engine_load_s"] = round(time.perf_counter() - start, 1)
        for variant in self.variants:
            scores, secs = methods.score_all(variant.ranker, self.catalog, self.cases, self.head, self.config.batch,
                                             f"LLM rerank ({variant.label})", self.progress)
            for name, weight in variant.weights.items():
                self.rankings[name] = methods.rerank_head(self.head, self.rankings["hybrid"], scores, weight, _short(variant, weight))
                self.descriptions[name] = _describe(name, weight, variant, n)
            tokens = [s.prompt_tokens for s in scores.values()]
            self.cost[f"rank_s_per_user ({variant.label}, batches of {self.config.batch})"] = _seconds(secs)
            self.cost[f"prompt_tokens ({variant.label})"] = {"mean": round(float(np.mean(tokens)), 1), "min": min(tokens), "max": max(tokens),
                                                             "users_with_history_cut": sum(s.history_dropped > 0 for s in scores.values())}

    def _cold_start(self) -> None:
        """Every evaluated user again, with only the first `cold_start_items` training items as history: where
        co-occurrence knows least and content knowledge should matter most. Same targets; SASRec and ALS are not
        rerun on the slice. A cold user's retrievers must not know their future: they are refitted group by group
        (`methods.held_out_retrievers`) on the other users' training prefixes plus the group's first items."""
        n, keep = self.settings.candidates, self.config.cold_start_items
        cases = [Case(c.user_id, UserHistory(user_id=c.user_id, item_ids=self.split.train[c.user_id][:keep]), c.target) for c in self.cases]
        by_user = {c.user_id: c for c in cases}
        found: dict[str, dict[str, list]] = {}
        for group, retriever in methods.held_out_retrievers(self.pipeline.retriever, self.split, list(by_user), keep, self.config.seed):
            for method in methods.retriever_methods(retriever):
                cands, _ = methods.retrieve_all(method.retriever, [by_user[u] for u in group], self.config.depth,
                                                f"cold start: {method.name}", self.progress)
                found.setdefault(method.name, {}).update(cands)
        rankings: dict[str, dict[str, list[str]]] = {name: methods.ids({u: cands[u] for u in self.users}) for name, cands in found.items()}
        head = {u: found["hybrid"][u][:n] for u in self.users}
        for variant in self.variants:
            scores, _ = methods.score_all(variant.ranker, self.catalog, cases, head, self.config.batch,
                                          f"cold start: LLM ({variant.label})", self.progress)
            for name, weight in variant.weights.items():
                rankings[name] = methods.rerank_head(head, rankings["hybrid"], scores, weight, _short(variant, weight))
        rankings["oracle"] = methods.oracle(head, rankings["hybrid"], self.targets)
        self.cold = {"items": keep, "rankings": rankings, "head": head}

    def _sasrec(self) -> None:
        if "sasrec" not in self.config.baselines:
            self.extra["sasrec"] = {"status": "not requested (--baselines sasrec)"}
            return
        python = self.config.recbole_python
        if not python.is_absolute() and not python.is_file():
            python = Path(__file__).resolve().parents[1] / python
        config = SASRecConfig(max_epochs=self.config.sasrec_max_epochs, patience=self.config.sasrec_patience, seed=self.config.seed,
                              python=python)
        result = run_sasrec(self.split, config, self.settings.resolved_home(), Path.cwd())
        if isinstance(result, str):
            self.extra["sasrec"] = {"status": result}
            return
        self.sasrec: SASRecResult = result
        self.rankings["sasrec"] = {u: result.rankings[u][: self.config.depth] for u in self.users}
        self.descriptions["sasrec"] = (f"SASRec (RecBole 1.2.1, CE loss) on our training split, the weights of epoch {result.best_epoch} "
                                       f"(0-based) of {result.epochs}: early stopping on validation NDCG@10, patience {result.patience}")
        self.extra["sasrec"] = {"status": "ok", **result.model_dump(exclude={"rankings"})}

    def _als(self) -> None:
        if "als" not in self.config.baselines:
            self.extra["als"] = {"status": "not requested (--baselines als)"}
            return
        depth = len(self.catalog) if self.config.sampled else self.config.depth  # the sampled protocol needs the full order
        result = run_als(self.split, self.users, depth, self.config.als_grid, self.config.seed)
        if isinstance(result, str):
            self.extra["als"] = {"status": result}
            return
        self.als: ALSResult = result
        self.rankings["als"] = {u: result.rankings[u][: self.config.depth] for u in self.users}
        best = result.best
        self.descriptions["als"] = (f"implicit {result.implicit_version} ALS on the training prefixes, user vector recomputed from the test "
                                    f"history; tuned on validation NDCG@10: {best.factors} factors, regularization {best.regularization:g}, "
                                    f"alpha {best.alpha:g}, {best.iterations} iterations")
        self.extra["als"] = {"status": "ok", **result.model_dump(exclude={"rankings"})}

    def _knn(self) -> None:
        if "knn" not in self.config.baselines:
            self.extra["knn"] = {"status": "not requested (--baselines knn)"}
            return
        depth = len(self.catalog) if self.config.sampled else self.config.depth  # the sampled protocol needs the full order
        result = run_knn(self.split, self.users, depth, self.config.knn_grid)
        self.knn: KNNResult = result
        self.rankings["knn"] = {u: result.rankings[u][: self.config.depth] for u in self.users}
        best = result.best
        self.descriptions["knn"] = (f"item-kNN over the training prefixes' co-occurrence counts (cosine, each item's {best.neighbours} "
                                    f"nearest, shrinkage {best.shrink:g}: tuned on validation NDCG@10), scored from the test history")
        self.extra["knn"] = {"status": "ok", **result.model_dump(exclude={"rankings"})}

    def _sampled_protocol(self) -> None:
        ids = sorted(self.catalog)
        items = {c.user_id: methods.sample_items(c, ids, self.config.sampled_negatives, self.config.seed) for c in self.cases}
        for method in methods.retriever_methods(self.pipeline.retriever):
            full, _ = methods.retrieve_all(method.retriever, self.cases, len(ids), f"sampled: {method.name} full order", self.progress)
            self.sampled[method.name] = {u: methods.restrict([c.item_id for c in full[u]], items[u], self.config.seed, u) for u in self.users}
        if "sasrec" in self.rankings:
            self.sampled["sasrec"] = {u: methods.restrict(self.sasrec.rankings[u], items[u], self.config.seed, u) for u in self.users}
        if "als" in self.rankings:
            self.sampled["als"] = {u: methods.restrict(self.als.rankings[u], items[u], self.config.seed, u) for u in self.users}
        if "knn" in self.rankings:
            self.sampled["knn"] = {u: methods.restrict(self.knn.rankings[u], items[u], self.config.seed, u) for u in self.users}
        head = {u: methods.as_candidates(self.sampled["hybrid"][u]) for u in self.users}
        for variant in self.variants:
            scores, _ = methods.score_all(variant.ranker, self.catalog, self.cases, head, self.config.batch,
                                          f"sampled: LLM ({variant.label})", self.progress)
            for name, weight in variant.weights.items():
                self.sampled[name] = methods.rerank_head(head, self.sampled["hybrid"], scores, weight, _short(variant, weight))

    def _position_bias(self) -> None:
        eligible = [c for c in self.cases if c.target in {x.item_id for x in self.head[c.user_id]}]
        chosen = _subsample(eligible, self.config.position_bias_users, self.config.seed, "position-bias")
        if not chosen or not self.config.llm or not isinstance(self.pipeline.ranker, LLMRanker):  # a two-tower score has no positions
            self.extra["position_bias"] = None
            return
        ranker = self.pipeline.ranker
        rankers = {p: LLMRanker(ranker.engine, ranker.catalog, ranker.prompts,
                                ranker.config.model_copy(update={"permutations": p, "fusion_weight": 0.0}), adapter=ranker.adapter)
                   for p in (1, self.config.position_bias_permutations)}
        self.extra["position_bias"] = position_bias.measure(rankers, self.catalog, chosen, self.head, self.progress)

    def _explanations(self) -> None:
        chosen = _subsample(self.cases, self.config.explain_users, self.config.seed, "explanations")
        if not chosen or not self.variants:
            self.extra["explanations"] = None
            return
        method = next(iter(self.variants[-1].weights))  # the scenario's own ranker, fused: llmrec, llmrec-lora or llmrec-embedding
        quality = explanations.measure(self.pipeline.explainer, self.catalog, chosen, self.rankings[method], self.config.explain_k, self.progress)
        self.extra["explanations"] = {"method": method, "k": self.config.explain_k, **quality.model_dump()}
        self.cost["explain_s_per_user"] = _seconds(quality.seconds_per_user)

    # --- metrics ------------------------------------------------------------------------------------

    def _metrics(self) -> dict:
        cfg = self.config
        head_ids = {u: {c.item_id for c in cands} for u, cands in self.head.items()}
        in_cands = [u for u in self.users if self.targets[u] in head_ids[u]]
        results, curves = {}, {}
        for name, ranked in self.rankings.items():
            rows = {u: stats.metric_row(ranked[u], self.targets[u]) for u in self.users}
            results[name] = {
                "description": self.descriptions[name],
                "full": stats.summarise([rows[u] for u in self.users], cfg.bootstrap, cfg.seed),
                "in_candidates": stats.summarise([rows[u] for u in in_cands], cfg.bootstrap, cfg.seed),
            }
            if name in self.sampled:
                sampled_rows = [stats.metric_row(self.sampled[name][u], self.targets[u]) for u in self.users]
                results[name]["sampled"] = stats.summarise(sampled_rows, cfg.bootstrap, cfg.seed)
            curves[name] = stats.curves(stats.target_positions(ranked, self.targets, self.users), CURVE_KS)
        tests = []
        for variant in self.variants:
            for name in variant.weights:
                for group, users in (("all users", self.users), ("target in candidates", in_cands)):
                    if users:
                        test = stats.paired_test(self.rankings[name], self.rankings["hybrid"], self.targets, users,
                                                 (name, "hybrid"), "ndcg@10", cfg.stat_test)
                        tests.append({"group": group, **test.model_dump()})
        cold = self._cold_metrics() if getattr(self, "cold", None) else None
        item_cold = self._item_cold_metrics()
        top10 = lambda name: sum(self.targets[u] in self.rankings[name][u][:10] for u in self.users)  # noqa: E731
        funnel = [("test users", len(self.users)),
                  ("in retrieval@100 (hybrid)", sum(self.targets[u] in self.rankings["hybrid"][u] for u in self.users)),
                  (f"in candidates@{self.settings.candidates}", len(in_cands)), ("in top-10: hybrid order", top10("hybrid"))]
        funnel += [(f"in top-10: {name}", top10(name)) for v in self.variants for name in v.weights]
        self.curves, self.funnel = curves, funnel
        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "users": len(self.users), "test_users_total": len(self.split.test),
            "users_target_in_candidates": len(in_cands), "candidates": self.settings.candidates,
            "fusion_weight": self.pipeline.scenario.fusion.weight, "fusion_fit": self.pipeline.scenario.fusion.fitted_on,
            "methods": results, "paired_tests": tests, "funnel": funnel, "curves": curves,
            "random_expectation": _random_expectation(cfg, self.settings.candidates, len(self.catalog)),
            **self.extra, "cold_start": cold, "item_cold_start": item_cold, "cost": self.cost,
        }

    def _cold_metrics(self) -> dict:
        cfg, rankings, head = self.config, self.cold["rankings"], self.cold["head"]
        in_cands = [u for u in self.users if self.targets[u] in {c.item_id for c in head[u]}]
        results = {name: {"full": stats.summarise([stats.metric_row(ranked[u], self.targets[u]) for u in self.users], cfg.bootstrap, cfg.seed)}
                   for name, ranked in rankings.items()}
        tests = [{"group": "cold-start slice", **stats.paired_test(rankings[name], rankings["hybrid"], self.targets, self.users,
                                                                  (name, "hybrid"), "ndcg@10", cfg.stat_test).model_dump()}
                 for variant in self.variants for name in variant.weights]
        return {"history_items": self.cold["items"], "users": len(self.users), "users_target_in_candidates": len(in_cands),
                "methods": results, "paired_tests": tests}

    def _item_cold_metrics(self) -> dict:
        """Every method's own rankings (no re-run) on the users whose target is a rarely seen item, each paired-tested
        against the hybrid; how many of those targets the hybrid brings among the candidates bounds any reranker."""
        cfg = self.config
        users = item_cold_users(self.split, self.users, cfg.cold_items_max)
        in_cands = [u for u in users if self.targets[u] in {c.item_id for c in self.head[u]}]
        out = {"max_training_interactions": cfg.cold_items_max, "users": len(users), "of_users": len(self.users),
               "users_target_in_candidates": len(in_cands),
               "users_target_in_retrieval": sum(self.targets[u] in self.rankings["hybrid"][u] for u in users),
               "methods": {}, "paired_tests": []}
        if not users:
            return out
        out["methods"] = {name: {"full": stats.summarise([stats.metric_row(ranked[u], self.targets[u]) for u in users], cfg.bootstrap, cfg.seed)}
                          for name, ranked in self.rankings.items()}
        out["paired_tests"] = [{"group": "item cold-start slice", **stats.paired_test(ranked, self.rankings["hybrid"], self.targets, users,
                                                                                     (name, "hybrid"), "ndcg@10", cfg.stat_test).model_dump()}
                               for name, ranked in self.rankings.items() if name not in ("hybrid", "oracle")]
        return out

    def write(self, stage: Path, report: dict) -> None:
        for name, ranked in self.rankings.items():
            write_rankings(stage, name, ranked, self.targets, self.users)
        for name, ranked in (getattr(self, "cold", None) or {}).get("rankings", {}).items():
            write_rankings(stage, f"cold-start-{name}", ranked, self.targets, self.users)
        plots.metric_curves(stage / "curves.png", self.curves, f"Full ranking, {len(self.users)} test users")
        plots.funnel(stage / "funnel.png", self.funnel, len(self.users))
        if report.get("sasrec", {}).get("status") == "ok":
            sasrec = report["sasrec"]
            plots.validation_curve(stage / "sasrec_valid.png", sasrec["valid_curve"], sasrec["best_epoch"])
        bias = report.get("position_bias")
        if bias:
            plots.position_bias(stage / "position_bias.png", bias["positions"], bias["mean_rank"], len(bias["users"]))
        report["files"] = sorted(p.name for p in stage.iterdir()) + ["report.md", "report.json"]
        (stage / "report.md").write_text(render(report))
        write_json(stage / "report.json", report)


def _describe(name: str, weight: float, variant: LLMVariant, n: int) -> str:
    model = {"embedding": "the embedding adapter (LLM item vectors, trained two-tower)", "lora": "the LoRA adapter"}.get(
        variant.label, "the zero-shot base LLM")
    if name.startswith(("llm-only", "embedding-only")):
        return f"hybrid top-{n} reranked by {model} alone (w=0), positions {n + 1}-100 in hybrid order; diagnostic"
    w = "inf: the LLM only breaks ties, so this is the hybrid order" if weight == float("inf") else f"{weight:g}"
    note = f"; {variant.descriptions[name]}" if name in variant.descriptions else ""
    return f"hybrid top-{n} reranked by {model} fused with the retriever rank (w={w}), positions {n + 1}-100 in hybrid order{note}"


def _random_expectation(config: EvalConfig, candidates: int, catalog: int) -> dict:
    """What a random order scores: sampled protocol (uniform over 1 + negatives) and within the candidates."""
    def ndcg10(n: int) -> float:
        return float(sum(1 / np.log2(r + 2) for r in range(min(10, n))) / n)

    out = {f"in_candidates NDCG@10 (uniform over {candidates})": round(ndcg10(candidates), 4),
           f"full ranking NDCG@10 (uniform over ~{catalog} items)": round(ndcg10(catalog), 5)}
    if config.sampled:
        out[f"sampled NDCG@10 (uniform over {1 + config.sampled_negatives})"] = round(ndcg10(1 + config.sampled_negatives), 4)
    return out
