"""A meta-learned start for the `embedding` objective's towers: Reptile over user groups of source scenarios.

`llmrec adapters meta --from movies --into movies-meta` learns tower weights θ that few-shot training adapts
quickly, and saves them as an ordinary `embedding` adapter in a new scenario, so `--init-from` / `--meta-from` can
start from them. A *task* is a seeded group of `task_users` training users of one source scenario (their training
prefixes' next-item examples; validation and test targets are never trained on). Each meta-iteration adapts θ to
`meta_batch` tasks with `inner_steps` steps of the existing tower training (fresh AdamW, the same learning rate,
weight decay and batch size as `adapters.embedding`, a full softmax over that source's catalog) and moves θ toward
the adapted weights: θ ← θ + ε·mean(θ′ − θ), ε annealed linearly from `epsilon` to `epsilon_end`.

Reptile (Nichol, Achiam & Schulman 2018) rather than first-order MAML: its inner loop is exactly the few-shot
fine-tuning the curve runs on the target (several AdamW steps, not one SGD step), it needs no support/query split
of a task's examples (FOMAML's outer gradient is taken on a held-out query batch at θ′), and with more than one inner
step its update carries the same first-order term that favours weights whose gradients agree across tasks.

The towers act on item vectors standardised per catalog (`adapters.embedding.standardisation`), so tasks from
several catalogs share θ while each keeps its own centre and scale; the adapter keeps the first source's. θ's
validation NDCG@10 (full ranking, a seeded sample of each source's validation users) is recorded along the way as
a check; the last θ is kept.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from llmrec.adapters.embedding import TrainableTowers, TrainResult, save_adapter
from llmrec.adapters.towers_data import Examples, next_item_examples, validation_ndcg
from llmrec.data.split import LeaveOneOutSplit
from llmrec.engines.encoder import ITEM_TEXT_VERSION, ItemEncoderConfig, ItemVectors
from llmrec.engines.models import trains_on_config_threads
from llmrec.errors import DatasetError, RunConflict
from llmrec.manifest import model_identity
from llmrec.objectives import EMBEDDING
from llmrec.ranking.embedding import TwoTower, TwoTowerConfig
from llmrec.settings import Settings

ADAPTER_FOLDER = "adapter-embedding"


class MetaConfig(BaseModel):
    """What the meta-learned start depends on; saved in its manifest (`config.meta`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[str, ...] = Field(min_length=1, description="Scenarios whose training users the tasks are drawn from.")
    tower: TwoTowerConfig = Field(default_factory=TwoTowerConfig)
    encoder: ItemEncoderConfig = Field(default_factory=ItemEncoderConfig)
    meta_iterations: int = Field(default=300, ge=1, description="Outer updates of θ: the fixed budget.")
    meta_batch: int = Field(default=4, ge=1, description="Tasks adapted from the same θ per outer update (their θ′ averaged).")
    task_users: int = Field(default=16, ge=1, description="Training users per task: a few-shot run's worth.")
    inner_steps: int = Field(default=8, ge=1, description=(
        "AdamW steps per task: about what the curve's training takes at 16 to 64 shots (one or two batches an epoch, "
        "up to 8 epochs)."))
    batch_size: int = Field(default=512, ge=1, description="Examples per inner step (a task's examples, sampled without replacement).")
    learning_rate: float = Field(default=1e-3, gt=0, description="The inner AdamW's, as in `EmbeddingTrainConfig`.")
    weight_decay: float = Field(default=0.01, ge=0)
    epsilon: float = Field(default=1.0, gt=0, le=1, description="Outer step size at the first meta-iteration.")
    epsilon_end: float = Field(default=0.0, ge=0, le=1, description="Outer step size reached, linearly, at the last one.")
    eval_every: int = Field(default=50, ge=1, description="Meta-iterations between two validation checks of θ.")
    eval_users: int = Field(default=300, ge=1, description="Validation users per source in each check (seeded sample).")
    seed: int = 0
    threads: int | None = Field(default=1, ge=1, description="torch threads (see `EmbeddingTrainConfig.threads`).")

    @model_validator(mode="after")
    def _annealed_down(self) -> MetaConfig:
        if self.epsilon_end > self.epsilon:
            raise ValueError(f"epsilon_end ({self.epsilon_end}) is above epsilon ({self.epsilon}): ε is annealed down")
        return self


@dataclass
class Source:
    """One source scenario's training data, as the meta-learner reads it."""

    name: str
    dataset: str
    vectors: ItemVectors
    split: LeaveOneOutSplit
    examples: Examples
    offsets: np.ndarray  # user u's examples are rows offsets[u]:offsets[u+1]
    users: list[str]

    @classmethod
    def build(cls, name: str, dataset: str, vectors: ItemVectors, split: LeaveOneOutSplit, tower: TwoTowerConfig) -> Source:
        row = vectors.index()
        users = [u for u, items in split.train.items() if sum(i in row for i in items) >= 2]
        if not users:
            raise DatasetError(f"scenario {name!r}: no training user has 2 or more items, so there are no tasks to draw")
        histories = {u: split.train[u] for u in users}
        examples = next_item_examples(histories, row, tower)
        counts = [sum(i in row for i in histories[u]) - 1 for u in users]
        return cls(name, dataset, vectors, split, examples, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), users)

    def task_rows(self, rng: np.random.Generator, task_users: int) -> np.ndarray:
        chosen = rng.choice(len(self.users), size=min(task_users, len(self.users)), replace=False)
        return np.concatenate([np.arange(self.offsets[u], self.offsets[u + 1]) for u in chosen])


