"""Human output of a RecommendResponse: a rich table plus the notes that qualify it."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmrec.schemas import RecommendResponse


def print_response(response: RecommendResponse, console: Console | None = None) -> None:
    console = console or Console()
    who = f"user {response.user_id}" if response.user_id else "ad-hoc history"
    title = f"{who} · scenario {response.scenario} · {response.model}" + (f" + {response.adapter}" if response.adapter else "")
    table = Table(title=title, show_lines=any(r.explanation for r in response.recommendations))
    table.add_column("#", justify="right")
    table.add_column("title")
    table.add_column("year", justify="right")
    table.add_column("genres")
    table.add_column("score", justify="right")
    table.add_column("LLM logp", justify="right")
    table.add_column("retr.", justify="right")
    explained = any(r.explanation for r in response.recommendations)
    if explained:
        table.add_column("why", max_width=60)
    for rec in response.recommendations:
        row = [str(rec.rank), rec.item.title, str(rec.item.year or ""), ", ".join(rec.item.genres), f"{rec.score:.3f}",
               "" if rec.llm_logprob is None else f"{rec.llm_logprob:.2f}", str(rec.retriever_rank + 1)]
        if explained:
            exp = rec.explanation
            row.append("" if exp is None else exp.text + ("" if exp.source != "template" else " [template]"))
        table.add_row(*(escape(cell) for cell in row))  # item text is data, never rich markup
    console.print(table)
    console.print(f"ranking: {response.ranking}; history items in prompt: {response.history_used}"
                  + (f" ({response.history_dropped} older left out)" if response.history_dropped else ""))
    if response.explanations:
        console.print(f"explanations: {response.explanations.llm} written by the LLM, {response.explanations.fallback} template fallbacks")
    if response.degraded:
        console.print(f"[bold yellow]degraded:[/] {escape(response.degraded_reason or '')}")
    for note in response.notes:
        console.print(f"note: {escape(note)}")
    if response.timings_ms:
        console.print("time: " + ", ".join(f"{k} {v / 1000:.2f} s" for k, v in response.timings_ms.items()))
