"""Degraded, not dead: the service (and the CLI) with the LLM server or Chroma down at start, then back.

The LLM test starts the app with `--llm-url` at a closed port (the app builds its own pipeline, as `llmrec serve`
does), checks `/readyz` and the degraded answers, then starts a real `llmrec serve-llm` on that port and sees the
same app recover without a restart. Starting vLLM's server takes a minute or more on 2 cores: marked slow."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmrec.testing import free_port
from tests.entrypoints.api.conftest import KEYS, bearer

LLM_SCENARIO = "movies-llm"


def _die_with_parent() -> None:
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no server outlives pytest


def wait_ready(client, timeout_s: float, proc=None, log=None) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        ready = client.get("/readyz")
        if ready.status_code == 200:
            return ready.json()
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the server exited: {log.read_text()[-3000:] if log else ''}")
        time.sleep(2)
    pytest.fail(f"not ready after {timeout_s} s: {client.get('/readyz').json()}")


def test_the_cli_answers_in_the_retrievers_order_when_the_llm_server_is_down(llm_settings):
    url = f"http://127.0.0.1:{free_port()}/v1"
    run = subprocess.run([sys.executable, "-m", "llmrec.entrypoints.cli", "recommend", "--scenario", LLM_SCENARIO, "--user", "196",
                          "--k", "5", "--json", "--llm-url", url], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "LLMREC_HOME": str(llm_settings.home)})
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(run.stdout)
    assert doc["degraded"] and doc["ranking"] == "retriever" and url in doc["degraded_reason"] and len(doc["recommendations"]) == 5
    assert "Traceback" not in run.stderr


@pytest.mark.slow
@pytest.mark.llm
def test_the_service_starts_with_the_llm_server_down_and_recovers_when_it_answers(llm_settings, tmp_path):
    from fastapi.testclient import TestClient

    from llmrec.entrypoints.api.app import create_app
    from llmrec.entrypoints.api.settings import ServiceSettings
    from llmrec.entrypoints.commands import serve_llm_command

    port = free_port()
    settings = llm_settings.model_copy(update={"llm_url": f"http://127.0.0.1:{port}/v1"})
    service = ServiceSettings(api_keys=",".join(KEYS), scenario=LLM_SCENARIO, rate_limit_per_minute=0)
    proc = None
    with TestClient(create_app(settings, service), raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["chroma"] == "ok", ready.text
        assert ready.json()["checks"]["llm"].startswith(f"unreachable: http://127.0.0.1:{port}/v1")
        down = client.post("/v1/recommend", json={"user_id": "196", "k": 5}).json()
        assert down["degraded"] and down["ranking"] == "retriever" and "the LLM was unavailable" in " ".join(down["notes"])
        chat = client.post("/v1/chat", json={"session_id": "deg-1", "user_id": "196", "message": "a comedy"}, headers=bearer(KEYS[0]))
        assert chat.status_code == 200 and chat.json()["degraded"] and chat.json()["recommendations"]
        assert 'llmrec_degraded_answers_total{kind="llm",route="/v1/recommend"} 1.0' in client.get("/metrics").text
        log = tmp_path / "vllm.log"
        try:
            with log.open("w") as out:
                proc = subprocess.Popen(serve_llm_command(settings, "127.0.0.1", port, {}), stdout=out, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
            assert wait_ready(client, 420, proc, log) == {"ready": True, "checks": {"llm": "ok", "chroma": "ok"}}
            up = client.post("/v1/recommend", json={"user_id": "196", "k": 5}).json()
            assert not up["degraded"] and up["ranking"] == "llm-fused" and up["model"] == down["model"]
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)


@pytest.mark.llm
def test_chroma_down_answers_from_cooccurrence_and_popularity_and_recovers(llm_settings, engine, tmp_path):
    from fastapi.testclient import TestClient

    from llmrec.agents.conversation import ChatConfig, build_agent
    from llmrec.entrypoints.api.app import create_app
    from llmrec.entrypoints.api.settings import ServiceSettings
    from llmrec.pipeline import build_pipeline

    port = free_port()
    settings = llm_settings.model_copy(update={"chroma_url": f"http://127.0.0.1:{port}"})
    pipeline = build_pipeline(settings, LLM_SCENARIO, engine=engine, progress=False, chroma_optional=True)
    agent = build_agent(settings, pipeline=pipeline, config=ChatConfig(store=tmp_path / "store"))
    service = ServiceSettings(api_keys=",".join(KEYS), rate_limit_per_minute=0)
    with TestClient(create_app(settings, service, pipeline=pipeline, agent=agent), raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["llm"] == "ok"
        assert ready.json()["checks"]["chroma"].startswith(f"unreachable: http://127.0.0.1:{port}")
        down = client.post("/v1/recommend", json={"user_id": "196", "k": 5}).json()
        assert len(down["recommendations"]) == 5 and any(n.startswith("Chroma was unavailable") for n in down["notes"])
        assert all("embedding" not in r for r in down["notes"])
        chat = client.post("/v1/chat", json={"session_id": "chroma-1", "message": "a comedy"}, headers=bearer(KEYS[0])).json()
        assert chat["degraded"] and chat["recommendations"]
        assert 'llmrec_degraded_answers_total{kind="chroma",route="/v1/recommend"} 1.0' in client.get("/metrics").text
        chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
        proc = subprocess.Popen([chroma, "run", "--path", str(tmp_path / "chroma"), "--host", "127.0.0.1", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        try:
            assert wait_ready(client, 120)["checks"]["chroma"] == "ok"
            up = client.post("/v1/recommend", json={"user_id": "196", "k": 5}).json()
            assert not any("Chroma" in n for n in up["notes"]) and len(up["recommendations"]) == 5
        finally:
            proc.terminate()
            proc.wait(timeout=30)
