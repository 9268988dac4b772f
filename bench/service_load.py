"""Benchmark (run by hand): `llmrec serve` under load, on loopback, bounded; it stops by itself.

    LLMREC_HOME=.llmrec .venv/bin/python bench/service_load.py --clients 4 --seconds 10 --json service-bench.json

N concurrent clients (asyncio + httpx) for M seconds per row, against servers it starts itself as
subprocesses (`llmrec serve` on a free loopback port, ready when `/readyz` answers 200). One run, side by side:
- `batched`: the in-process engine with concurrent requests batched into it: `/v1/feedback`, `/v1/recommend`
  without and with explanations, `/v1/chat`;
- `serial`: the same server with batching off (`LLMREC_BATCHING=false`: engine calls one at a time): `/v1/recommend`
  without and with explanations;
- `serve-llm`: `llmrec serve-llm` (vLLM's OpenAI-compatible server) behind `--llm-url`: `/v1/recommend`;
- `embedding`: the embedding ranker (two towers over the LLM's item vectors) instead of the verbalizer
  (listwise label log-probabilities): `/v1/recommend`.
The built-in `movies` scenario keeps the retriever's order (w = inf: the LLM never ranks), so the servers run on
a temporary LLMREC_HOME (symlinks to the real cache) with `movies-llm` (ML-100K, w = .25 set by hand, as
`tests/conftest.py` builds it) and `movies-emb` (an embedding adapter trained for one epoch and one seed, its grid's
best weight set by hand: an adapter for measuring speed, not quality). Every recommend row reports how many answers
the LLM (or the towers) really ranked (`ranking: llm-fused`). Users are drawn without replacement per server, so
vLLM's prefix cache never serves one request from another's prompt.

Prints a markdown table and writes every figure as JSON (`--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KEY = "bench-key"
ARMS = ("batched", "serial", "serve-llm", "embedding")
ENDPOINTS = ("feedback", "recommend", "recommend-explain", "chat")
SHARED = ("datasets", "models", "wheels", "chroma", "item-vectors")
MESSAGES = ("something like Star Wars but funnier", "a 90s comedy please", "no horror, maybe a thriller", "more like #2",
            "I loved Fargo", "an old western")
ARM_ENDPOINTS = {"serial": ("recommend", "recommend-explain"), "serve-llm": ("recommend",), "embedding": ("recommend",)}
"""The rows each arm runs (of `--endpoints`); `batched` runs them all."""
SERIAL_ENV = {"LLMREC_BATCHING": "false"}
"""The service setting that serves engine calls one at a time (`ServiceSettings`)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In a server's process: SIGTERM when the benchmark dies, so no server outlives it."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmrec.entrypoints.cli", *args]


def bench_home(work: Path, real: Path, arms: list[str]) -> Path:
    """A home sharing the real cache, with `movies-llm` (w = .25) and, for the embedding arm, `movies-emb`."""
    home = work / "home"
    for name in SHARED:
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        if not (home / name).exists():
            (real / name).mkdir(parents=True, exist_ok=True)
            (home / name).symlink_to(real / name)
    llm = home / "scenarios" / "movies-llm" / "scenario.json"
    llm.parent.mkdir(parents=True, exist_ok=True)
    llm.write_text(json.dumps({"name": "movies-llm", "dataset": "ml-100k", "domain": "movie", "fusion": {"weight": 0.25}}))
    if "embedding" in arms:
        emb = home / "scenarios" / "movies-emb" / "scenario.json"
        if not emb.exists() or "adapter" not in json.loads(emb.read_text()):
            emb.parent.mkdir(parents=True, exist_ok=True)
            emb.write_text(json.dumps({"name": "movies-emb", "dataset": "ml-100k", "domain": "movie"}))
            print("training a one-epoch, one-seed embedding adapter for the embedding arm (about a minute)", flush=True)
            subprocess.run(cli("adapters", "train", "--home", str(home), "--scenario", "movies-emb", "--objective", "embedding",
                               "--epochs", "1", "--seeds", "1"), check=True, stderr=subprocess.DEVNULL)
        scenario = json.loads(emb.read_text())
        fit = scenario["fusion"].get("fitted_on") or {}
        scenario["fusion"]["weight"] = fit.get("best_weight") or 1.0  # for speed: the towers rank whatever the gate said
        emb.write_text(json.dumps(scenario))
    return home


@contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path, ready_url: str, what: str, timeout_s: float = 400):
    """A server subprocess, yielded once `ready_url` answers 200; SIGTERM (then SIGKILL) on the way out."""
    import httpx

    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
    try:
        last = 0.0
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{what} exited with {proc.returncode} before it was ready:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(ready_url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            waited = time.perf_counter() - started
            if waited > timeout_s:
                raise SystemExit(f"{what} was not ready after {timeout_s:.0f} s (log: {log})")
            if waited - last >= 15:
                print(f"  waiting for {what}: {waited:.0f} s", flush=True)
                last = waited
            time.sleep(1)
        ready_s = time.perf_counter() - started
        print(f"  {what} ready in {ready_s:.0f} s", flush=True)
        yield ready_s, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Payloads:
    """Request bodies: recommend users drawn without replacement (one server's prefix cache never serves a repeat)."""

    def __init__(self, users: list[str], items: list[str], scenario: str, seed: int):
        self.rng = random.Random(seed)
        self.users, self.items, self.scenario = users, items, scenario
        order = list(users)
        self.rng.shuffle(order)
        self.fresh: Iterator[str] = itertools.cycle(order)  # repeats only once every user had a turn
        self.seed = seed

    def recommend(self, explain: bool) -> dict:
        return {"user_id": next(self.fresh), "k": 10, "scenario": self.scenario, "explain": explain}

    def feedback(self) -> dict:
        return {"user_id": self.rng.choice(self.users), "item_id": self.rng.choice(self.items),
                "event": self.rng.choice(("like", "watch", "dislike"))}

    def chat(self, client: int, turn: int) -> dict:
        """Three turns per session, each session with its own user."""
        session = (self.seed * 1000 + client) * 1000 + turn // 3
        return {"session_id": f"bench-{session}", "user_id": self.users[session % len(self.users)],
                "message": self.rng.choice(MESSAGES)}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def load(base: str, endpoint: str, clients: int, seconds: float, payloads: Payloads, tick) -> dict:
    """`clients` closed-loop clients for `seconds` (in-flight requests finish; they count)."""
    import httpx

    path = {"feedback": "/v1/feedback", "chat": "/v1/chat"}.get(endpoint, "/v1/recommend")
    ok_status = 201 if endpoint == "feedback" else 200
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    ranking: Counter[str] = Counter()
    stages: dict[str, list[float]] = {}
    degraded = 0
    started = time.perf_counter()
    deadline = started + seconds
    headers = {"Authorization": f"Bearer {KEY}"}

    async def client(n: int) -> None:
        nonlocal degraded
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=300, limits=limits) as http:
            for turn in itertools.count():
                if turn and time.perf_counter() >= deadline:  # every client sends at least one request
                    return
                body = (payloads.feedback() if endpoint == "feedback" else payloads.chat(n, turn) if endpoint == "chat"
                        else payloads.recommend(endpoint == "recommend-explain"))
                t = time.perf_counter()
                try:
                    response = await http.post(path, json=body)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                if response.status_code != ok_status:
                    errors[str(response.status_code)] += 1
                    continue
                latencies.append(time.perf_counter() - t)
                answer = response.json()
                degraded += bool(answer.get("degraded"))
                if endpoint.startswith("recommend"):
                    ranking[answer.get("ranking", "?")] += 1
                    for stage, took in (answer.get("timings_ms") or {}).items():
                        stages.setdefault(stage, []).append(took)
                tick()

    load_before = os.getloadavg()[0]
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return {"endpoint": endpoint, "clients": clients, "seconds": round(elapsed, 2), "ok": len(ms),
            "throughput_per_s": round(len(ms) / elapsed, 2), "p50_ms": _r(percentile(ms, 50)), "p95_ms": _r(percentile(ms, 95)),
            "p99_ms": _r(percentile(ms, 99)), "mean_ms": _r(statistics.fmean(ms) if ms else None), "errors": dict(errors),
            "degraded": degraded, "ranking": dict(ranking), "load_avg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "server_timings_mean_ms": {stage: round(statistics.fmean(v), 1) for stage, v in stages.items()}}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds so far of these processes and their live children (vLLM's engine core, if any)."""
    import psutil  # a dependency of vLLM

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def run_rows(base: str, arm: str, endpoints: list[str], clients: list[int], seconds: float, payloads: Payloads,
             pids: list[int]) -> list[dict]:
    """Every (endpoint, clients) row of one arm, each with the server's and the benchmark's own CPU time per answer
    (less sensitive than latency to other work on the machine)."""
    from tqdm.auto import tqdm

    # Warm-up, not counted: one request per client and endpoint (a vLLM server compiles a sampler helper on its first
    # requests; docs/environment.md), each from a user of its own like every later request.
    for endpoint in endpoints:
        warm = asyncio.run(load(base, endpoint, max(clients), 0, payloads, lambda: None))
        print(f"  {arm:<9} {endpoint:<17} warm-up: {warm['ok']} ok, slowest {warm['p99_ms']} ms", flush=True)
    rows = []
    for endpoint, n in itertools.product(endpoints, clients):
        server_cpu, client_cpu = cpu_seconds(pids), time.process_time()
        with tqdm(desc=f"{arm} {endpoint} x{n}", unit="req", total=None, leave=False) as bar:
            row = asyncio.run(load(base, endpoint, n, seconds, payloads, lambda: bar.update()))
        answers = max(1, row["ok"])
        row["server_cpu_ms_per_answer"] = round((cpu_seconds(pids) - server_cpu) * 1000 / answers, 1)
        row["client_cpu_ms_per_answer"] = round((time.process_time() - client_cpu) * 1000 / answers, 1)
        row["arm"] = arm
        print(f"  {arm:<9} {endpoint:<17} x{n}: {row['throughput_per_s']:>7.1f}/s p50 {row['p50_ms']} ms p95 {row['p95_ms']} ms "
              f"errors {sum(row['errors'].values())}", flush=True)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> dict:
    from llmrec.data.datasets import load_dataset
    from llmrec.settings import Settings

    real = Settings().resolved_home()
    work = Path(args.work or tempfile.mkdtemp(prefix="llmrec-service-bench-"))
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    home = bench_home(work, real, arms)
    dataset = load_dataset("ml-100k", real)
    users, items = sorted(dataset.users()), sorted(dataset.items)
    clients = [int(c) for c in args.clients.split(",")]
    env = {**os.environ, "LLMREC_HOME": str(home), "LLMREC_API_KEYS": KEY, "LLMREC_RATE_LIMIT_PER_MINUTE": "1000000",
           "VLLM_LOGGING_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false"}
    rows, startup = [], {}
    ceiling = store_ceiling(work, dataset.items)
    for arm in arms:
        print(f"arm {arm}", flush=True)
        scenario = "movies-emb" if arm == "embedding" else "movies-llm"
        endpoints = ARM_ENDPOINTS.get(arm, ENDPOINTS)
        endpoints = [e for e in args.endpoints.split(",") if e in endpoints]
        port = free_port()
        serve = cli("serve", "--port", str(port), "--host", "127.0.0.1", "--scenario", scenario)
        arm_env = {**env, **(SERIAL_ENV if arm == "serial" else {})}
        payloads = Payloads(users, items, scenario, seed=len(rows))
        base = f"http://127.0.0.1:{port}"
        with _llm_server(arm, home, env, work) as (llm_url, llm_proc):
            if llm_url:
                serve += ["--llm-url", llm_url]
            with process(serve, arm_env, work / f"serve-{arm}.log", f"{base}/readyz", f"llmrec serve ({arm})") as (ready_s, proc):
                startup[arm] = round(ready_s, 1)
                pids = [proc.pid] + ([llm_proc.pid] if llm_proc else [])
                arm_rows = run_rows(base, arm, endpoints, clients, args.seconds, payloads, pids)
                merged = batching(base)
                rows += [{**row, "engine_batching": merged} for row in arm_rows]
    return {"rows": rows, "startup_s": startup, "store_alone": ceiling, "cpu": cpu(), "clients": clients, "seconds": args.seconds,
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "work": str(work)}


def batching(base: str) -> dict[str, dict[str, float]]:
    """From the server's /metrics, over its whole run (warm-up included): engine calls by kind, and the callers' calls
    merged into each on average; empty with batching off."""
    import httpx

    values: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith("llmrec_engine_batch_calls_") and not line.startswith("llmrec_engine_batch_calls_bucket"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    out = {}
    for kind in ("score", "generate"):
        count, total = values.get(f'llmrec_engine_batch_calls_count{{kind="{kind}"}}'), values.get(f'llmrec_engine_batch_calls_sum{{kind="{kind}"}}')
        if count:
            out[kind] = {"engine_calls": int(count), "calls_merged_mean": round(total / count, 2)}
    return out


@contextmanager
def _llm_server(arm: str, home: Path, env: dict[str, str], work: Path):
    if arm != "serve-llm":
        yield None, None
        return
    port = free_port()
    cmd = cli("serve-llm", "--home", str(home), "--scenario", "movies-llm", "--port", str(port))
    with process(cmd, env, work / "serve-llm.log", f"http://127.0.0.1:{port}/v1/models", "llmrec serve-llm") as (_, proc):
        yield f"http://127.0.0.1:{port}/v1", proc


def store_ceiling(work: Path, items: dict, seconds: float = 3.0) -> dict:
    """The feedback store's own rate, no HTTP: `FeedbackStore.record` from one thread, then from four at once, each
    on a fresh file in `work`. Every event is committed (WAL, synchronous=FULL: an fsync per commit) before `record`
    returns; four threads share commits (group commit), so their rate over one thread's is what grouping buys on this
    disk. This bounds what `/v1/feedback` can acknowledge, whatever the clients."""
    import threading

    from llmrec.agents.feedback import FeedbackStore

    result: dict = {}
    for threads in (1, 4):
        store = FeedbackStore(work / "store-probe" / f"feedback-probe-{threads}.sqlite", items)
        ids, counts, started = sorted(items), [0] * threads, time.perf_counter()

        def run(t: int, store=store, ids=ids, counts=counts, started=started) -> None:
            while time.perf_counter() - started < seconds:
                store.record(f"{t}-{counts[t] % 50}", ids[counts[t] % len(ids)], "like")
                counts[t] += 1

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - started
        result[f"events_per_s_{threads}_threads"] = round(sum(counts) / elapsed, 1)
        result |= {"synchronous": store.pragma("synchronous"), "journal_mode": store.journal_mode()}
        store.close()
    result["commits_per_s"] = result["events_per_s_1_threads"]  # one thread: one commit per event
    print(f"feedback store alone (no HTTP): {result['events_per_s_1_threads']:.0f} events/s from one thread, "
          f"{result['events_per_s_4_threads']:.0f} from four (group commit)", flush=True)
    return result


def cpu() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                  if line.startswith("Model name")), platform.processor())
    flags = set(Path("/proc/cpuinfo").read_text().split())
    return {"model": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def markdown(result: dict) -> str:
    lines = ["| arm | endpoint | clients | req/s | p50 ms | p95 ms | p99 ms | ok | errors | LLM-ranked | degraded | "
             "server ms: retrieve / rank / explain | CPU ms per answer: server / client | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ranked = f"{r['ranking'].get('llm-fused', 0)}/{r['ok']}" if r["endpoint"].startswith("recommend") else "-"
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        timing = r["server_timings_mean_ms"]
        stages = " / ".join(f"{timing[s]:.0f}" if s in timing else "-" for s in ("retrieve", "rank", "explain")) if timing else "-"
        lines.append(f"| {r['arm']} | {r['endpoint']} | {r['clients']} | {r['throughput_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
                     f"{r['p99_ms']} | {r['ok']} | {errors} | {ranked} | {r['degraded']} | {stages} | "
                     f"{r['server_cpu_ms_per_answer']:.0f} / {r['client_cpu_ms_per_answer']:.0f} | {r['load_avg_1min'][1]} |")
    c = result["cpu"]
    lines.append(f"\nCPU: {c['model']}, {c['cores']} cores, avx512_bf16 {c['avx512_bf16']}, amx_bf16 {c['amx_bf16']}; "
                 f"{result['seconds']} s per row; load: the 1-minute load average after each row (other work on the machine "
                 f"counts); server start-up to /readyz: "
                 + ", ".join(f"{arm} {s} s" for arm, s in result["startup_s"].items()))
    store = result["store_alone"]
    four = f"; four threads at once (group commit): {store['events_per_s_4_threads']} events/s" if "events_per_s_4_threads" in store else ""
    lines.append(f"The feedback store alone (no HTTP; journal {store['journal_mode']}, synchronous {store['synchronous']}): "
                 f"one thread {store['commits_per_s']} commits/s{four}.")
    merged = {r["arm"]: r["engine_batching"] for r in result["rows"] if r["engine_batching"]}
    if merged:
        lines.append("Callers' engine calls merged per engine call (its /metrics, warm-up included): " + "; ".join(
            f"{arm} " + ", ".join(f"{kind} {v['calls_merged_mean']} over {v['engine_calls']} calls" for kind, v in m.items())
            for arm, m in merged.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="4", help="concurrent clients, or a comma-separated list (e.g. 1,4,8)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per row (in-flight requests then finish)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help=(
        f"rows, of: {', '.join(ENDPOINTS)}; the batched arm runs each, serial only recommend and recommend-explain, "
        "serve-llm and embedding only recommend"))
    parser.add_argument("--work", help="folder for the temporary home and server logs (default: a new temporary folder); "
                                       "reusing one reuses its embedding adapter")
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()
    unknown = {a.strip() for a in args.arms.split(",")} - set(ARMS) | {e for e in args.endpoints.split(",") if e} - set(ENDPOINTS)
    if unknown:
        parser.error(f"unknown arm or endpoint: {', '.join(sorted(unknown))}")
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
