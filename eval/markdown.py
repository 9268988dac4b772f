"""report.md: the protocol, the tables (with 95% intervals) and the plots of one eval run."""

from __future__ import annotations

from llmrec.eval.stats import HEADLINE

PROTOCOL = """\
- **Split**: leave-one-out per user over {order} (`data/split.py`, {split_version}, fingerprint `{fingerprint}`). Validation target = second-to-last
  item, test target = last item; users with fewer than 3 interactions have no target. Test history = training
  prefix + validation item. Retrievers (co-occurrence counts, popularity) are fitted on the training prefixes only.
- **Users**: {users} of {total} test users ({sample}).
- **Full ranking (headline)**: every method ranks all items the user has not seen. Retriever methods report their own
  top {depth}; LLM methods rerank the hybrid retriever's top {n} candidates and keep the hybrid order at positions
  {n1}-{depth}. HR@k (= Recall@k with one target) and NDCG@k are over the first k; **MRR is over the top-{depth} list**
  (0 when the target is not in it).
- **LlamaRec-style pair**: the same metrics over all users and over the users whose target is among the hybrid
  retriever's {n} candidates ({in_cands} users); the second isolates the reranker, the first is what a user gets.
- **Uncertainty**: 95% percentile bootstrap over users ({bootstrap} resamples, seed {seed}; all methods share the
  resampled user sets). Paired test of each LLM method against its own retriever order (hybrid) on per-user
  NDCG@10 with ranx (`{stat_test}`).
- **Fusion**: score = LLM label log-probability − w·log(1 + retriever rank); w is the scenario's stored weight
  ({weight}). `llm-only` (w = 0) shows what the LLM does on its own.
"""


ORDERS = {
    "timestamp": "the history ordered by timestamp, ties broken by the line order of the interactions file: a temporal split",
    "seeded random": "each user's history in a seeded random order (the dataset has no timestamps; see the load notes): a random "
                     "split, not a temporal one",
    "file line": "the history in the line order of the interactions file (it has no timestamp column), which may not be the "
                 "order in time",
}


def _order(report: dict) -> str:
    """How histories were ordered; reports written before the dataset summary said so were timestamp-ordered."""
    return ORDERS[(report.get("dataset") or {}).get("history_order", "timestamp")]


def _cell(estimate: dict) -> str:
    return f"{estimate['mean']:.4f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def _table(methods: dict, section: str, columns=HEADLINE) -> list[str]:
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, result in methods.items():
        values = result.get(section)
        if values:
            lines.append(f"| {name} | " + " | ".join(_cell(values[c]) for c in columns) + " |")
    return lines


