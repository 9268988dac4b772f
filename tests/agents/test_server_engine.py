"""The OpenAI-compatible engine against a real vLLM server on loopback, started as `llmrec serve-llm` starts it."""

import os
import socket
import subprocess
import time

import pytest

from llmrec.agents.engines import ServerVLLM

pytestmark = pytest.mark.llm
LABELS = list("ABCDEFGHIJKLMNOPQRST")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(settings, model_dir, tmp_path_factory):
    from llmrec.commands import serve_llm_command

    port = free_port()
    log = tmp_path_factory.mktemp("server") / "vllm.log"
    cmd = serve_llm_command(settings, "127.0.0.1", port, {})
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


def test_server_scores_match_the_in_process_engine(server, engine):
    prompt = engine.chat_prompt("You are a movie recommender.", "Watched: Heat.\nCandidates:\n" +
                                "\n".join(f"{label}. Film {i}" for i, label in enumerate(LABELS)) + "\nAnswer with the letter.", "Answer:")
    ids = engine.label_token_ids(LABELS)
    [remote] = server.score_next_token([prompt], ids)
    [local] = engine.score_next_token([prompt], ids)
    assert remote == pytest.approx(local, abs=0.02)


def test_server_generates_and_fails_clearly_when_gone(server):
    [text] = server.generate([server.chat_prompt("Be brief.", "Name a colour.")], max_tokens=8)
    assert text.strip()
    from llmrec.errors import LLMUnavailable

    with pytest.raises(LLMUnavailable, match="no vLLM server answers"):
        ServerVLLM(f"http://127.0.0.1:{free_port()}/v1", tokenizer_source=server._tokenizer_source, timeout_s=2)
