"""Durable feedback against a real `llmrec serve` subprocess: SIGKILL mid-burst loses nothing acknowledged, and
SIGTERM lets the requests in flight finish and be acknowledged.

The server runs on a temporary home (symlinks to the real cache's data, models and index; its own
`conversations/` folder, where the feedback store lives) with `--llm-url` at a port where nothing listens: the
store does not need the LLM, so the server starts degraded in seconds instead of loading vLLM.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

KEY = "crash-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
SHARED = ("datasets", "models", "wheels", "chroma", "item-vectors")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's process: SIGTERM when pytest dies, so no server outlives its test."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    """`llmrec serve` on `home`, started and stopped by the test."""

    home: Path
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> Server:
        dead_llm = f"http://127.0.0.1:{free_port()}/v1"
        cmd = [sys.executable, "-m", "llmrec.entrypoints.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--scenario", "movies", "--llm-url", dead_llm]
        env = {**os.environ, "LLMREC_HOME": str(self.home), "LLMREC_API_KEYS": KEY, "LLMREC_RATE_LIMIT_PER_MINUTE": "1000000"}
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"llmrec serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        self.proc.kill()
        pytest.fail(f"llmrec serve did not answer /healthz in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve_home(tmp_path, home):
    """A fresh home: the real cache's data, models and index by symlink; no feedback store yet."""
    root = tmp_path / "home"
    for name in SHARED:
        (home / name).mkdir(parents=True, exist_ok=True)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(home / name)
    return root


@pytest.fixture
def catalog(home):
    from llmrec.data.datasets import load_dataset

    dataset = load_dataset("ml-100k", home)
    return sorted(dataset.users(), key=int), sorted(dataset.items, key=int)


def store_file(home: Path) -> Path:
    [path] = sorted((home / "conversations").glob("feedback-*.sqlite"))
    return path


