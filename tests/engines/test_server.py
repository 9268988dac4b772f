"""The OpenAI-compatible engine against a real vLLM server on loopback, started as `llmrec serve-llm` starts it
(every scenario's LoRA adapter at once, and native tool calling), and its adapter checks against a tiny stand-in
that serves only `/v1/models` (our own logic)."""

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmrec.engines.vllm import ServerVLLM
from llmrec.errors import AdapterMismatch
from llmrec.scenario import AdapterSpec

llm = pytest.mark.llm
LABELS = list("ABCDEFGHIJKLMNOPQRST")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's process: SIGTERM when pytest dies (even by SIGKILL), so no server outlives its test run."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def scenario_home(home: Path, adapters: dict[str, AdapterSpec | None]) -> Path:
    """A cache home holding one user scenario per entry ({scenario name: its adapter}), as `llmrec` writes them."""
    for name, adapter in adapters.items():
        path = home / "scenarios" / name / "scenario.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"name": name, "dataset": "ml-100k", "adapter": adapter and adapter.model_dump()}))
    return home


def embedding_folder(path: Path, base: str) -> AdapterSpec:
    """An `embedding` adapter's folder as far as serving reads it: its manifest names the objective (no PEFT files)."""
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"objective": "embedding", "base_model": {"path": base}}))
    return AdapterSpec(name="movies-embedding", path=str(path))


@pytest.fixture(scope="module")
def server(settings, model_dir, tiny_adapter, second_adapter, tmp_path_factory):
    """`llmrec serve-llm` as it starts with three scenarios: two with real LoRA adapters (served at once, each under its
    name) and one with an embedding adapter (left out); tool calling on, with the xlam parser."""
    from llmrec.entrypoints.commands import serve_llm_command
    from llmrec.scenario import served_adapters

    root = tmp_path_factory.mktemp("server")
    home = scenario_home(root / "home", {"tiny-a": tiny_adapter[0], "tiny-b": second_adapter[0],
                                         "tiny-emb": embedding_folder(root / "embedding", model_dir)})
    adapters, notes = served_adapters(home)
    assert adapters == {tiny_adapter[0].name: tiny_adapter[0].path, second_adapter[0].name: second_adapter[0].path}, notes
    port = free_port()
    log = root / "vllm.log"
    cmd = serve_llm_command(settings, "127.0.0.1", port, adapters, tool_parser="xlam")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    engine = None
    while time.time() < deadline and proc.poll() is None:
        try:
            engine = ServerVLLM(url, tokenizer_source=model_dir, timeout_s=120)
            break
        except Exception:
            time.sleep(2)
    if engine is None:
        proc.kill()
        pytest.fail(f"vLLM server did not start: {log.read_text()[-3000:]}")
    yield engine
    proc.terminate()
    proc.wait(timeout=30)


def rank_prompt(engine) -> str:
    return engine.chat_prompt("You are a movie recommender.", "Watched: Heat.\nCandidates:\n" +
                              "\n".join(f"{label}. Film {i}" for i, label in enumerate(LABELS)) + "\nAnswer with the letter.", "Answer:")


@llm
def test_server_scores_match_the_in_process_engine(server, engine):
    prompt = engine.chat_prompt("You are a movie recommender.", "Watched: Heat.\nCandidates:\n" +
                                "\n".join(f"{label}. Film {i}" for i, label in enumerate(LABELS)) + "\nAnswer with the letter.", "Answer:")
    ids = engine.label_token_ids(LABELS)
    [remote] = server.score_next_token([prompt], ids)
    [local] = engine.score_next_token([prompt], ids)
    assert remote == pytest.approx(local, abs=0.02)


@llm
def test_server_generates_and_fails_clearly_when_gone(server):
    [text] = server.generate([server.chat_prompt("Be brief.", "Name a colour.")], max_tokens=8)
    assert text.strip()
    from llmrec.errors import LLMUnavailable

    with pytest.raises(LLMUnavailable, match="no vLLM server answers"):
        ServerVLLM(f"http://127.0.0.1:{free_port()}/v1", tokenizer_source=server._tokenizer_source, timeout_s=2)


