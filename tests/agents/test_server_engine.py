"""The OpenAI-compatible engine against a real vLLM server on loopback, started as `llmrec serve-llm` starts it,
and its adapter checks against a tiny stand-in that serves only `/v1/models` (our own logic)."""

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

from llmrec.adapters.scenario import AdapterSpec
from llmrec.agents.engines import ServerVLLM
from llmrec.errors import AdapterMismatch

llm = pytest.mark.llm
LABELS = list("ABCDEFGHIJKLMNOPQRST")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(settings, model_dir, tiny_adapter, tmp_path_factory):
    """`llmrec serve-llm` with the tiny adapter, as a scenario with an adapter starts it."""
    from llmrec.commands import serve_llm_command

    adapter, _ = tiny_adapter
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    cmd = serve_llm_command(settings, "127.0.0.1", port, {adapter.name: adapter.path})
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 240
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
    from llmrec.commands import serve_llm_command

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