def rows(path: Path) -> dict[int, tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        return {r[0]: (r[1], r[2], r[3]) for r in db.execute("SELECT id, user, item, event FROM feedback")}


@dataclass
class Burst:
    """Threads posting feedback, each event a distinct (user, item) pair, until the server stops answering."""

    url: str
    users: list[str]
    items: list[str]
    sent: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    acked: dict[int, dict] = field(default_factory=dict)  # event number -> the 201 body
    unanswered: set[int] = field(default_factory=set)
    refused: dict[int, int] = field(default_factory=dict)  # event number -> a status other than 201
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: itertools.count = field(default_factory=itertools.count)

    def event(self) -> tuple[int, tuple[str, str, str]]:
        with self.lock:
            n = next(self.counter)
            body = (self.users[n % 40], self.items[n // 40], "like" if n % 2 else "watch")
            self.sent[n] = body
        return n, body

    def worker(self) -> None:
        with httpx.Client(base_url=self.url, headers=HEADERS, timeout=30) as http:
            while True:
                n, (user, item, event) = self.event()
                try:
                    response = http.post("/v1/feedback", json={"user_id": user, "item_id": item, "event": event})
                except httpx.TransportError:
                    with self.lock:
                        self.unanswered.add(n)
                    return
                with self.lock:
                    if response.status_code == 201:
                        self.acked[n] = response.json()
                    else:
                        self.refused[n] = response.status_code


@pytest.mark.slow  # two server start-ups: 66-126 s on the shared 2-core machine
def test_sigkill_mid_burst_loses_no_acknowledged_event(serve_home, catalog, tmp_path):
    users, items = catalog
    server = Server(serve_home, tmp_path / "serve.log").start()
    burst = Burst(server.url, users, items)
    threads = [threading.Thread(target=burst.worker, daemon=True) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(burst.acked) < 200 and time.monotonic() < deadline and not burst.refused:
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGKILL)
        for t in threads:
            t.join(timeout=30)
        server.proc.wait()
    finally:
        server.stop()
    assert not burst.refused, f"feedback refused during the burst: {sorted(set(burst.refused.values()))}"
    assert len(burst.acked) >= 200, "the burst was too slow to reach 200 acknowledged events in 60 s"
    assert burst.unanswered, "SIGKILL landed between requests: no request was in flight"

    restarted = Server(serve_home, tmp_path / "serve.log").start()
    try:
        stored = rows(store_file(serve_home))
        # every acknowledged event is there, under the id the acknowledgement gave
        for n, ack in burst.acked.items():
            user, item, event = burst.sent[n]
            assert (ack["user"], ack["item"], ack["event"]) == (user, item, event)
            assert stored.get(ack["id"]) == (user, item, event), f"acknowledged event {ack} is missing after the restart"
        # nothing is stored that was not sent; what is stored beyond the acknowledged came from requests with no answer
        by_body = {body: n for n, body in burst.sent.items()}
        assert set(stored.values()) <= set(by_body)
        extra = {by_body[body] for body in stored.values()} - set(burst.acked)
        assert extra <= burst.unanswered and len(stored) == len(burst.acked) + len(extra)
        # the API says the same as the file: each user's likes here are its stored events (distinct items, no dislikes)
        per_user = {u: sum(1 for s in stored.values() if s[0] == u) for u in users[:40]}
        with httpx.Client(base_url=restarted.url, headers=HEADERS, timeout=30) as http:
            for user in users[:5]:
                profile = http.get(f"/v1/users/{user}/profile")
                assert profile.status_code == 200, profile.text
                assert profile.json()["likes_here"] == per_user[user]
            after = http.post("/v1/feedback", json={"user_id": users[0], "item_id": items[-1], "event": "like"})
        assert after.status_code == 201 and after.json()["id"] > max(stored)
    finally:
        restarted.stop()
    print(f"\nSIGKILL after {len(burst.acked)} acknowledged events; {len(burst.unanswered)} requests got no answer, "
          f"{len(extra)} of them were stored anyway (committed before the kill, the answer lost)")


def wait_for_connections(server: Server, count: int, timeout_s: float = 30) -> None:
    """Until the server process holds `count` accepted connections (requests it has taken and not answered)."""
    import psutil  # a dependency of vLLM

    process = psutil.Process(server.proc.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        accepted = [c for c in process.net_connections("tcp") if c.laddr and c.laddr.port == server.port and c.status == "ESTABLISHED"]
        if len(accepted) >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"the server took fewer than {count} connections in {timeout_s} s")


def test_sigterm_drains_requests_in_flight(serve_home, catalog, tmp_path):
    """Four feedback requests wait on a SQLite write lock the test holds; SIGTERM comes, then the lock is let go:
    each is committed and acknowledged, and the server exits cleanly (its lifespan closes the stores)."""
    users, items = catalog
    server = Server(serve_home, tmp_path / "serve.log").start()
    try:
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http:
            first = http.post("/v1/feedback", json={"user_id": users[0], "item_id": items[0], "event": "like"})
        assert first.status_code == 201, first.text
        path = store_file(serve_home)
        blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")  # the next writer waits on the store's busy timeout
        answers: dict[int, httpx.Response | Exception] = {}

        def post(n: int) -> None:
            try:
                answers[n] = httpx.post(f"{server.url}/v1/feedback", headers=HEADERS, timeout=60,
                                        json={"user_id": users[n], "item_id": items[n], "event": "like"})
            except httpx.HTTPError as exc:
                answers[n] = exc

        threads = [threading.Thread(target=post, args=(n,)) for n in range(1, 5)]
        for t in threads:
            t.start()
        wait_for_connections(server, 4)  # uvicorn has taken all four: they are in flight, waiting on the lock
        time.sleep(0.3)
        assert not answers, f"answered while the store was locked: {answers}"
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None, "the server exited with requests in flight"
        blocker.execute("COMMIT")
        blocker.close()
        for t in threads:
            t.join(timeout=60)
        exit_code = server.proc.wait(timeout=60)
    finally:
        server.stop()
    problems = {n: a for n, a in answers.items() if not isinstance(a, httpx.Response) or a.status_code != 201}
    assert not problems, f"in-flight requests not acknowledged through SIGTERM: {problems}"
    log = (tmp_path / "serve.log").read_text()
    # uvicorn re-raises the signal once it has drained, so a clean SIGTERM exit reads -15 (systemd counts it as clean)
    assert exit_code in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log[-3000:]
    stored = rows(path)
    for n, answer in answers.items():
        ack = answer.json()
        assert stored[ack["id"]] == (users[n], items[n], "like")
