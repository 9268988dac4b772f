"""The `embedding` adapter against its two controls, paired, on the users and candidates of an `llmrec eval` report of it.

    LLMREC_HOME=... .venv/bin/python bench/embedding_controls.py --scenario movies-1m-emb --arms random   # train, cache (parallel)
    LLMREC_HOME=... .venv/bin/python bench/embedding_controls.py --scenario movies-1m-emb --report REPORT_DIR [--also PEERS_DIR] --out OUT

The controls are the issue's, built as `llmrec adapters curve` builds them (`adapters/curve.py`): the same towers over
seeded Gaussian item vectors of the LLM vectors' shape (`random`: item ids only, no text) and over the MiniLM sentence
vectors of each item's Chroma document (`minilm`: text, but not the LLM). Each is trained with the adapter's own training
config (read from its manifest: epochs, seeds, batch, learning rate, tower, patience), its epoch chosen on the selection
half of the validation users (`train_towers`), and its fusion weights (main and short-history) chosen on one half and
gated on the other, as `llmrec adapters train` does (`adapters.embedding.fit_fusion`).

The `llmrec eval` harness cannot score a control as a row: it ranks with the scenario's pipeline, and training towers
belongs to `adapters`, a layer above `eval`. So this script takes the report's own users and candidates instead (the
hybrid's top N in rankings-hybrid.jsonl; for the user cold-start slice, rankings-cold-start-hybrid.jsonl), ranks them
as the harness ranks `llmrec-embedding` (`eval.methods.rerank_head`: the towers' scores fused over the candidates, then
the hybrid's order), and first re-ranks the adapter itself the same way to check it reproduces the report's rows
user for user. Every method the report (and any `--also` report on the same split and users) exported is a row beside the
controls, and every row is paired-tested on per-user NDCG@10 (ranx, the report's test) against the hybrid; the controls
also against the adapter's row of the same kind (fused vs `llmrec-embedding`, alone vs `embedding-only`): on all users, on the item
cold-start slice (test targets with at most the report's `cold_items_max` training interactions) and on the user
cold-start slice. Trained control towers and their fits are cached in <home>/eval-cache/controls/<key>/.

Writes controls.json, controls.md and controls-ndcg.jsonl (per-user NDCG@10 of every row) into --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from llmrec.adapters.curve import minilm_vectors, random_vectors
from llmrec.adapters.embedding import EmbeddingTrainConfig, fit_fusion, train_towers
from llmrec.assets import folder_hash
from llmrec.data.datasets import load_dataset
from llmrec.data.split import LeaveOneOutSplit
from llmrec.engines.encoder import item_vectors
from llmrec.engines.models import resolve_model
from llmrec.eval import methods, stats
from llmrec.eval.harness import item_cold_users
from llmrec.eval.metrics import ndcg_at
from llmrec.eval.report import read_rankings
from llmrec.manifest import model_identity, objective_of, read_manifest
from llmrec.objectives import EMBEDDING
from llmrec.ranking.embedding import EmbeddingRanker, EmbeddingRankerConfig, TwoTower, TwoTowerConfig, load_two_tower
from llmrec.ranking.fusion import ShortHistoryWeight
from llmrec.scenario import load_scenario
from llmrec.schemas import UserHistory
from llmrec.settings import Settings

ARMS = ("random", "minilm")
ORDER = ("popularity", "embedding", "cooccurrence", "hybrid", "oracle", "als", "knn", "sasrec", "llmrec-embedding", "embedding-only")
"""Rows in this order (the retrievers, the peers, the adapter), then the controls."""
BATCH = 256


def _weight(value) -> float:
    return math.inf if value is None or value == "inf" else float(value)


def _load_report(folder: Path, others: list[Path]) -> tuple[list[str], dict[str, str], dict[str, dict[str, list[str]]]]:
    """(users in the report's order, their targets, every exported method's rankings by name) from rankings-*.jsonl; the
    `others` (reports on the same split and users, e.g. a `--no-llm --baselines als,knn` run) add the methods it lacks."""
    rows = read_rankings(folder / "rankings-hybrid.jsonl")
    users, targets = [r["user_id"] for r in rows], {r["user_id"]: r["target"] for r in rows}
    rankings: dict[str, dict[str, list[str]]] = {}
    for source in [folder, *others]:
        for path in sorted(source.glob("rankings-*.jsonl")):
            name = path.name.removeprefix("rankings-").removesuffix(".jsonl")
            if name not in rankings:
                found = {r["user_id"]: (r["target"], r["ranked"]) for r in read_rankings(path)}
                if set(found) != set(users) or any(found[u][0] != targets[u] for u in users):
                    sys.exit(f"{path} ranks other users or targets than {folder}")
                rankings[name] = {u: found[u][1] for u in users}
    return users, targets, rankings


def _towers(arm, settings, dataset, split, config, llm, retriever, home, model) -> tuple[EmbeddingRanker, dict]:
    """The control's ranker (its fused weight and short-history weight set) and what was fitted; cached by config and split."""
    from safetensors.numpy import load_file, save_file

    vectors = random_vectors(llm, config.seed) if arm == "random" else minilm_vectors(settings, dataset.items, llm.ids)
    key = hashlib.sha256(json.dumps([arm, config.model_dump(mode="json"), split.fingerprint(), model_identity(model)["path"], "v1"],
                                    sort_keys=True).encode()).hexdigest()[:16]
    folder = home / "eval-cache" / "controls" / key
    if (folder / "fit.json").is_file():
        fit = json.loads((folder / "fit.json").read_text())
        tower = TwoTower(load_file(str(folder / "tower.safetensors")), TwoTowerConfig.model_validate(fit["tower"]))
        fit["cached"] = True
    else:
        started = time.perf_counter()
        result = train_towers(vectors, split, config, progress=True)
        tower = result.tower
        ranker = EmbeddingRanker(tower, vectors)
        main, grid, users = fit_fusion(ranker, dataset.items, split, retriever, config)
        fit = {"arm": arm, "vectors": list(vectors.matrix.shape), "tower": tower.config.model_dump(), "train": result.manifest,
               "weight": None if math.isinf(main.weight) else main.weight, "grid": grid, "users": users, **main.record()}
        if config.short_history_items:
            short, short_grid, _ = fit_fusion(ranker, dataset.items, split, retriever, config, first_items=config.short_history_items)
            fit["short_history"] = {"max_items": config.short_history_items, "weight": None if math.isinf(short.weight) else short.weight,
                                    "grid": short_grid, **short.record()}
        fit["seconds"] = round(time.perf_counter() - started, 1)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in tower.tensors.items()}, str(folder / "tower.safetensors"))
        (folder / "fit.json").write_text(json.dumps(fit, indent=1, default=str))
        fit["cached"] = False
    ranker = EmbeddingRanker(tower, vectors, EmbeddingRankerConfig(fusion_weight=_weight(fit["weight"])))
    if fit.get("short_history"):
        ranker.short_history = ShortHistoryWeight(fit["short_history"]["max_items"], _weight(fit["short_history"]["weight"]))
    return ranker, fit