def epsilon_at(config: MetaConfig, iteration: int) -> float:
    """The outer step size at meta-iteration `iteration` (0-based): linear from `epsilon` to `epsilon_end`."""
    last = max(config.meta_iterations - 1, 1)
    return config.epsilon + (config.epsilon_end - config.epsilon) * min(iteration, last) / last


@trains_on_config_threads  # config.threads for this call only
def reptile(sources: list[Source], config: MetaConfig, progress: bool = True) -> TrainResult:
    """θ after `config.meta_iterations` Reptile updates; the manifest part says how it went."""
    import torch

    towers = [TrainableTowers(s.vectors.matrix, config.tower, config.seed) for s in sources]  # one torch model per catalog
    theta = {name: p.detach().clone() for name, p in _named(towers[0]).items()}  # the random start, seeded
    rng = np.random.default_rng(config.seed)
    share = np.array([len(s.users) for s in sources], dtype=np.float64)
    share /= share.sum()  # a task's source: in proportion to its users, so every training user is as likely
    checks = {s.name: sorted(rng.choice(s.split.valid_users(), size=min(config.eval_users, len(s.split.valid_users())),
                                        replace=False).tolist()) for s in sources}
    curve = [_check(0, theta, sources, towers, checks)]
    started, losses = time.perf_counter(), []
    bar = tqdm(range(config.meta_iterations), desc="reptile", unit="meta-it", disable=not progress)
    for iteration in bar:
        moved = {name: torch.zeros_like(value) for name, value in theta.items()}
        for _ in range(config.meta_batch):
            s = int(rng.choice(len(sources), p=share))
            adapted, loss = _inner(towers[s], theta, sources[s], sources[s].task_rows(rng, config.task_users), config, rng)
            losses.append(loss)
            for name in moved:
                moved[name] += (adapted[name] - theta[name]) / config.meta_batch
        eps = epsilon_at(config, iteration)
        theta = {name: theta[name] + eps * moved[name] for name in theta}
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", eps=f"{eps:.3f}")
        if (iteration + 1) % config.eval_every == 0 or iteration + 1 == config.meta_iterations:
            curve.append(_check(iteration + 1, theta, sources, towers, checks))
    tower = _export(towers[0], theta)
    manifest = {"examples": int(sum(len(s.examples.target) for s in sources)), "steps": len(losses) * config.inner_steps,
                "wall_time_s": round(time.perf_counter() - started, 1),
                "valid_ndcg10_alone_full_ranking": curve[-1]["valid_ndcg10"][sources[0].name],
                "meta": {"algorithm": "reptile", "tasks": len(losses), "note": (
                    "a meta-learned start (Reptile over user groups of the sources' training users), not a ranker fitted for "
                    "serving: fine-tune it with `--init-from`, or use it as the curve's `meta` arm (`--meta-from`)"),
                    "sources": [{"scenario": s.name, "dataset": s.dataset, "training_users": len(s.users),
                                 "examples": len(s.examples.target), "split_fingerprint": s.split.fingerprint(),
                                 "check_users": len(checks[s.name])} for s in sources],
                    "inner_loss_first_50": round(float(np.mean(losses[:50])), 4),
                    "inner_loss_last_50": round(float(np.mean(losses[-50:])), 4), "curve": curve}}
    return TrainResult(tower, manifest)


def _named(towers: TrainableTowers) -> dict:
    return {"user_weight": towers.user.weight, "user_bias": towers.user.bias, "item_weight": towers.item.weight, "item_bias": towers.item.bias}