@llm
def test_real_server_reports_its_base_and_serves_the_checked_adapter(server, engine, tiny_adapter, model_dir):
    adapter, _ = tiny_adapter
    cards = {c["id"]: c for c in server._model_cards()}
    assert cards[server.model_name]["root"] == model_dir and server.model_name == engine.model_name  # one name for the fit
    assert cards[adapter.name]["parent"] == server.model_name and cards[adapter.name]["root"] == adapter.path
    prompt = engine.chat_prompt("You are a movie recommender.", "Watched: Heat.\nCandidates:\n" +
                                "\n".join(f"{label}. Film {i}" for i, label in enumerate(LABELS)) + "\nAnswer with the letter.", "Answer:")
    ids = engine.label_token_ids(LABELS)
    [remote] = server.score_next_token([prompt], ids, adapter)
    [local] = engine.score_next_token([prompt], ids, adapter)
    assert remote == pytest.approx(local, abs=0.02)
    with pytest.raises(AdapterMismatch, match="does not serve adapter 'other'"):
        server.score_next_token([prompt], ids, AdapterSpec(name="other", path=adapter.path))


@llm
def test_one_server_serves_two_adapters_each_as_the_in_process_engine_does(server, engine, tiny_adapter, second_adapter):
    """Both scenarios' adapters at once: each request's `model` picks its own adapter, alone or batched together with
    the other's and a base request, and each scores as the in-process engine scores with that adapter loaded."""
    from concurrent.futures import ThreadPoolExecutor

    first, second = tiny_adapter[0], second_adapter[0]
    prompt, ids = rank_prompt(engine), engine.label_token_ids(LABELS)
    [base] = server.score_next_token([prompt], ids)
    [a] = server.score_next_token([prompt], ids, first)
    [b] = server.score_next_token([prompt], ids, second)
    gap = max(abs(x - y) for x, y in zip(a, b))
    print(f"\nmeasured: max |a-b| {gap:.4f}, max |a-base| {max(abs(x - y) for x, y in zip(a, base)):.4f}, "
          f"max |b-base| {max(abs(x - y) for x, y in zip(b, base)):.4f}")
    assert gap > 0.1  # the two adapters' label scores differ by far more than the engines' tolerance (0.02)
    engine.release_adapters()  # the session engine has one LoRA slot: each adapter in turn
    try:
        [local_a] = engine.score_next_token([prompt], ids, first)
        engine.release_adapters()
        [local_b] = engine.score_next_token([prompt], ids, second)
    finally:
        engine.release_adapters()
    print(f"measured: max |server-engine| a {max(abs(x - y) for x, y in zip(a, local_a)):.4f}, "
          f"b {max(abs(x - y) for x, y in zip(b, local_b)):.4f}")
    assert a == pytest.approx(local_a, abs=0.02) and b == pytest.approx(local_b, abs=0.02)
    with ThreadPoolExecutor(3) as pool:  # in flight together, so vLLM batches the three with their own adapters
        mixed = list(pool.map(lambda adapter: server.score_next_token([prompt], ids, adapter)[0], [second, None, first] * 2))
    for got, want in zip(mixed, [b, base, a] * 2):
        assert got == pytest.approx(want, abs=0.02)


@llm
def test_the_tool_planner_calls_a_real_tool_through_the_real_server(server, settings, pipeline, tmp_path):
    """Native tool calling against `serve-llm --tool-call-parser`: the first step names `recommend` as `tool_choice`,
    so vLLM decodes SmolLM2's call under the tool's JSON schema; the tool runs on the real pipeline and its items
    are the reply's list."""
    from langchain_openai import ChatOpenAI

    from llmrec.agents.conversation import ChatConfig, build_agent
    from llmrec.agents.tools import RecommendArgs

    served = settings.model_copy(update={"llm_url": server.url})
    model = ChatOpenAI(base_url=server.url, model=server.model_name, api_key="EMPTY", max_retries=0, timeout=120,
                       temperature=0.0, max_tokens=64)  # capped: the free-text last step of a 135M model is noise
    agent = build_agent(served, pipeline=pipeline, model=model,
                        config=ChatConfig(store=tmp_path, planner="tools", llm_understanding=False))
    calls: list[tuple[dict, object]] = []
    run_tool = agent.planner._call

    def spy(call, last):  # records what the real tool got and returned; the tool itself runs unchanged
        result, last = run_tool(call, last)
        calls.append((call, result))
        return result, last

    agent.planner._call = spy
    result = agent.say("tools-real", "three funny movies from the 90s", user_id="196")
    assert result.trace == ("understand", "tools", "reply")
    call, returned = calls[0]
    print(f"\nmeasured: tool call {call['name']} {json.dumps(call['args'])} ({len(calls)} call(s))")
    assert call["name"] == "recommend" and call["id"].startswith("chatcmpl-tool")  # made by vLLM, not by us
    RecommendArgs.model_validate(call["args"])  # the model's own arguments, under the tool's pydantic schema
    assert isinstance(returned, dict) and returned["items"], returned  # the tool ran on the real pipeline
    assert [r.item.item_id for r in result.items] == [i["item_id"] for i in returned["items"]]
    assert all(f"{r.rank}. {r.item.label()}" in result.reply for r in result.items)


