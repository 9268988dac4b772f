"""The `sequence` objective's likelihood ranker: its bookkeeping with a fake engine, then the real vLLM engine
(session `engine`, LoRA-enabled, so the one-request-per-step prompt-logprob path) on a real ML-100K user."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from llmrec.engines.vllm import PromptLogprobs
from llmrec.errors import LLMUnavailable
from llmrec.prompts.builders import SequencePromptBuilder, SequencePromptConfig, natural_title
from llmrec.ranking.sequence import LikelihoodRanker, LikelihoodRankerConfig, LineLikelihood, sequence_prompts
from llmrec.schemas import Candidate, Item
from llmrec.testing import ScriptedEngine, logprob_tolerance

llm = pytest.mark.llm
CATALOG = {str(i): Item(item_id=str(i), title=f"Movie {'x' * i}", year=1990) for i in range(1, 30)}


class CharEngine:
    """Tokens are characters; log p(token) = -(1 + its code mod 5) / 10, whatever the context, unless a history is
    present, which adds 0.5 per candidate character of the item ids in `liked`. Counts calls and cache hits as
    vLLM would for a shared prefix (everything but the last token of a prompt that extends an earlier one)."""

    model_name = "chars"

    def __init__(self, liked=()):
        self.liked = set(liked)
        self.calls: list[int] = []
        self.seen: list[tuple[int, ...]] = []

    def tokenizer(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def count_tokens(self, text):
        return len(text)

    def chat_prompt(self, system, user, assistant_prefix=""):
        return f"<{system}|{user}>{assistant_prefix}"

    def prompt_logprobs(self, prompts, starts, adapter=None):
        self.calls.append(len(prompts))
        out = []
        for ids, start in zip(prompts, starts):
            text = "".join(map(chr, ids))
            with_history = text.index(">") + 1 < start
            bonus = 0.5 if with_history and any(f"Movie {'x' * int(i)} " in text[start:] for i in self.liked) else 0.0
            cached = max((len(p) for p in self.seen if tuple(ids[: len(p)]) == p[: len(ids)] and len(p) <= len(ids)), default=0)
            self.seen.append(tuple(ids[:start]))
            out.append(PromptLogprobs(tuple(-(t % 5 + 1) / 10 + bonus / (len(ids) - start) for t in ids[start:]), min(cached, start - 1)))
        return out


def cands(*ids):
    return [Candidate(item_id=i, retriever_rank=r, retriever_score=1.0) for r, i in enumerate(ids)]


def test_the_three_normalisations():
    line = LineLikelihood(conditional=-12.0, prior=-15.0, tokens=4)
    assert (line.score("sum"), line.score("mean"), line.score("pmi")) == (-12.0, -3.0, 3.0)
    with pytest.raises(ValueError):
        LineLikelihood(-1.0, None, 1).score("pmi")


def test_titles_are_written_as_text_says_them():
    assert natural_title("Usual Suspects, The (1995)") == "The Usual Suspects (1995)"
    assert natural_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)").startswith("The City of Lost Children (")
    assert natural_title("Enfer, L' (1994)") == "L'Enfer (1994)"
    assert natural_title("Toy Story (1995)") == "Toy Story (1995)"
    raw = SequencePromptBuilder(SequencePromptConfig(natural_titles=False))
    item = Item(item_id="1", title="Usual Suspects, The", year=1995)
    assert raw.line(item) == "Usual Suspects, The (1995)\n" and SequencePromptBuilder().line(item) == "The Usual Suspects (1995)\n"


def test_pmi_takes_out_the_prior_so_a_long_title_is_not_punished():
    # Without a history bonus, "sum" prefers the shortest title; PMI sees only what the history adds (item 25).
    engine = CharEngine(liked=["25"])
    ranker = LikelihoodRanker(engine, CATALOG, SequencePromptBuilder(), LikelihoodRankerConfig(fusion_weight=0.0, normalization="pmi"))
    history, candidates = [CATALOG["2"], CATALOG["3"]], cands("1", "25", "7")
    assert ranker.rank(history, candidates)[0].item_id == "25"
    ranker.config = ranker.config.model_copy(update={"normalization": "sum"})
    assert ranker.rank(history, candidates)[0].item_id == "1"


def test_priors_are_computed_once_per_item_and_the_cache_is_counted():
    engine = CharEngine()
    ranker = LikelihoodRanker(engine, CATALOG, SequencePromptBuilder(), LikelihoodRankerConfig(normalization="pmi"))
    history = [CATALOG["2"], CATALOG["3"]]
    [first] = ranker.score_many([(history, cands("1", "4", "5"))])
    assert engine.calls == [3, 3]  # the candidates, then their priors
    ranker.score_many([(history, cands("4", "5", "6"))])
    assert engine.calls == [3, 3, 3, 1]  # only item 6 still needed a prior
    assert ranker.stats["prior"].requests == 4 and ranker.stats["conditional"].requests == 6
    assert ranker.stats["conditional"].cached_tokens > 0 and 0 < ranker.stats["conditional"].hit_rate < 1
    assert first.history_used == 2 and first.history_dropped == 0 and first.prompt_tokens > 0


def test_the_default_per_token_mean_needs_no_prior_requests():
    engine = CharEngine()
    ranker = LikelihoodRanker(engine, CATALOG, SequencePromptBuilder())
    history, candidates = [CATALOG["2"]], cands("1", "4")
    [scores] = ranker.score_many([(history, candidates)])
    found, *_ = ranker.likelihoods(history, candidates, with_prior=False)
    assert engine.calls == [2, 2] and ranker.stats["prior"].requests == 0
    assert scores.logprobs == pytest.approx([f.conditional / f.tokens for f in found])
    assert [f.tokens for f in found] == [len("Movie x (1990)\n"), len("Movie xxxx (1990)\n")]


def test_history_is_cut_to_the_trained_window_and_the_budget():
    engine = CharEngine()
    history = [CATALOG[str(i)] for i in range(1, 29)]
    prompt = SequencePromptBuilder(SequencePromptConfig(max_history_items=19)).build(engine, history)
    assert (prompt.history_used, prompt.history_dropped) == (19, 9) and prompt.lines[-1].startswith("Movie " + "x" * 28)
    header = len(SequencePromptBuilder().header(engine))
    tight = SequencePromptBuilder(SequencePromptConfig(token_budget=header + 32 + 60)).build(engine, history)
    assert 0 < tight.history_used < 19 and sum(map(len, tight.lines)) <= 60


def test_the_manifest_prompt_config_is_what_ranking_uses():
    builder = sequence_prompts({"prompt": {"template": "sequence_v1", "max_history_items": 9}}, "book", 500)
    assert builder.config == SequencePromptConfig(template="sequence_v1", domain="book", max_history_items=9, token_budget=500)


def test_an_engine_without_prompt_logprobs_is_refused_with_a_clear_error():
    with pytest.raises(LLMUnavailable, match="in process"):
        LikelihoodRanker(ScriptedEngine(), CATALOG, SequencePromptBuilder())


# ---- the real engine ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_user(pipeline):
    """A real ML-100K user with a long history (so the prefix spans full KV blocks) and the retriever's 20 candidates."""
    dataset = pipeline.dataset
    user = next(u for u in sorted(dataset.users(), key=int) if len(dataset.history(u).item_ids) >= 40)
    history = dataset.history(user)
    return pipeline.items(history.item_ids), pipeline.retriever.retrieve(history, 20)


