"""Human output of a RecommendResponse: the list plus the notes that qualify it.

On a terminal the list is a rich table. Anywhere else (a pipe, a file, `make demo`'s log) rich would squeeze the
table into 80 columns, one word per line, so the list is compact: one line per item (rank, title (year), score,
LLM log-probability, retriever rank, genres), and its explanation indented on the next lines.
"""

from __future__ import annotations

import textwrap
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmrec.schemas import Recommendation, RecommendResponse


def _why(rec: Recommendation) -> str:
    exp = rec.explanation
    return "" if exp is None else exp.text + ("" if exp.source != "template" else " [template]")


def _line(console: Console, text: str) -> None:
    """One line as written: item text is data, never rich markup, and rich neither wraps nor colours it."""
    console.print(escape(text), soft_wrap=True, highlight=False)


def print_list(response: RecommendResponse, title: str, console: Console) -> None:
    """The compact layout: one line per item, its explanation indented below it, wrapped to the console's width."""
    _line(console, title)
    width = max(console.width, 40)
    for rec in response.recommendations:
        item = rec.item
        head = [f"{rec.rank:>2}. {item.title}" + (f" ({item.year})" if item.year else ""), f"score {rec.score:.3f}"]
        if rec.llm_logprob is not None:
            head.append(f"LLM logp {rec.llm_logprob:.2f}")
        head.append(f"retr. {rec.retriever_rank + 1}")
        if item.genres:
            head.append(", ".join(item.genres))
        _line(console, " · ".join(head))
        if rec.explanation is not None:
            for row in textwrap.wrap(_why(rec), width=width, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False):
                _line(console, row)


def print_response(response: RecommendResponse, console: Console | None = None,
                   layout: Literal["auto", "table", "list"] = "auto") -> None:
    """`layout`: "auto" draws the table on a terminal and the compact list anywhere else."""
    console = console or Console()
    who = f"user {response.user_id}" if response.user_id else "ad-hoc history"
    title = f"{who} · scenario {response.scenario} · {response.model}" + (f" + {response.adapter}" if response.adapter else "")
    if layout == "list" or (layout == "auto" and not console.is_terminal):
        print_list(response, title, console)
    else:
        print_table(response, title, console)
    _footer(response, console)


def print_table(response: RecommendResponse, title: str, console: Console) -> None:
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
            row.append(_why(rec))
        table.add_row(*(escape(cell) for cell in row))  # item text is data, never rich markup
    console.print(table)


def _footer(response: RecommendResponse, console: Console) -> None:
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