def _rank(ranker, catalog, cases, head, tails, desc) -> tuple[dict, dict]:
    """(fused rankings with the ranker's weights, the towers alone over the candidates), as the harness ranks them."""
    scores, _ = methods.score_all(ranker, catalog, cases, head, BATCH, desc)
    fused = methods.rerank_head(head, tails, scores, ranker.config.fusion_weight, ranker.short_history)
    return fused, methods.rerank_head(head, tails, scores, 0.0)


def _row(rankings, targets, users, resamples, seed) -> dict:
    est = stats.summarise([stats.metric_row(rankings[u], targets[u]) for u in users], resamples, seed)
    return {k: est[k] for k in ("NDCG@10", "HR@10", "HR@20")}


def compare(rankings: dict[str, dict], targets: dict, groups: dict[str, list[str]], pairs: list[tuple[str, str]], resamples: int,
            seed: int, test: str) -> dict:
    """Every row's NDCG@10/HR@10 [CI] per group of users, and the paired tests `pairs` (a vs b) per group."""
    out = {}
    for group, users in groups.items():
        if not users:
            out[group] = {"users": 0, "rows": {}, "paired_tests": []}
            continue
        rows = {name: _row(ranked, targets, users, resamples, seed) for name, ranked in rankings.items()}
        tests = [stats.paired_test(rankings[a], rankings[b], targets, users, (a, b), "ndcg@10", test).model_dump()
                 for a, b in pairs if a in rankings and b in rankings]
        out[group] = {"users": len(users), "rows": rows, "paired_tests": tests}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, help="a scenario with an `embedding` adapter, the one the report was run with")
    parser.add_argument("--report", type=Path, help="the `llmrec eval --out` folder of that scenario; without it the controls are "
                                                    "only trained and cached (arms can train in parallel processes this way)")
    parser.add_argument("--out", type=Path, help="where controls.json, controls.md and controls-ndcg.jsonl go (with --report)")
    parser.add_argument("--also", type=Path, action="append", default=[], help="another `llmrec eval --out` folder on the same "
                        "split and users (e.g. the peers' run): its methods join the rows and the paired tests against the hybrid")
    parser.add_argument("--arms", default=",".join(ARMS))
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    if set(arms) - set(ARMS) or (args.report is None) != (args.out is None):
        sys.exit(f"--arms: choose from {', '.join(ARMS)}; --report and --out go together")
    started = time.perf_counter()
    settings = Settings()
    home = settings.resolved_home()
    scenario = load_scenario(args.scenario, home)
    if scenario.adapter is None or objective_of(scenario.adapter) != EMBEDDING:
        sys.exit(f"scenario {args.scenario!r} has no `embedding` adapter")
    report = json.loads((args.report / "report.json").read_text()) if args.report else None
    if report and (report["identity"]["eval"]["scenario"] != args.scenario
                   or report["identity"]["adapter"]["sha256"] != folder_hash(Path(scenario.adapter.path))):
        sys.exit(f"{args.report} is not a report of scenario {args.scenario!r} with its current adapter")
    dataset = load_dataset(scenario.dataset, home)
    split = LeaveOneOutSplit.from_dataset(dataset)
    for folder in [args.report, *args.also] if report else []:
        if json.loads((folder / "report.json").read_text())["identity"]["split"]["fingerprint"] != split.fingerprint():
            sys.exit(f"{folder} was run on another split")
    manifest = read_manifest(scenario.adapter.path)
    config = EmbeddingTrainConfig.model_validate_json(json.dumps(manifest["config"]))
    if config.encoder_lora is not None:
        sys.exit("the adapter has an encoder LoRA (stage 2); the controls here are stage 1 only")
    model = resolve_model(settings.model, home)
    llm = item_vectors(model, list(dataset.items.values()), home, config.encoder)
    retriever = _retriever(settings, dataset, split)  # the fusion fits' validation candidates, as `adapters train` fits them
    controls = {arm: _towers(arm, settings, dataset, split, config, llm, retriever, home, model) for arm in arms}
    if report is None:
        for arm, (_, fit) in controls.items():
            print(f"control {arm}: trained and cached (w = {fit['weight']}, gate p = {fit['p_value']})")
        return 0
    result, full, cold, item_cold = _score(args, report, scenario, dataset, split, llm, model, controls)
    result |= {"scenario": args.scenario, "report_run_id": report["run_id"], "adapter_config": manifest["config"],
               "minutes": round((time.perf_counter() - started) / 60, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "controls.json").write_text(json.dumps(stats_plain(result), indent=1) + "\n")
    (args.out / "controls.md").write_text(markdown(result))
    targets = _targets(args.report)  # in the report's user order
    _per_user(args.out / "controls-ndcg.jsonl", list(targets), targets, item_cold, full, cold)
    print(markdown(result))
    return 0


def _targets(folder: Path) -> dict[str, str]:
    return {r["user_id"]: r["target"] for r in read_rankings(folder / "rankings-hybrid.jsonl")}


def _score(args, report, scenario, dataset, split, llm, model, controls):
    """The adapter re-ranked (the check), every control ranked on the report's users and candidates, and the comparisons."""
    identity, evalcfg = report["identity"], report["identity"]["eval"]
    n, keep = report["candidates"], evalcfg["cold_start_items"]
    users, targets, exported = _load_report(args.report, args.also)
    catalog, hybrid = dataset.items, exported["hybrid"]
    cases = [methods.Case(u, split.test_history(u), targets[u]) for u in users]
    head = {u: methods.as_candidates(hybrid[u][:n]) for u in users}
    cold_cases = [methods.Case(u, UserHistory(user_id=u, item_ids=split.train[u][:keep]), targets[u]) for u in users] if keep else []
    cold_hybrid = exported.get("cold-start-hybrid")
    cold_head = {u: methods.as_candidates(cold_hybrid[u][:n]) for u in users} if cold_hybrid else {}

    # The adapter itself, re-ranked here: the check that this script ranks as the harness does.
    tower, _ = load_two_tower(scenario.adapter, model)
    adapter = EmbeddingRanker(tower, llm, EmbeddingRankerConfig(fusion_weight=_weight(identity["fusion_weight"])))
    short = scenario.fusion.short_history
    if short is not None:
        adapter.short_history = ShortHistoryWeight(short.max_items, _weight(short.weight))
    fused, alone = _rank(adapter, catalog, cases, head, hybrid, "adapter (check)")
    reproduced = {"llmrec-embedding": sum(fused[u] == exported["llmrec-embedding"][u] for u in users),
                  "embedding-only": sum(alone[u] == exported["embedding-only"][u] for u in users), "of": len(users)}
    if cold_head and "cold-start-llmrec-embedding" in exported:
        fused, alone = _rank(adapter, catalog, cold_cases, cold_head, cold_hybrid, "adapter, cold start (check)")
        reproduced["cold-start-llmrec-embedding"] = sum(fused[u] == exported["cold-start-llmrec-embedding"][u] for u in users)
        reproduced["cold-start-embedding-only"] = sum(alone[u] == exported["cold-start-embedding-only"][u] for u in users)
    print(f"the adapter re-ranked here matches the report for {reproduced}", flush=True)

    order = {name: n for n, name in enumerate(ORDER)}
    exported = dict(sorted(exported.items(), key=lambda kv: order.get(kv[0].removeprefix("cold-start-"), len(order))))
    full = {name: ranked for name, ranked in exported.items() if not name.startswith("cold-start-")}
    cold = {name.removeprefix("cold-start-"): ranked for name, ranked in exported.items() if name.startswith("cold-start-")}
    for arm, (ranker, _) in controls.items():
        full[f"control-{arm}"], full[f"control-{arm}-only"] = _rank(ranker, catalog, cases, head, hybrid, f"control {arm}")
        if cold_head:
            cold[f"control-{arm}"], cold[f"control-{arm}-only"] = _rank(ranker, catalog, cold_cases, cold_head, cold_hybrid,
                                                                        f"control {arm}, cold start")
    pairs = [(name, "hybrid") for name in full if name not in ("hybrid", "oracle")]
    pairs += [("llmrec-embedding", f"control-{arm}") for arm in ARMS] + [("embedding-only", f"control-{arm}-only") for arm in ARMS]
    resamples, seed, test = evalcfg["bootstrap"], evalcfg["seed"], evalcfg["stat_test"]
    item_cold = item_cold_users(split, users, evalcfg["cold_items_max"])
    result = {"users": len(users), "candidates": n, "reproduced": reproduced, "fits": {arm: fit for arm, (_, fit) in controls.items()},
              "all users": compare(full, targets, {"all users": users}, pairs, resamples, seed, test)["all users"],
              "item cold-start": compare(full, targets, {"item cold-start": item_cold}, pairs, resamples, seed, test)["item cold-start"]
              | {"max_training_interactions": evalcfg["cold_items_max"]}}
    if cold_head:
        result["user cold-start"] = compare(cold, targets, {"user cold-start": users}, pairs, resamples, seed, test)["user cold-start"] | {
            "history_items": keep}
    return result, full, cold, set(item_cold)


def _retriever(settings, dataset, split):
    from llmrec.pipeline import build_index
    from llmrec.retrieval.retrievers import HybridRetriever

    return HybridRetriever(index=build_index(settings, dataset, progress=False)).fit(split.train_histories())


def _per_user(path: Path, users, targets, item_cold: set, full: dict, cold: dict) -> None:
    with path.open("w") as handle:
        for u in users:
            row = {"user_id": u, "target": targets[u], "item_cold": u in item_cold,
                   "ndcg10": {name: round(ndcg_at(ranked[u], targets[u], 10), 6) for name, ranked in full.items()}}
            if cold:
                row["cold_start_ndcg10"] = {name: round(ndcg_at(ranked[u], targets[u], 10), 6) for name, ranked in cold.items()}
            handle.write(json.dumps(row) + "\n")


def stats_plain(value):
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: stats_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [stats_plain(v) for v in value]
    return value


def markdown(result: dict) -> str:
    plain = stats_plain(result)
    fmt = lambda e: f"{e['mean']:.4f} [{e['low']:.4f}, {e['high']:.4f}]"  # noqa: E731
    lines = [f"# The `embedding` adapter against its controls: scenario {plain['scenario']}, report {plain['report_run_id']}", "",
             "Re-ranked here, the adapter matches the report's rankings user for user: "
             + ", ".join(f"`{k}` {v}" for k, v in plain["reproduced"].items() if k != "of") + f" of {plain['reproduced']['of']} users.", ""]
    for arm, fit in plain["fits"].items():
        seeds = fit["train"]["seeds"]
        short = fit.get("short_history") or {}
        lines.append(f"- control `{arm}`: item vectors {fit['vectors']}, best epochs {[s['best_epoch'] for s in seeds]} "
                     f"({seeds[-1]['stopped']}), validation NDCG@10 alone (full ranking) {fit['train']['valid_ndcg10_alone_full_ranking']:.4f}; "
                     f"fusion w = {fit['weight']} (best {fit['best_weight']}, gate p = {fit['p_value']}), short-history w = "
                     f"{short.get('weight')} (gate p = {short.get('p_value')}); trained and fitted in {fit.get('seconds', '?')} s"
                     + (" (cached)" if fit.get("cached") else ""))
    for group in ("all users", "item cold-start", "user cold-start"):
        part = plain.get(group)
        if not part:
            continue
        lines += ["", f"## {group}: {part['users']} users", "", "| row | NDCG@10 [95% CI] | HR@10 [95% CI] | HR@20 |", "|---|---|---|---|"]
        lines += [f"| {name} | {fmt(r['NDCG@10'])} | {fmt(r['HR@10'])} | {r['HR@20']['mean']:.4f} |" for name, r in part["rows"].items()]
        lines += ["", "| a | b | mean a | mean b | p | wins / ties / losses |", "|---|---|---|---|---|---|"]
        for t in part["paired_tests"]:
            p = "–" if t["p_value"] is None else f"{t['p_value']:.3g}"
            lines.append(f"| {t['a']} | {t['b']} | {t['mean_a']:.4f} | {t['mean_b']:.4f} | {p} | {t['wins']} / {t['ties']} / {t['losses']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