@pytest.fixture(scope="module")
def scored(engine, pipeline, real_user):
    ranker = LikelihoodRanker(engine, pipeline.dataset.items, SequencePromptBuilder(SequencePromptConfig(domain="movie")))
    history, candidates = real_user
    found, used, dropped, prefix = ranker.likelihoods(history, candidates, with_prior=True)
    return ranker, found, prefix, replace(ranker.stats["conditional"])


@llm
def test_twenty_candidates_of_a_real_user_get_finite_different_scores(scored, real_user):
    ranker, found, prefix, _ = scored
    assert len(found) == 20 and all(math.isfinite(f.conditional) and math.isfinite(f.prior) for f in found)
    assert all(f.conditional < 0 and f.prior < 0 for f in found)
    assert len({round(f.conditional, 4) for f in found}) >= 18
    assert len({round(f.score("pmi"), 4) for f in found}) >= 18
    history, candidates = real_user
    ranked = ranker.rank(history, candidates)
    assert sorted(r.item_id for r in ranked) == sorted(c.item_id for c in candidates)


@llm
def test_pmi_is_the_conditional_minus_the_prior_read_straight_from_the_engine(engine, pipeline, scored, real_user):
    ranker, found, _, _ = scored
    history, candidates = real_user
    builder = ranker.prompts
    header = engine.tokenizer(builder.header(engine), add_special_tokens=False)["input_ids"]
    ranker.config = ranker.config.model_copy(update={"normalization": "pmi"})
    pmi = ranker.score_many([(history, candidates)])[0].logprobs
    for k in (1, 7):  # served from the cache in both passes, so computed alike
        line = engine.tokenizer(builder.line(pipeline.dataset.items[candidates[k].item_id]), add_special_tokens=False)["input_ids"]
        [prior] = engine.prompt_logprobs([header + line], [len(header)])
        assert len(prior.logprobs) == len(line)
        assert pmi[k] == pytest.approx(found[k].conditional - math.fsum(prior.logprobs), abs=1e-4)


