"""`--scenario auto`: which scenario serves a request, and why.

A history is routed by catalogs: the scenario whose dataset's catalog holds every item. Item ids can collide across
catalogs (ML-100K's are "1".."1682", ML-1M's "1".."3952"), so the router takes the set of catalogs that hold *all*
the ids: one catalog routes; several is ambiguous; none is either "no catalog holds these items" or, when each item is
held somewhere, "these items come from different catalogs" naming them. A user id is routed the same way, by the
datasets that hold the user (ids collide too: "196" is in ML-100K and ML-1M). A free-text request (a chat's first
message) is routed by MiniLM similarity of the text to each scenario's domain and description, and only with a
margin over the runner-up; when only one scenario's data is on disk, that one serves any text. Nothing is guessed:
every failure is a `NoRoute` (`llmrec.errors`, exit 3) that carries the options it weighed, and says whether asking
the person which one they mean is an answer (`askable`: an ambiguous text or colliding ids) or the request must
change (a mix of catalogs, items or a user no catalog holds).

Scenarios that share a catalog are one option, served by its preferred scenario: a built-in first, then by name.
Only scenarios whose data is on disk count (a built-in dataset not yet imported is left out, with a note), so routing
never downloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmrec.errors import NoRoute
from llmrec.scenario import Scenario, builtin_names, load_scenario, scenario_names
from llmrec.settings import Settings


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    margin: float = Field(default=0.05, ge=0, description="Text: the best option's cosine similarity must beat the runner-up's by this.")
    min_similarity: float = Field(default=0.10, description="Text: below this, no scenario matches at all.")
    shown: int = Field(default=5, ge=1, description="Item ids named in an error, per catalog.")


@dataclass(frozen=True)
class Route:
    scenario: str
    reason: str
    options: tuple[tuple[str, float], ...] = ()


@dataclass
class _Catalog:
    dataset: str
    scenarios: list[Scenario]
    ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def scenario(self) -> Scenario:
        """The preferred scenario on this catalog: a built-in first, then by name."""
        builtins = set(builtin_names())
        return min(self.scenarios, key=lambda s: (s.name not in builtins, s.name))

    def label(self) -> str:
        others = [s.name for s in self.scenarios if s.name != self.scenario.name]
        dataset = Path(self.dataset).name or self.dataset  # a folder by its name, not its whole path
        return f"{self.scenario.name} ({dataset}{'; also ' + ', '.join(others) if others else ''})"


def _item_file(dataset: str, home: Path) -> Path | None:
    """The `.item` file of a dataset that is on disk (a built-in imported, or a folder); None otherwise."""
    from llmrec.data.datasets import BUILTINS, builtin_folder, is_built

    if dataset in BUILTINS:
        return builtin_folder(dataset, home) / f"{dataset}.item" if is_built(dataset, home) else None
    folder = Path(dataset).expanduser()
    if not folder.is_dir():
        return None
    named = folder / f"{folder.name}.item"
    items = [named] if named.is_file() else sorted(folder.glob("*.item"))
    return items[0] if len(items) == 1 else None


class Router:
    """Picks a scenario for a history or a text among `scenarios` (default: every scenario in the home)."""

    def __init__(self, settings: Settings, scenarios: Sequence[str] | None = None, config: RouterConfig | None = None,
                 embedder=None):
        self.home = settings.resolved_home()
        self.config = config or RouterConfig()
        self.names = list(scenarios) if scenarios is not None else scenario_names(self.home)
        self.notes: list[str] = []
        self._embedder = embedder
        self._catalogs: list[_Catalog] | None = None
        self._user_ids: dict[str, frozenset[str]] = {}

    def catalogs(self) -> list[_Catalog]:
        """One entry per catalog on disk, with the scenarios that serve it (read once)."""
        if self._catalogs is None:
            from llmrec.data.catalog import load_items

            by_dataset: dict[str, _Catalog] = {}
            for name in self.names:
                scenario = load_scenario(name, self.home)
                by_dataset.setdefault(scenario.dataset, _Catalog(scenario.dataset, [])).scenarios.append(scenario)
            for catalog in list(by_dataset.values()):
                path = _item_file(catalog.dataset, self.home)
                if path is None:
                    self.notes.append(f"routing leaves out {', '.join(s.name for s in catalog.scenarios)}: dataset "
                                      f"{catalog.dataset!r} is not on disk (`llmrec datasets import` it)")
                    del by_dataset[catalog.dataset]
                    continue
                catalog.ids = frozenset(load_items(path))
            self._catalogs = list(by_dataset.values())
        return self._catalogs

    def for_history(self, item_ids: Sequence[str]) -> Route:
        """The scenario whose catalog holds every item; `NoRoute` for none, several, or a mix."""
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            raise NoRoute("an empty history cannot be routed: name the scenario with --scenario")
        catalogs = self.catalogs()
        holding = [c for c in catalogs if c.ids.issuperset(ids)]
        if len(holding) == 1:
            chosen = holding[0]
            return Route(chosen.scenario.name, f"routed to {chosen.label()}: its catalog holds all {len(ids)} history item(s), "
                                               "and no other scenario's does", ((chosen.scenario.name, float(len(ids))),))
        if len(holding) > 1:
            names = " and ".join(c.label() for c in holding)
            raise NoRoute(f"ambiguous history: the catalogs of {names} each hold all {len(ids)} item(s) (ids collide across "
                          "catalogs); name the scenario with --scenario", [(c.scenario.name, float(len(ids))) for c in holding],
                          askable=True)
        held = [(c, [i for i in ids if i in c.ids]) for c in catalogs]
        held = [(c, found) for c, found in held if found]
        orphans = [i for i in ids if not any(i in c.ids for c, _ in held)]
        if not held:
            raise NoRoute(f"no scenario's catalog holds these items ({self._show(ids)}); scenarios weighed: "
                          f"{', '.join(c.label() for c in catalogs) or 'none'}")
        parts = [f"{c.label()} holds {self._show(found)}" for c, found in held]
        if orphans:
            parts.append(f"no catalog holds {self._show(orphans)}")
        kind = "different catalogs" if len(held) > 1 else "one catalog and none"
        raise NoRoute(f"the history's items come from {kind}: {'; '.join(parts)}; give one catalog's items, or name the "
                      "scenario with --scenario", [(c.scenario.name, float(len(found))) for c, found in held])

    def for_user(self, user_id: str) -> Route:
        """The scenario whose dataset holds `user_id`; `NoRoute` for none (not askable) or several (askable: ids collide)."""
        catalogs = self.catalogs()
        holding = [c for c in catalogs if user_id in self._users(c)]
        if len(holding) == 1:
            chosen = holding[0]
            return Route(chosen.scenario.name, f"routed to {chosen.label()}: user {user_id!r} is in its data, and in no other "
                                               "scenario's", ((chosen.scenario.name, 1.0),))
        if holding:
            raise NoRoute(f"ambiguous user: {user_id!r} is a user of {' and '.join(c.label() for c in holding)} (ids collide "
                          "across datasets); name the scenario with --scenario", [(c.scenario.name, 1.0) for c in holding],
                          askable=True)
        raise NoRoute(f"unknown user {user_id!r}: no scenario's data holds it; scenarios weighed: "
                      f"{', '.join(c.label() for c in catalogs) or 'none'}")

    def describe(self, name: str, chars: int = 60) -> str:
        """`name (the first sentence of its description, cut to about `chars`)`: how a question names an option."""
        text = load_scenario(name, self.home).description.strip()
        first = text.split(". ")[0].rstrip(".")
        if len(first) > chars:
            first = first[:chars].rsplit(" ", 1)[0].rstrip(",;:") + " …"
        return f"{name} ({first})" if first else name

    def for_text(self, text: str) -> Route:
        """The scenario whose domain and description are most like `text` (MiniLM cosine), by `margin` over the next."""
        catalogs = [c for c in self.catalogs() if c.scenarios]
        if not text.strip() or not catalogs:
            raise NoRoute("nothing to route: " + ("the text is empty" if catalogs else "no scenario's data is on disk"))
        if len(catalogs) == 1:
            only = catalogs[0]
            return Route(only.scenario.name, f"routed to {only.label()}: the only scenario whose data is on disk",
                         ((only.scenario.name, 1.0),))
        texts = [[_describe(s) for s in c.scenarios] for c in catalogs]
        vectors = self.embedder().encode([text, *[t for group in texts for t in group]])
        query, rest = vectors[0], vectors[1:]
        scores, at = [], 0
        for group in texts:
            scores.append(float(np.max(rest[at : at + len(group)] @ query)))
            at += len(group)
        order = sorted(range(len(catalogs)), key=lambda i: -scores[i])
        options = [(catalogs[i].scenario.name, round(scores[i], 3)) for i in order]
        shown = " or ".join(f"{name} ({score:.2f})" for name, score in options[:3])
        best = scores[order[0]]
        if best < self.config.min_similarity:
            raise NoRoute(f"no scenario matches this text: the closest is {shown}; name the scenario with --scenario", options,
                          askable=True)
        if best - scores[order[1]] < self.config.margin:
            raise NoRoute(f"ambiguous: {shown}; name the scenario with --scenario", options, askable=True)
        chosen = catalogs[order[0]]
        runner = f", {options[1][0]} {options[1][1]:.2f}" if len(options) > 1 else ""
        return Route(chosen.scenario.name, f"routed to {chosen.label()}: the text is most like its description "
                                           f"(similarity {best:.2f}{runner})", tuple(options))

    def embedder(self):
        if self._embedder is None:
            from llmrec.retrieval.embedder import SentenceEmbedder, ensure_minilm

            self._embedder = SentenceEmbedder(ensure_minilm(self.home))
        return self._embedder

    def _users(self, catalog: _Catalog) -> frozenset[str]:
        """The user ids of a catalog's dataset (its `.inter` file, and its `.user` file if any), read once."""
        if catalog.dataset not in self._user_ids:
            from llmrec.data.catalog import read_atomic

            item_file = _item_file(catalog.dataset, self.home)
            users: set[str] = set()
            if item_file is not None:
                for suffix in (".inter", ".user"):
                    path = item_file.with_suffix(suffix)
                    if path.is_file():
                        users.update(read_atomic(path, required=("user_id",)).column("user_id"))
            self._user_ids[catalog.dataset] = frozenset(users)
        return self._user_ids[catalog.dataset]

    def _show(self, ids: Sequence[str]) -> str:
        cut = self.config.shown
        return ", ".join(ids[:cut]) + (f" and {len(ids) - cut} more" if len(ids) > cut else "")


def _describe(scenario: Scenario) -> str:
    return f"{scenario.domain}s. {scenario.description}".strip()


__all__ = ["NoRoute", "Route", "Router", "RouterConfig"]  # NoRoute lives in llmrec.errors; re-exported for old imports
