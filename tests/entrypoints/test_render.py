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
