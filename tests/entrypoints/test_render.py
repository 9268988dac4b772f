"""The CLI table shows item text as data: brackets in titles and the template marker survive."""

import io

from rich.console import Console

from llmrec.entrypoints.render import print_response
from llmrec.schemas import Explanation, Item, Recommendation, RecommendResponse


def test_brackets_are_printed_not_interpreted():
    item = Item(item_id="1", title="[bold]Trick[/bold] Title", year=1995, genres=("Comedy",))
    exp = Explanation(item_id="1", text='Because you watched "X", you may like it.', source="template")
    response = RecommendResponse(user_id="7", scenario="movies", model="m", adapter=None, ranking="llm-fused",
                                 history_used=3, recommendations=(Recommendation(rank=1, item=item, score=-1.0,
                                                                                 retriever_rank=0, explanation=exp),))
    out = io.StringIO()
    print_response(response, Console(file=out, width=200))
    text = out.getvalue()
    assert "[bold]Trick[/bold] Title" in text and "[template]" in text


def demo_response(n=5):
    """Five items with explanations as long as the demo's (two sentences of evidence and a reason)."""
    why = ("Of the 508 people who watched Fargo (1996), 97 also watched it; both are Crime, Drama, Thriller. "
           'You may like "Heat" because it is a tense heist with a long shoot-out downtown.')
    recs = tuple(Recommendation(rank=n + 1, item=Item(item_id=str(n), title=f"Movie Number {n}, The", year=1995,
                                                      genres=("Action", "Crime", "Thriller")),
                                score=-1.5 + n, llm_logprob=-0.25, retriever_rank=n,
                                explanation=Explanation(item_id=str(n), text=why, source="llm")) for n in range(n))
    return RecommendResponse(user_id="196", scenario="movies", model="SmolLM2-135M-Instruct", adapter=None, ranking="llm-fused",
                             history_used=20, recommendations=recs)


def test_a_pipe_gets_one_line_per_item_and_the_explanation_below_it():
    # `make demo` writes to a pipe: rich sees no terminal and an 80-column width.
    out = io.StringIO()
    print_response(demo_response(), Console(file=out, width=80))
    lines = out.getvalue().splitlines()
    assert len(lines) < 30, len(lines)  # the squeezed table took over 600 lines for this
    assert lines[0] == "user 196 · scenario movies · SmolLM2-135M-Instruct"
    assert lines[1] == " 1. Movie Number 0, The (1995) · score -1.500 · LLM logp -0.25 · retr. 1 · Action, Crime, Thriller"
    assert lines[2].startswith("    Of the 508 people who watched Fargo (1996)") and all(len(line) <= 80 for line in lines[2:5])
    assert not any(c in out.getvalue() for c in "│┃━")
    why = " ".join(line.strip() for line in lines[2:5] if line.startswith("    "))
    assert why.endswith("a long shoot-out downtown.")


def test_a_terminal_still_gets_the_table():
    out = io.StringIO()
    print_response(demo_response(1), Console(file=out, width=200, force_terminal=True, color_system=None))
    assert "│" in out.getvalue() and "LLM logp" in out.getvalue()
    out = io.StringIO()
    print_response(demo_response(1), Console(file=out, width=200), layout="table")
    assert "│" in out.getvalue()