# --- the server's adapter checks against a stand-in /v1/models (our own logic, no vLLM) ----------------------

class _Models(BaseHTTPRequestHandler):
    cards: list[dict] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"object": "list", "data": self.cards}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def models_server():
    """A loopback server answering `/v1/models` with the cards a test sets, shaped as vLLM 0.32 writes them."""
    handler = type("Models", (_Models,), {"cards": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def cards(base_root: str, adapter: str = "movies", adapter_root: str = "/srv/adapter") -> list[dict]:
    base = {"id": "SmolLM2-135M-Instruct", "object": "model", "owned_by": "vllm", "root": base_root, "parent": None}
    return [base, {"id": adapter, "object": "model", "owned_by": "vllm", "root": adapter_root, "parent": base["id"]}]


def peft_folder(path: Path, base: str) -> AdapterSpec:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "base_model_name_or_path": base}))
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    return AdapterSpec(name="movies", path=str(path))


def test_server_with_the_adapters_base_and_folder_passes(models_server, model_dir, tmp_path):
    handler, url = models_server
    adapter = peft_folder(tmp_path / "a", model_dir)
    handler.cards = cards(model_dir, adapter_root=adapter.path)
    engine = ServerVLLM(url, tokenizer_source=model_dir, timeout_s=5)
    engine.check_adapter(adapter)
    assert engine.model_name == "SmolLM2-135M-Instruct"
    copy = tmp_path / "copy"
    shutil.copytree(adapter.path, copy)  # the same bytes elsewhere: the server's folder is the same adapter
    handler.cards = cards(model_dir, adapter_root=str(copy))
    ServerVLLM(url, tokenizer_source=model_dir, timeout_s=5).check_adapter(adapter)


@pytest.mark.parametrize(("base", "adapter_name", "root_bytes", "error"), [
    ("someone-else/SmolLM2-135M-Instruct", "movies", None, "was built for base model"),
    (None, "other", None, "does not serve adapter 'movies'"),
    (None, "movies", b"other weights", "whose files differ"),
])
def test_server_mismatches_are_refused(models_server, model_dir, tmp_path, base, adapter_name, root_bytes, error):
    handler, url = models_server
    adapter = peft_folder(tmp_path / "a", model_dir)
    root = adapter.path
    if root_bytes is not None:  # the server loaded a same-named adapter from another folder, with other weights
        other = tmp_path / "b"
        shutil.copytree(adapter.path, other)
        (other / "adapter_model.safetensors").write_bytes(root_bytes)
        root = str(other)
    handler.cards = cards(base or model_dir, adapter=adapter_name, adapter_root=root)
    with pytest.raises(AdapterMismatch, match=error) as caught:
        ServerVLLM(url, tokenizer_source=model_dir, timeout_s=5).score_next_token(["p"], [1, 2], adapter)
    assert caught.value.exit_code == 6


def test_build_pipeline_checks_a_server_engine_too(models_server, model_dir, tmp_path, settings):
    """`--llm-url` used to skip the adapter check entirely (it looked for an in-process engine's config)."""
    from llmrec.pipeline import build_pipeline

    handler, url = models_server
    adapter = peft_folder(tmp_path / "a", model_dir)
    handler.cards = cards("someone-else/SmolLM2-135M-Instruct", adapter_root=adapter.path)
    home = tmp_path / "home"
    home.mkdir()
    real = settings.resolved_home()
    for name in ("datasets", "models", "wheels", "chroma"):
        (home / name).symlink_to(real / name)
    scenario = home / "scenarios" / "with-adapter" / "scenario.json"
    scenario.parent.mkdir(parents=True)
    scenario.write_text(json.dumps({"name": "with-adapter", "dataset": "ml-100k", "adapter": {"name": "movies", "path": adapter.path}}))
    engine = ServerVLLM(url, tokenizer_source=model_dir, timeout_s=5)
    with pytest.raises(AdapterMismatch, match="someone-else"):
        build_pipeline(settings.model_copy(update={"home": home}), "with-adapter", engine=engine, progress=False)


def test_serve_llm_checks_adapters_before_starting_the_server(settings, model_dir, tmp_path):
    from llmrec.entrypoints.commands import serve_llm_command

    good = peft_folder(tmp_path / "good", model_dir)
    cmd = serve_llm_command(settings, "127.0.0.1", 8000, {good.name: good.path})
    assert cmd[cmd.index("--served-model-name") + 1] == "SmolLM2-135M-Instruct"  # the in-process engine's name
    wide = peft_folder(tmp_path / "wide", model_dir)
    config = Path(wide.path) / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "r": 64}))
    with pytest.raises(AdapterMismatch, match="LoRA rank 64"):
        serve_llm_command(settings, "127.0.0.1", 8000, {"wide": wide.path})
    foreign = peft_folder(tmp_path / "foreign", "someone-else/SmolLM2-135M-Instruct")
    with pytest.raises(AdapterMismatch, match="someone-else"):
        serve_llm_command(settings, "127.0.0.1", 8000, {"foreign": foreign.path})


