"""The TALLRec-protocol run on Book-Crossing (`llmrec tallrec`): LoRA few-shot learners, scored by vLLM, beside
TALLRec's published rows. The protocol (samples, prompt, AUC, baselines, report) is `eval.tallrec`; this module
trains, which is why it sits in `adapters/`.

For each shot count S > 0 and seed k: the first S training samples of permutation k train a PEFT LoRA on SmolLM2 (the
`pointwise` objective's loss: cross-entropy over the " Yes"/" No" tokens at the answer, `adapters.loop.train_lora`,
LoRA init and batch order from k). The adapter is saved after each epoch count of `epochs` that fits `max_steps`; each
is scored on the same fixed validation samples, the best validation AUC (ties: fewer epochs) is kept, and only that
one is scored on the test samples. S = 0 is the base model zero-shot. Every score comes from the one in-process vLLM
engine (`engine.score_next_token`), each adapter merged into its weights in turn (`engines.merged`: on these
prefill-only prompts vLLM's CPU LoRA kernels cost 5x (fp32) to 20x (bf16) the base model's time).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from llmrec.adapters.loop import LoraTrainConfig, RankingExample, label_step, train_lora
from llmrec.errors import LLMRecError
from llmrec.eval import tallrec as protocol
from llmrec.eval.report import OutputFolder, run_id
from llmrec.objectives import POINTWISE
from llmrec.prompts.builders import ANSWERS
from llmrec.protocols import LLMEngine
from llmrec.scenario import AdapterSpec
from llmrec.settings import Settings


class TallrecConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shots: tuple[int, ...] = Field(default=(0, 16, 64, 256), description="Training samples (one per user) per point; 0: zero-shot.")
    seeds: int = Field(default=3, ge=1, description="Runs per shot count: seed k picks the training samples and the LoRA init.")
    seed_caps: dict[int, int] = Field(default_factory=dict, description="Fewer seeds at some shot counts, e.g. {256: 1}.")
    test: int = Field(default=1000, ge=2, description="Test samples: a fixed seeded sample of the test users.")
    valid: int = Field(default=200, ge=2, description="Validation samples the epoch count is chosen on (fixed, seeded).")
    epochs: tuple[int, ...] = Field(default=(1, 4, 16), description="Candidate epoch counts, each saved and validated.")
    max_steps: int = Field(default=32, ge=1, description="Epoch counts past this many optimizer steps are left out (the smallest stays).")
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    rank: int = Field(default=8, ge=1, le=16)
    top_layers: int | None = Field(default=8, ge=1, description="LoRA on the last N blocks only (None: all): backward stops there.")
    train_dtype: str = Field(default="auto", description="Training autocast (auto: bf16 where the CPU has bf16 instructions).")
    seed: int = Field(default=0, description="The user split's, the order's and the test/validation samples' seed.")
    implicit_as_dislike: bool = Field(default=False, description="Keep 0 (implicit) ratings as dislikes, as TALLRec's script does.")
    resamples: int = Field(default=1000, ge=100)
    batch: int = Field(default=64, ge=1, description="Prompts per engine call.")


def epoch_plan(config: TallrecConfig, shots: int) -> dict[int, int]:
    """{epochs: optimizer steps} of the candidates that fit `max_steps` (the smallest always does)."""
    per_epoch = -(-shots // config.batch_size)
    plan = {e: e * per_epoch for e in sorted(set(config.epochs)) if e * per_epoch <= config.max_steps}
    return plan or {min(config.epochs): min(config.epochs) * per_epoch}


def score(engine: LLMEngine, prompts: list[str], batch: int, what: str, progress: bool) -> list[float]:
    """log P(Yes) over {Yes, No} for each prompt, `batch` prompts per engine call, with the weights the engine holds."""
    ids = engine.label_token_ids(ANSWERS)
    out: list[float] = []
    for start in tqdm(range(0, len(prompts), batch), desc=what, unit="batch", disable=not progress, leave=False):
        out.extend(row[0] for row in engine.score_next_token(prompts[start : start + batch], ids))
    return out


class _Run:
    """What every point shares: the engine, the prompts of the validation and test samples, the working folder."""

    def __init__(self, config: TallrecConfig, data: protocol.TallrecData, engine: LLMEngine, model: str, work: Path, progress: bool):
        from llmrec.engines.merged import MergedWeights
        from llmrec.engines.vllm import TokenizerFormatter

        self.config, self.engine, self.model, self.work, self.progress = config, engine, model, work, progress
        self.weights = MergedWeights(engine)
        self.formatter = TokenizerFormatter(model)
        self.prompts = protocol.TallrecPromptBuilder(data.books)
        self.data = data
        self.test = protocol.pick(data.test, config.test, config.seed, "test")
        self.valid = protocol.pick(data.valid, config.valid, config.seed, "valid")
        self.test_prompts = [self.prompts.build(self.formatter, s) for s in self.test]
        self.valid_prompts = [self.prompts.build(self.formatter, s) for s in self.valid]

    def zero_shot(self) -> dict:
        done = self.work / "zero-shot.json"
        if done.is_file():  # an interrupted run of this same config (the work folder is named by its run id)
            return json.loads(done.read_text())
        started = time.perf_counter()
        self.weights.base()
        scores = score(self.engine, self.test_prompts, self.config.batch, "zero-shot test", self.progress)
        return self._keep(done, {"seed": None, "scores": scores, "seconds": round(time.perf_counter() - started, 1)})

    def _keep(self, path: Path, run: dict) -> dict:
        from llmrec.assets import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(run) + "\n")
        return run

    def few_shot(self, shots: int, seed: int) -> dict:
        """Train at `shots`, seed `seed`; pick the epoch count on validation; score the test samples with it."""
        config, started = self.config, time.perf_counter()
        folder = self.work / f"shots-{shots}-seed-{seed}"
        if (folder / "run.json").is_file():  # finished by an interrupted run of this same config
            return json.loads((folder / "run.json").read_text())
        train = protocol.shot_samples(self.data.train, shots, seed)
        yes_no = tuple(self.formatter.label_token_ids(ANSWERS))
        examples = [RankingExample(self.prompts.build(self.formatter, s), yes_no, 0 if s.liked else 1) for s in train]
        plan = epoch_plan(config, shots)
        shutil.rmtree(folder, ignore_errors=True)
        saves = {steps: folder / f"epochs-{e}" for e, steps in plan.items()}
        last = max(saves)
        done = {"steps": 0}

        def step(model, *args, **kwargs):
            result = label_step(model, *args, **kwargs)
            done["steps"] += 1
            if done["steps"] in saves and done["steps"] != last:
                model.save_pretrained(saves[done["steps"]])
            return result

        # One torch thread, as `adapters.pointwise` trains: on a shared 2-core machine two threads ran several times slower
        # (their barriers wait on a descheduled thread). Threads bound the run, not what it learns.
        lora = LoraTrainConfig(rank=config.rank, alpha=2 * config.rank, learning_rate=config.learning_rate, steps=last,
                               batch_size=config.batch_size, seed=seed, dtype=config.train_dtype, checkpoint_every=last,
                               top_layers=config.top_layers, threads=1)
        manifest = train_lora(self.model, examples, saves[last], lora, progress=self.progress, objective=POINTWISE, step_fn=step,
                              manifest_extra={"protocol": "tallrec", "shots": shots, "prompt_template": self.prompts.config.template})
        trained = time.perf_counter()
        valid_y = [s.liked for s in self.valid]
        valid_auc = {}
        for epochs, steps in plan.items() if len(plan) > 1 else ():  # one candidate: nothing to choose
            self.weights.load(AdapterSpec(name=f"tallrec-{shots}-{seed}-{epochs}", path=str(saves[steps])))
            valid_auc[epochs] = protocol.roc_auc(valid_y, score(self.engine, self.valid_prompts, config.batch,
                                                                f"valid {shots} shots seed {seed} epochs {epochs}", self.progress))
        best = max(valid_auc, key=lambda e: (valid_auc[e], -e)) if valid_auc else next(iter(plan))
        chosen = AdapterSpec(name=f"tallrec-{shots}-{seed}", path=str(saves[plan[best]]))
        self.weights.load(chosen)
        scores = score(self.engine, self.test_prompts, config.batch, f"test {shots} shots seed {seed}", self.progress)
        for steps, path in saves.items():
            if steps != plan[best]:
                shutil.rmtree(path, ignore_errors=True)
        run = {"seed": seed, "scores": scores, "train_like_share": round(sum(s.liked for s in train) / shots, 4),
               "valid_auc_by_epochs": {str(e): round(a, 4) for e, a in valid_auc.items()}, "epochs": best, "steps": plan[best],
               "loss_curve": manifest["loss_curve"], "train_seconds": round(trained - started, 1),
               "score_seconds": round(time.perf_counter() - trained, 1), "adapter": chosen.path,
               "baselines": {"item like rate": protocol.item_like_rate(train, self.test),
                             "user like rate": protocol.user_like_rate(train, self.test)}}
        self._keep(folder / "run.json", run)
        if self.progress:
            print(f"  {shots} shots, seed {seed}: validation AUC by epochs {run['valid_auc_by_epochs']} -> {best}; test AUC "
                  f"{protocol.roc_auc([s.liked for s in self.test], scores):.4f} ({run['train_seconds']} s training, "
                  f"{run['score_seconds']} s scoring)", file=sys.stderr, flush=True)
        return run


def run_tallrec(settings: Settings, config: TallrecConfig, out: Path, force: bool = False, progress: bool = True,
                engine: LLMEngine | None = None, data: protocol.TallrecData | None = None) -> dict:
    """Every point of `config`; report.json and report.md in `out` (RunConflict, exit 9, for another run's report).

    `data` (default: the pinned raw Book-Crossing files) and `engine` (default: a new in-process one; adapters are
    merged into its weights in turn, and its base weights are back when this returns) are for tests.
    """
    from llmrec.engines.models import pick_dtype, resolve_model
    from llmrec.manifest import model_identity
    from llmrec.pipeline import make_engine

    started = time.perf_counter()
    if settings.llm_url and engine is None:
        raise LLMRecError("llmrec tallrec trains adapters and serves them in process: leave out --llm-url")
    if any(s < 0 for s in config.shots) or not config.shots:
        raise LLMRecError("--shots takes counts of training samples (0 for zero-shot), e.g. 0,16,64,256")
    home = settings.resolved_home()
    data = data or protocol.load_tallrec_data(home, config.seed, config.implicit_as_dislike)
    for shots in config.shots:
        protocol.shot_samples(data.train, shots, config.seed)  # too many shots: one line, before anything is written
    model = resolve_model(settings.model, home)
    dtype = engine.config.dtype if engine is not None else pick_dtype(settings.dtype)
    key = {"config": config.model_dump(mode="json"), "model": model_identity(model), "dtype": dtype,
           "data": data.stats, "template": protocol.TallrecPromptConfig().template}
    folder = OutputFolder(out, run_id(key), force)
    folder.check()
    work = home / "tallrec" / folder.run_id
    run = _Run(config, data, engine or make_engine(settings, adapters=0), model, work, progress)
    points: dict[int, list[dict]] = {}
    try:
        for shots in config.shots:
            seeds = range(config.seed, config.seed + (1 if shots == 0 else config.seed_caps.get(shots, config.seeds)))
            points[shots] = [run.zero_shot() if shots == 0 else run.few_shot(shots, seed) for seed in seeds]
    finally:
        run.weights.base()
    report = protocol.report(key, run.test, data, points, time.perf_counter() - started, config.resamples)
    report["engine"] = {"dtype": key["dtype"], "model": Path(model).name}
    report["adapters"] = str(work)
    staging = folder.begin()
    try:
        (staging / "scores.json").write_text(json.dumps(protocol.per_sample(run.test, points)) + "\n")
        (staging / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (staging / "report.md").write_text(protocol.markdown(report))
        folder.commit()
    except BaseException:
        folder.abandon()
        raise
    return report