def _load(towers: TrainableTowers, theta: dict) -> None:
    import torch

    with torch.no_grad():
        for name, parameter in _named(towers).items():
            parameter.copy_(theta[name])


def _inner(towers: TrainableTowers, theta: dict, source: Source, rows: np.ndarray, config: MetaConfig, rng: np.random.Generator):
    """θ′: `inner_steps` AdamW steps from θ on one task's examples; and the task's mean training loss."""
    import torch

    _load(towers, theta)
    optimizer = torch.optim.AdamW(towers.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    data = source.examples
    total = 0.0
    for _ in range(config.inner_steps):
        idx = torch.from_numpy(rng.choice(rows, size=min(config.batch_size, len(rows)), replace=False))
        hist, weights, target = (torch.from_numpy(a)[idx] for a in (data.history, data.weights, data.target))
        loss = torch.nn.functional.cross_entropy(towers.logits(hist, weights), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    return {name: p.detach().clone() for name, p in _named(towers).items()}, total / config.inner_steps


def _export(towers: TrainableTowers, theta: dict) -> TwoTower:
    _load(towers, theta)
    return towers.export()  # with this catalog's standardisation


def _check(iteration: int, theta: dict, sources: list[Source], towers: list[TrainableTowers], checks: dict) -> dict:
    """θ's validation NDCG@10 alone (full ranking) on each source's check users."""
    scores = {s.name: round(validation_ndcg(_export(t, theta), s.vectors, s.split, users=checks[s.name]), 5)
              for s, t in zip(sources, towers)}
    return {"meta_iteration": iteration, "valid_ndcg10": scores}


def meta_adapter(settings: Settings, config: MetaConfig, into: str, force: bool = False, progress: bool = True) -> tuple[Path, dict]:
    """Reptile over `config.sources`, saved as the `embedding` adapter of a new scenario `into`; returns its
    scenario file and the manifest. Built under `<home>/.partial/` and renamed into place whole: a failure
    leaves nothing behind, and an existing scenario is replaced only with `force`."""
    from llmrec.adapters.loop import publish_scenario
    from llmrec.data.datasets import load_dataset
    from llmrec.engines.encoder import item_vectors
    from llmrec.engines.models import resolve_model
    from llmrec.scenario import AdapterSpec, Scenario, builtin_names, check_name, load_scenario, user_scenario_path

    home = settings.resolved_home()
    target = user_scenario_path(home, check_name(into)).parent
    if into in config.sources:
        raise RunConflict(f"--into {into!r} is one of the sources; meta-train into a new name")
    if into in builtin_names() or (target.exists() and not force):
        raise RunConflict(f"scenario {into!r} exists already; choose another name" + ("" if into in builtin_names() else ", or --force to replace it"))
    scenarios = [load_scenario(name, home) for name in config.sources]  # unknown: exit 3, before any work
    model = resolve_model(settings.model, home)
    sources = []
    for scenario in scenarios:
        dataset = load_dataset(scenario.dataset, home)
        split = LeaveOneOutSplit.from_dataset(dataset)
        vectors = item_vectors(model, list(dataset.items.values()), home, config.encoder, progress)
        sources.append(Source.build(scenario.name, scenario.dataset, vectors, split, config.tower))
    result = reptile(sources, config, progress)
    first = sources[0]
    train_config = {"tower": config.tower.model_dump(mode="json"), "encoder": config.encoder.model_dump(mode="json"),
                    "meta": config.model_dump(mode="json")}
    staging = home / ".partial"
    staging.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{into}.", dir=staging))
    try:
        manifest = {"objective": EMBEDDING, "base_model": model_identity(model), "item_text": ITEM_TEXT_VERSION,
                    "data_fingerprint": first.split.fingerprint(), "split_fingerprint": first.split.fingerprint(), "config": train_config,
                    **result.manifest, "scenario": into, "dataset": first.dataset, "complete": True}
        save_adapter(tmp / ADAPTER_FOLDER, result.tower, manifest)
        names = ", ".join(config.sources)
        scenario = Scenario(name=into, dataset=first.dataset, domain=scenarios[0].domain, adapter=AdapterSpec(name=f"{into}-embedding", path=ADAPTER_FOLDER),
                            description=f"a Reptile meta-learned start for the embedding towers over user groups of {names}: a start "
                                        "for --init-from / --meta-from; no fusion weight is fitted (the retriever's order is served)")
        publish_scenario(tmp, scenario, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place
    return target / "scenario.json", manifest