# --- which adapters `serve-llm` serves: every scenario's LoRA, never an embedding adapter (our own logic) -------

def test_every_scenarios_lora_adapter_is_served_and_embedding_ones_are_skipped(settings, model_dir, tmp_path):
    from llmrec.entrypoints.commands import serve_llm_command
    from llmrec.scenario import served_adapters

    a, b = peft_folder(tmp_path / "a", model_dir), peft_folder(tmp_path / "b", model_dir)
    a, b = a.model_copy(update={"name": "tuned-a"}), b.model_copy(update={"name": "tuned-b"})
    (Path(b.path) / "adapter_model.safetensors").write_bytes(b"other weights")
    home = scenario_home(tmp_path / "home", {"sa": a, "sb": b, "sa-copy": a, "plain": None,
                                             "emb": embedding_folder(tmp_path / "emb", model_dir)})
    adapters, notes = served_adapters(home)
    assert adapters == {"tuned-a": a.path, "tuned-b": b.path}  # the builtin `movies` has none; sa-copy shares sa's
    assert len(notes) == 1 and "scenario emb" in notes[0] and "embedding adapter" in notes[0]
    assert served_adapters(home, "sb") == ({"tuned-b": b.path}, [])
    assert served_adapters(home, "emb")[0] == {} and served_adapters(home, "movies") == ({}, [])
    cmd = serve_llm_command(settings, "127.0.0.1", 8000, adapters)
    assert cmd[cmd.index("--max-loras") + 1] == "3"  # one slot above the adapters (vLLM 0.32's base-request bug)
    assert cmd[cmd.index("--lora-modules") + 1:][:2] == [f"tuned-a={a.path}", f"tuned-b={b.path}"]
    assert "--tool-call-parser" not in cmd
    tools = serve_llm_command(settings, "127.0.0.1", 8000, adapters, tool_parser="xlam")
    assert tools[tools.index("--tool-call-parser") + 1] == "xlam" and "--enable-auto-tool-choice" in tools


def test_two_adapters_of_one_name_from_different_files_are_refused(model_dir, tmp_path):
    from llmrec.scenario import served_adapters

    a = peft_folder(tmp_path / "a", model_dir)
    copy = tmp_path / "copy"
    shutil.copytree(a.path, copy)  # the same bytes in another folder: the same adapter, served once
    home = scenario_home(tmp_path / "home", {"s1": a, "s2": a.model_copy(update={"path": str(copy)})})
    assert served_adapters(home)[0] == {"movies": a.path}
    other = peft_folder(tmp_path / "other", model_dir)
    (Path(other.path) / "adapter_model.safetensors").write_bytes(b"other weights")
    scenario_home(home, {"s3": other})
    with pytest.raises(AdapterMismatch, match="scenarios 's1' and 's3' both name adapter 'movies', from different files") as caught:
        served_adapters(home)
    assert caught.value.exit_code == 6
    assert served_adapters(home, "s3")[0] == {"movies": other.path}  # --scenario serves one alone


def test_serve_llm_print_only_lists_every_adapter_and_fails_in_one_line(model_dir, tmp_path, capsys):
    from llmrec.entrypoints.cli import main

    a = peft_folder(tmp_path / "a", model_dir)
    home = scenario_home(tmp_path / "home", {"sa": a, "emb": embedding_folder(tmp_path / "emb", model_dir)})
    args = ["serve-llm", "--print-only", "--home", str(home), "--model", model_dir]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert f"--lora-modules movies={a.path}" in out and "--max-loras 2" in out
    assert "scenario emb: adapter 'movies-embedding' is an embedding adapter" in err and "1 adapter(s): movies" in err
    assert main([*args, "--scenario", "emb"]) == 0 and "--enable-lora" not in capsys.readouterr().out
    assert main([*args, "--tool-call-parser", "xlam"]) == 0 and "--tool-call-parser xlam" in capsys.readouterr().out
    broken = peft_folder(tmp_path / "broken", "someone-else/SmolLM2-135M-Instruct")
    scenario_home(home, {"sb": broken.model_copy(update={"name": "other"})})
    assert main(args) == 6
    err = capsys.readouterr().err
    assert "llmrec: error: adapter 'other' was built for base model 'someone-else/SmolLM2-135M-Instruct'" in err and "Traceback" not in err