def _cost(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
    return str(value)


def _fmt_p(p) -> str:
    return "n/a" if p is None else (f"{p:.2e}" if p < 1e-3 else f"{p:.3f}")


def render(report: dict) -> str:
    ident = report["identity"]
    ev = ident["eval"]
    weight = report["fusion_weight"]
    sample = "all" if ev["users"] is None else f"seeded sample, seed {ev['seed']}"
    lines = [
        f"# llmrec eval: scenario {ev['scenario']}, split {ident['split']['fingerprint'][:12]}", "",
        f"Run `{report['run_id']}` · {report['created']} · model `{ident['model']}` · adapter "
        f"`{ident['adapter']['name'] if ident['adapter'] else 'none'}` · wall time {report['wall_seconds'] / 60:.1f} min", "",
        "## Protocol", "",
        PROTOCOL.format(order=_order(report), split_version=ident["split"]["version"], fingerprint=ident["split"]["fingerprint"][:16], users=report["users"],
                        total=report["test_users_total"], sample=sample, depth=ev["depth"], n=report["candidates"],
                        n1=report["candidates"] + 1, in_cands=report["users_target_in_candidates"], bootstrap=ev["bootstrap"],
                        seed=ev["seed"], stat_test=ev["stat_test"],
                        weight="not fitted, so w = ∞: llmrec keeps the hybrid order" if weight is None else f"w = {weight:g}"),
        *_data(report.get("dataset")),
        "## Methods", "",
    ]
    lines += [f"- **{name}**: {r['description']}" for name, r in report["methods"].items()]
    if not ev.get("llm", True):
        lines += ["", "No LLM rows: this run ranks with the retrievers and the peers only (`--no-llm`); position bias and explanations "
                  "were not measured."]
    lines += ["", "## Full ranking, all users (mean [95% CI])", "", *_table(report["methods"], "full"), ""]
    pair = ["NDCG@10", "HR@1", "HR@10", "MRR"]
    lines += [f"## Target among the {report['candidates']} candidates ({report['users_target_in_candidates']} users)", "",
              *_table(report["methods"], "in_candidates", pair), ""]
    lines += ["## Paired tests: LLM rerank vs its own retriever order (hybrid), per-user NDCG@10", "",
              "| method | users | n | mean | hybrid | p-value | wins / ties / losses | note |", "|---|---|---|---|---|---|---|---|"]
    for t in report["paired_tests"]:
        lines.append(f"| {t['a']} | {t['group']} | {t['users']} | "
                     f"{t['mean_a']:.4f} | {t['mean_b']:.4f} | {_fmt_p(t['p_value'])} ({t['test']}) | "
                     f"{t['wins']} / {t['ties']} / {t['losses']} | {t['note']} |")
    if any("sampled" in r for r in report["methods"].values()):
        lines += ["", f"## Sampled protocol (target + {ev['sampled_negatives']} seeded negatives): INFLATED, not comparable to the above", "",
                  "Ranking 1 + N sampled items is far easier than ranking the whole catalog; a random order scores NDCG@10 ≈ "
                  f"{report['random_expectation'].get(next((k for k in report['random_expectation'] if k.startswith('sampled')), ''), 0):.3f} here. "
                  "Retrievers order the sample by their full-catalog list (items they never rank follow in seeded random order); "
                  "LLM methods rerank the 20 sampled items, given in the hybrid's order.", "",
                  *_table({k: v for k, v in report["methods"].items() if "sampled" in v}, "sampled", ["NDCG@10", "HR@1", "HR@5", "HR@10", "MRR"])]
    lines += _cold_start(report.get("cold_start"))
    lines += _item_cold_start(report.get("item_cold_start"), report["candidates"])
    lines += ["", "## Reference: a random order", ""] + [f"- {k}: {v}" for k, v in report["random_expectation"].items()]
    lines += _sasrec(report.get("sasrec") or {})
    lines += _als(report.get("als") or {})
    lines += _knn(report.get("knn") or {})
    lines += _position_bias(report.get("position_bias"))
    lines += _explanations(report.get("explanations"))
    lines += ["", "## Funnel", "", "| stage | targets | share |", "|---|---|---|"]
    lines += [f"| {stage} | {count} | {count / max(report['users'], 1):.1%} |" for stage, count in report["funnel"]]
    lines += ["", "## Cost", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {_cost(v)} |" for k, v in report["cost"].items()]
    lines += ["", "Wall time by stage (s): " + ", ".join(f"{k} {v}" for k, v in report.get("stage_seconds", {}).items())]
    lines += ["", "## Plots", "", "![NDCG@K and Recall@K](curves.png)", "", "![Funnel](funnel.png)"]
    if report.get("position_bias"):
        lines += ["", "![Position bias](position_bias.png)"]
    if (report.get("sasrec") or {}).get("status") == "ok":
        lines += ["", "![SASRec validation curve](sasrec_valid.png)"]
    lines += ["", "Per-user rankings: `rankings-<method>.jsonl` (one `{user_id, target, ranked}` object a line, top "
              f"{ev['depth']}, the dataset's own ids).", ""]
    return "\n".join(lines)


def _data(info: dict | None) -> list[str]:
    """The loaded dataset's size and every note loading left (dropped rows, repeated interactions, no timestamps)."""
    if not info:
        return []
    lines = ["## Data", "", f"Dataset `{info['name']}`: {info['interactions']} interactions kept, {info['users']} users, "
             f"{info['items']} items. " + ("Load notes:" if info["notes"] else "Loading left no notes."), ""]
    lines += [f"- {note}" for note in info["notes"]] + ([""] if info["notes"] else [])
    if info.get("repeated_test_targets_dropped"):
        lines += [f"{info['repeated_test_targets_dropped']} users' last item repeats an earlier one of theirs; no retriever "
                  "ranks a seen item, so these users have no test target (`data/split.py`).", ""]
    return lines


def _cold_start(cold: dict | None) -> list[str]:
    if not cold:
        return []
    lines = ["", f"## Cold-start slice: the same {cold['users']} users with only their first {cold['history_items']} training items as history",
             "", "Same targets; a cold user's retrievers never see their later items: they are fitted in 5 groups of users, each "
             "group's on the other users' training prefixes and the group's own first items. The target is among the hybrid's candidates "
             f"for {cold['users_target_in_candidates']} users. SASRec and ALS are not rerun on the slice.", "",
             *_table(cold["methods"], "full", ["NDCG@10", "HR@10", "HR@20", "MRR"]), "",
             "| method | n | mean | hybrid | p-value | wins / ties / losses |", "|---|---|---|---|---|---|"]
    for t in cold["paired_tests"]:
        lines.append(f"| {t['a']} | {t['users']} | {t['mean_a']:.4f} | {t['mean_b']:.4f} | {_fmt_p(t['p_value'])} ({t['test']}) | "
                     f"{t['wins']} / {t['ties']} / {t['losses']} |")
    return lines


def _item_cold_start(cold: dict | None, candidates: int) -> list[str]:
    if not cold:
        return []
    n = cold["max_training_interactions"]
    lines = ["", f"## Item cold-start slice: test targets with at most {n} training interactions", "",
             f"{cold['users']} of the {cold['of_users']} test targets are items with at most {n} interactions in the training "
             f"prefixes. Each method's own rankings above, restricted to those users (nothing is rerun). The hybrid brings "
             f"{cold.get('users_target_in_retrieval', 'n/a')} of these targets into its top 100 and {cold['users_target_in_candidates']} "
             f"among its {candidates} candidates: the most any reranker of them can reach."]
    if not cold["users"]:
        return lines
    lines += ["", *_table(cold["methods"], "full", ["NDCG@10", "HR@10", "HR@20", "MRR"]), "",
              "Paired tests against the hybrid, per-user NDCG@10 on the slice:", "",
              "| method | n | mean | hybrid | p-value | wins / ties / losses | note |", "|---|---|---|---|---|---|---|"]
    for t in cold["paired_tests"]:
        lines.append(f"| {t['a']} | {t['users']} | {t['mean_a']:.4f} | {t['mean_b']:.4f} | {_fmt_p(t['p_value'])} ({t['test']}) | "
                     f"{t['wins']} / {t['ties']} / {t['losses']} | {t['note']} |")
    return lines


def _sasrec(info: dict) -> list[str]:
    lines = ["", "## SASRec (RecBole) peer", ""]
    if info.get("status") != "ok":
        return lines + [f"{info.get('status', 'not run')}."]
    curve = info["valid_curve"]
    stop = (f"stopped by early stopping after {info['patience']} epochs without a better one" if info["epochs"] < info["max_epochs"]
            else f"stopped by the cap of {info['max_epochs']} epochs, so it may not have converged")
    return lines + [
        f"Trained by RecBole 1.2.1 in its own venv on our split, written as benchmark files (train rows = every next-item "
        f"step inside the training prefixes, valid = prefix → validation item, test = prefix + validation item → test item). "
        f"After every epoch the runner scores the validation targets itself, history masked, with the NDCG@10 used above; "
        f"{info['epochs']} epoch(s), {stop}; the weights of the best epoch, {info['best_epoch']} (0-based, validation NDCG@10 "
        f"{info['best_valid_ndcg10']:.4f}), rank the test users. Training {info['train_seconds'] / 60:.1f} min on "
        f"{info['torch_threads']} torch thread(s){' (cached)' if info.get('cached') else ''}. Test rankings come from "
        "`full_sort_predict` with every history item masked (RecBole 1.2.1 does not mask history for sequential models "
        f"in full sort). Items in RecBole's vocabulary: {info['items_in_vocabulary']}. Model: "
        + ", ".join(f"{k} {v}" for k, v in info["recbole_config"].items()) + ".", "",
        "Validation NDCG@10 by epoch (0-based): " + ", ".join(f"{r['epoch']}: {r['valid_ndcg10']:.4f}" for r in curve) + "."]


def _als(info: dict) -> list[str]:
    lines = ["", "## ALS (implicit) peer", ""]
    if info.get("status") != "ok":
        return lines + [f"{info.get('status', 'not run')}."]
    grid, best = info["grid"], info["best"]
    ranked = sorted(info["scores"], key=lambda p: -p["valid_ndcg10"])
    lines += [
        f"implicit {info['implicit_version']} `AlternatingLeastSquares` fitted on the binary user × item matrix of the training "
        f"prefixes ({info['items_with_factors']} items have factors); each user's vector is recomputed from the history it is "
        "asked about (training prefix for validation, + the validation item for test), and seen items are excluded. "
        f"Grid ({len(info['scores'])} settings, seed-fixed, validation NDCG@10 over {info['valid_users']} users): "
        + "; ".join(f"{k} {', '.join(f'{v:g}' for v in values)}" for k, values in grid.items())
        + f". Chosen: {best['factors']} factors, regularization {best['regularization']:g}, alpha {best['alpha']:g}, "
        f"{best['iterations']} iterations. Tuning {info['tune_seconds']:.0f} s, the final fit and test ranking "
        f"{info['test_fit_seconds']:.0f} s.",
        "", "| factors | regularization | alpha | iterations | valid NDCG@10 | valid HR@10 |", "|---|---|---|---|---|---|"]
    for p in ranked[:5] + ranked[5:][-1:]:
        q = p["params"]
        lines.append(f"| {q['factors']} | {q['regularization']:g} | {q['alpha']:g} | {q['iterations']} | "
                     f"{p['valid_ndcg10']:.4f} | {p['valid_hr10']:.4f} |")
    shown = "best first" if len(ranked) <= 6 else "the five best and the worst"
    return lines + ["", f"({shown}; every setting is in report.json under `als.scores`.)"]


def _knn(info: dict) -> list[str]:
    lines = ["", "## Item-kNN peer", ""]
    if info.get("status") != "ok":
        return lines + [f"{info.get('status', 'not run')}."]
    grid, best = info["grid"], info["best"]
    ranked = sorted(info["scores"], key=lambda p: -p["valid_ndcg10"])
    lines += [
        f"{info['implementation']}. Similarity c(i, j) / (sqrt(n(i) n(j)) + shrink) over the {info['items']} items of the training "
        "prefixes (c: users holding both, n: users holding one); each item keeps its k most similar items; a history scores an item "
        "by the summed similarity of the history items among its k nearest; unscored items follow in popularity order. "
        f"Grid ({len(info['scores'])} settings, validation NDCG@10 over {info['valid_users']} users): neighbours "
        f"{', '.join(str(k) for k in grid['neighbours'])}; shrink {', '.join(f'{v:g}' for v in grid['shrink'])}. "
        f"Chosen: {best['neighbours']} neighbours, shrink {best['shrink']:g}. Tuning {info['tune_seconds']:.0f} s, the final fit and "
        f"test ranking {info['test_fit_seconds']:.0f} s.",
        "", "| neighbours | shrink | valid NDCG@10 | valid HR@10 |", "|---|---|---|---|"]
    for p in ranked[:5] + ranked[5:][-1:]:
        lines.append(f"| {p['params']['neighbours']} | {p['params']['shrink']:g} | {p['valid_ndcg10']:.4f} | {p['valid_hr10']:.4f} |")
    shown = "best first" if len(ranked) <= 6 else "the five best and the worst"
    return lines + ["", f"({shown}; every setting is in report.json under `knn.scores`.)"]


def _position_bias(bias) -> list[str]:
    if not bias:
        return ["", "## Position bias", "", "Not measured (no eligible users or disabled)."]
    picks = [p for p in (0, 1, 2, 5, 10, 15, 19) if p < len(bias["positions"])]
    lines = ["", "## Position bias", "",
             f"{len(bias['users'])} users whose target is among the candidates; the target is placed at each position, the "
             f"others keep the retriever's order; rank of the target under the LLM alone (w = 0). {bias['prompts_scored']} "
             f"prompts, {bias['seconds']:.0f} s. A flat line at {(len(bias['positions']) - 1) / 2:.1f} = no position effect; "
             "the diagonal = the LLM copies the list order.", "",
             "| run | " + " | ".join(f"pos {p}" for p in picks) + " | HR@1 at pos 0 | HR@1 at last |",
             "|---|" + "---|" * (len(picks) + 2)]
    for label, ranks in bias["mean_rank"].items():
        hit1 = bias["hit1"][label]
        lines.append(f"| {label} | " + " | ".join(f"{ranks[p]:.1f}" for p in picks) + f" | {hit1[0]:.2f} | {hit1[-1]:.2f} |")
    return lines


def _explanations(info) -> list[str]:
    if not info:
        return ["", "## Explanations", "", "Not measured."]
    rows = [("explanations (users × top-k)", f"{info['explanations']} ({info['users']} users)"),
            ("accepted on the first (greedy) attempt", f"{info['first_try_accepted']:.1%}"),
            ("accepted on the sampled retry", f"{info['retry_accepted']:.1%}"),
            ("evidence alone (reason rejected, or template fallback)", f"{info['template_fallback']:.1%}"),
            ("a rejected attempt cited an unwatched title / nothing", f"{info['attempts_with_grounding_problems']:.1%}"),
            ("a rejected attempt stated a wrong genre / year", f"{info['attempts_with_attribute_problems']:.1%}"),
            ("final texts grounded (re-validated)", f"{info['final_grounded']:.1%}"),
            ("final texts attribute-faithful (re-validated)", f"{info['final_attributes_faithful']:.1%}"),
            ("distinct texts", f"{info['distinct_share']:.1%}"),
            ("mean pairwise token Jaccard", f"{info['mean_pairwise_jaccard']:.3f}"),
            ("mean length (words)", f"{info['mean_words']:.1f}"),
            ("rejection reasons (counts)", ", ".join(f"{k} {v}" for k, v in info["problems"].items()) or "none")]
    claims = info.get("claims")
    if claims:
        rows += [("shipped generated parts stating something outside the catalog / history",
                  f"{claims['generated_outside']:.1%} of {claims['with_generated']}"),
                 ("claims outside (of all claims in shipped generated parts)", f"{claims['claims_outside']:.1%} of {claims['claims']}"),
                 ("claims by kind (outside / found)", ", ".join(f"{k} {v['outside']}/{v['found']}" for k, v in claims["by_kind"].items())),
                 ("all attempts (rejected ones too) stating something outside", f"{claims['attempts_outside']:.1%} of {claims['attempts']}")]
    support, information = info.get("support"), info.get("information")
    if support:
        rows += [("\"like X\" claims supported by co-watch figures (of all such claims in shipped texts)",
                  f"{support['like_supported']:.1%} of {support['like_claims']}")]
    if information:
        rows += [("shipped generated reasons adding information beyond the evidence",
                  f"{information['generated_informative']:.1%} of {information['with_generated']}"),
                 ("all attempts adding information beyond the evidence", f"{information['attempts_informative']:.1%} of {information['attempts']}")]
    lines = ["", f"## Explanations (top {info['k']} of `{info['method']}`)", "",
             "Each explanation is llmrec's filled-in evidence (co-watch figures, shared genres) plus one short generated reason; "
             "the validator checks both, the claim checker (`agents.claims`) rejects a reason that states what the catalog and the "
             "user's history cannot hold (a plot, a cast, an unwatched title), and a rejected reason is dropped, so final texts are "
             "grounded by construction. The rejection rates and the all-attempts claim rate measure the LLM itself; the shipped "
             "claim rate checks the filter (it should be 0). A reason adds information when it has a content word that the "
             "evidence, the item's genres (or a word for them, \"animated\", \"funny\"), title and year do not already give; "
             "one that adds none is dropped (`no-new-information`), and \"like X\" must be supported by co-watch figures.", "",
             "| measure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "", "Examples:", ""]
    lines += [f"- ({e['source']}) {e['item']}: {e['text']}" for e in info["examples"][:5]]
    if claims and claims["examples"]:
        lines += ["", "Generated parts with claims outside the catalog / history:", ""]
        lines += [f"- {e['item']}: \"{e['generated']}\" ({'; '.join(e['outside'])})" for e in claims["examples"][:5]]
    if information and information["examples"]:
        lines += ["", "Attempts that add nothing beyond the evidence:", ""]
        lines += [f"- {e['item']}: \"{e['generated']}\" after \"{e['evidence']}\"" for e in information["examples"][:5]]
    if support and support["examples"]:
        lines += ["", "\"Like X\" claims the co-watch figures do not support:", ""]
        lines += [f"- {e['item']} like {e['like']}: {e['text']}" for e in support["examples"][:5]]
    if info.get("final_failures"):
        lines += ["", "Final texts that fail the validator when checked again (a bug in the safety net):", ""]
        lines += [f"- user {f['user_id']}, item {f['item_id']} ({f['source']}, {', '.join(f['problems'])}): {f['text']}"
                  for f in info["final_failures"][:10]]
    return lines

