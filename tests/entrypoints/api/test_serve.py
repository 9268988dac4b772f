"""`llmrec serve` as a process: it prints its URL, listens on loopback, and on SIGTERM lets a request in flight finish
before it exits. The request is kept in flight by a stand-in LLM server that answers `/v1/models` and takes 4 s to
fail each completion (so the answer comes degraded, in the retriever's order); no vLLM is loaded."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from llmrec.testing import free_port
from tests.entrypoints.api.conftest import KEYS

pytestmark = pytest.mark.slow


class SlowLLM(BaseHTTPRequestHandler):
    model = ""

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's name
        self._send(200, {"object": "list", "data": [{"id": self.model, "object": "model", "root": self.model, "parent": None}]})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(4)
        self._send(503, {"error": {"message": "stand-in: busy"}})


def test_serve_prints_its_url_and_drains_a_request_in_flight_on_sigterm(llm_settings, model_dir, tmp_path):
    from llmrec.manifest import display_name

    SlowLLM.model = display_name(model_dir)
    llm = ThreadingHTTPServer(("127.0.0.1", 0), SlowLLM)
    threading.Thread(target=llm.serve_forever, daemon=True).start()
    port = free_port()
    env = {**os.environ, "LLMREC_HOME": str(llm_settings.home), "LLMREC_API_KEYS": KEYS[0], "LLMREC_DRAIN_S": "30",
           "LLMREC_CHAT_STORE": str(tmp_path / "store")}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llmrec.entrypoints.cli", "serve", "--port", str(port), "--scenario", "movies-llm",
                                 "--llm-url", f"http://127.0.0.1:{llm.server_address[1]}/v1"], stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert f"at {base}/ (OpenAPI: /docs)" in log.read_text()
        assert httpx.get(f"{base}/readyz", timeout=10).json() == {"ready": True, "checks": {"llm": "ok", "chroma": "ok"}}
        answer: dict = {}

        def in_flight():
            answer["response"] = httpx.post(f"{base}/v1/recommend", json={"user_id": "196", "k": 5}, timeout=60)

        request = threading.Thread(target=in_flight)
        request.start()
        time.sleep(1.5)  # the request now waits for the stand-in's 4 s
        proc.send_signal(signal.SIGTERM)
        request.join(timeout=60)
        response = answer["response"]
        assert response.status_code == 200 and response.json()["degraded"] and response.json()["ranking"] == "retriever"
        # uvicorn ends by raising the signal it caught again, once the drain is over: the exit a supervisor expects.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM), log.read_text()[-3000:]
        assert "Waiting for connections to close" in log.read_text()
        assert "Traceback" not in log.read_text() and KEYS[0] not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        llm.shutdown()