@llm
def test_the_history_prefix_comes_from_the_prefix_cache_after_the_first_candidate(scored):
    _, _, prefix, stats = scored
    assert prefix > 256 and stats.requests == 20
    # Every candidate after the first reads the history's full 128-token blocks from vLLM's prefix cache.
    assert stats.cached_tokens >= 19 * (prefix // 128) * 128
    assert stats.hit_rate > 0.5


@llm
def test_cached_scores_are_the_models_own_token_logprobs(engine, model_dir, pipeline, real_user):
    """A candidate scored after another (its prefix from the cache) must match a plain fp32 transformers pass."""
    import torch
    from transformers import AutoModelForCausalLM

    history, candidates = real_user
    builder = SequencePromptBuilder(SequencePromptConfig(domain="movie", max_history_items=10))
    prompt = builder.build(engine, history)
    tokenize = lambda text: engine.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prefix = tokenize(prompt.header) + [t for line in prompt.lines for t in tokenize(line)]
    lines = [tokenize(builder.line(pipeline.dataset.items[c.item_id])) for c in candidates[:3]]
    results = engine.prompt_logprobs([prefix + line for line in lines], [len(prefix)] * 3)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for line, result in zip(lines, results):
        ids = torch.tensor([prefix + line])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
        expected = [logprobs[len(prefix) + j - 1, t].item() for j, t in enumerate(line)]
        assert list(result.logprobs) == pytest.approx(expected, abs=logprob_tolerance(engine.config.dtype))  # per token
    assert len(prefix) > 128 and results[1].cached_tokens >= 128


@llm
def test_a_prompt_cached_past_its_start_is_scored_again_without_the_cache(engine):
    """The second time a prompt comes, vLLM's cache holds blocks beyond the scored start; those rows would have no
    logprobs, so the engine computes that prompt afresh and returns the same numbers."""
    tokenize = lambda text: engine.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    head = tokenize("".join(f"Film number {i} of the list (19{i + 10})\n" for i in range(14)))[:130]
    tail = tokenize("".join(f"Another film, number {i} (20{i + 10})\n" for i in range(14)))[:140]
    [first] = engine.prompt_logprobs([head + tail], [len(head)])
    [again] = engine.prompt_logprobs([head + tail], [len(head)])
    assert again.cached_tokens == 0 and len(again.logprobs) == len(tail)
    assert again.logprobs == pytest.approx(first.logprobs, abs=1e-3)


@llm
def test_prompt_logprobs_refuses_a_start_outside_the_prompt(engine):
    with pytest.raises(ValueError):
        engine.prompt_logprobs([[1, 2, 3]], [3])
    with pytest.raises(ValueError):
        engine.prompt_logprobs([[1, 2, 3]], [0])


@llm
def test_training_and_serving_tokenize_the_same_way(engine, model_dir):
    from llmrec.engines.vllm import TokenizerFormatter

    formatter = TokenizerFormatter(model_dir)
    builder = SequencePromptBuilder()
    text = builder.header(engine) + builder.line(Item(item_id="1", title="Usual Suspects, The", year=1995))
    assert builder.header(engine) == builder.header(formatter)
    assert engine.tokenizer(text, add_special_tokens=False)["input_ids"] == formatter.tokenizer(text, add_special_tokens=False)["input_ids"]
