"""`--scenario auto`: routing a history by the catalogs that hold its items, and a text by its similarity to each
scenario's description, with a clear refusal (NoRoute, exit 3) instead of a guess."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmrec.pipeline.routing import NoRoute, Router, RouterConfig


def catalog(root: Path, name: str, ids: list[str]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / f"{name}.item").write_text("item_id:token\ttitle:token_seq\n" + "".join(f"{i}\tTitle {i}\n" for i in ids))
    (folder / f"{name}.inter").write_text("user_id:token\titem_id:token\n" + "".join(f"u1\t{i}\n" for i in ids))
    return folder


def scenario(home: Path, name: str, dataset: str, domain: str = "item", description: str = "") -> None:
    path = home / "scenarios" / name / "scenario.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": name, "dataset": dataset, "domain": domain, "description": description}))


@pytest.fixture
def router(tmp_path, settings):
    """Two tiny catalogs: films 1..5, books 4..9 and a..c (4 and 5 in both), plus a second scenario on the films."""
    home = tmp_path / "home"
    scenario(home, "films", str(catalog(tmp_path, "films", ["1", "2", "3", "4", "5"])), "movie", "Feature films.")
    scenario(home, "films-llm", str(tmp_path / "films"), "movie")
    scenario(home, "books", str(catalog(tmp_path, "books", ["4", "5", "6", "a", "b", "c"])), "book", "Novels.")
    return Router(settings.model_copy(update={"home": home}), scenarios=["films", "films-llm", "books"])


def test_a_history_held_by_one_catalog_routes_there_and_says_why(router):
    route = router.for_history(["1", "2", "4"])
    assert route.scenario == "films"  # of the two scenarios on that catalog, by name (no built-in here)
    assert "holds all 3" in route.reason and "films-llm" in route.reason
    assert router.for_history(["a", "4"]).scenario == "books"


def test_ids_in_both_catalogs_are_ambiguous_and_name_both(router):
    with pytest.raises(NoRoute, match="ambiguous history") as caught:
        router.for_history(["4", "5"])
    assert "films" in str(caught.value) and "books" in str(caught.value)
    assert {name for name, _ in caught.value.options} == {"films", "books"}
    assert caught.value.exit_code == 3


def test_a_mix_of_catalogs_names_both_and_is_not_guessed(router):
    with pytest.raises(NoRoute, match="different catalogs") as caught:
        router.for_history(["1", "2", "a"])
    message = str(caught.value)
    assert "films (" in message and "holds 1, 2" in message and "books (" in message and "holds a" in message


def test_no_catalog_and_an_empty_history_are_refused(router):
    with pytest.raises(NoRoute, match="no scenario's catalog holds these items"):
        router.for_history(["zz", "yy"])
    with pytest.raises(NoRoute, match="none holds zz|no catalog holds zz"):
        router.for_history(["1", "zz"])
    with pytest.raises(NoRoute, match="empty history"):
        router.for_history([])


class FakeEmbedder:
    """Texts as fixed unit vectors: 'film' → x, 'book' → y, anything else → their mix."""

    def encode(self, texts):
        def vec(t):
            t = t.lower()
            v = np.array([("film" in t or "movie" in t) * 1.0, ("book" in t or "novel" in t) * 1.0, 0.1])
            return v / np.linalg.norm(v)

        return np.stack([vec(t) for t in texts])


def test_text_routes_by_similarity_with_a_margin(router):
    router._embedder = FakeEmbedder()
    route = router.for_text("a film for tonight")
    assert route.scenario == "films" and "similarity" in route.reason
    assert router.for_text("a good novel").scenario == "books"
    with pytest.raises(NoRoute, match=r"ambiguous: (films|books) \(0\.\d\d\) or (books|films)") as caught:
        router.for_text("a film of a book")
    assert len(caught.value.options) == 2
    router.config = RouterConfig(min_similarity=0.5)
    with pytest.raises(NoRoute, match="no scenario matches"):
        router.for_text("something else entirely")


def test_an_unbuilt_dataset_is_left_out_with_a_note(tmp_path, settings):
    home = tmp_path / "home"
    scenario(home, "films", str(catalog(tmp_path, "films", ["1"])))
    scenario(home, "later", "ml-1m")
    router = Router(settings.model_copy(update={"home": home}), scenarios=["films", "later"])
    assert router.for_history(["1"]).scenario == "films"
    assert any("later" in n and "not on disk" in n for n in router.notes)


@pytest.mark.slow
def test_real_movielens_and_book_crossing(tmp_path, settings, home):
    """ML-100K (ids 1..1682) and Book-Crossing (ISBNs), both built in the real cache; the real MiniLM for text."""
    from llmrec.data.datasets import is_built

    if not (is_built("ml-100k", home) and is_built("book-crossing", home)):
        pytest.skip("ml-100k and book-crossing must be imported in LLMREC_HOME")
    fresh = tmp_path / "home"
    fresh.mkdir()
    for name in ("datasets", "models", "wheels"):
        (fresh / name).symlink_to(home / name)
    scenario(fresh, "books", "book-crossing", "book", "Book-Crossing: books rated by readers, with author and publisher.")
    router = Router(settings.model_copy(update={"home": fresh}), scenarios=["movies", "books"])
    assert router.for_history(["1", "50", "181"]).scenario == "movies"
    assert router.for_history(["0440234743", "0399135782"]).scenario == "books"
    with pytest.raises(NoRoute, match="different catalogs"):
        router.for_history(["1", "0440234743"])
    assert router.for_text("recommend me a novel by a good author").scenario == "books"
    assert router.for_text("a movie to watch tonight, maybe a comedy film").scenario == "movies"


def test_noroute_is_the_typed_error_and_says_whether_asking_helps(router):
    from llmrec import errors

    assert NoRoute is errors.NoRoute and issubclass(NoRoute, errors.UnknownScenario)
    with pytest.raises(NoRoute) as ambiguous:
        router.for_history(["4", "5"])
    with pytest.raises(NoRoute) as mixed:
        router.for_history(["1", "a"])
    with pytest.raises(NoRoute) as nowhere:
        router.for_history(["zz"])
    assert ambiguous.value.askable and not mixed.value.askable and not nowhere.value.askable
    router._embedder = FakeEmbedder()
    with pytest.raises(NoRoute) as unclear:
        router.for_text("a film of a book")
    assert unclear.value.askable


def test_a_user_routes_by_the_data_that_holds_it(tmp_path, settings):
    home = tmp_path / "home"
    films = catalog(tmp_path, "films", ["1", "2"])  # user u1
    books = tmp_path / "books"
    books.mkdir()
    (books / "books.item").write_text("item_id:token\ttitle:token_seq\na\tA Book\n")
    (books / "books.inter").write_text("user_id:token\titem_id:token\nu1\ta\nu2\ta\n")
    scenario(home, "films", str(films), "movie", "Feature films.")
    scenario(home, "books", str(books), "book", "Novels.")
    router = Router(settings.model_copy(update={"home": home}), scenarios=["films", "books"])
    route = router.for_user("u2")
    assert route.scenario == "books" and route.reason == "routed to books (books): user 'u2' is in its data, and in no other scenario's"
    with pytest.raises(NoRoute, match="ambiguous user: 'u1' is a user of") as both:
        router.for_user("u1")
    assert both.value.askable and {name for name, _ in both.value.options} == {"films", "books"}
    with pytest.raises(NoRoute, match="unknown user 'u9'") as nobody:
        router.for_user("u9")
    assert not nobody.value.askable and nobody.value.exit_code == 3


def test_with_one_scenario_on_disk_any_text_goes_there_and_options_are_described(tmp_path, settings):
    home = tmp_path / "home"
    scenario(home, "films", str(catalog(tmp_path, "films", ["1"])), "movie", "Feature films from the nineties, with ratings. More.")
    router = Router(settings.model_copy(update={"home": home}), scenarios=["films"], embedder=object())  # never asked
    assert router.for_text("hello").reason == "routed to films (films): the only scenario whose data is on disk"
    assert router.describe("films") == "films (Feature films from the nineties, with ratings)"
    assert router.describe("films", chars=20) == "films (Feature films from …)"  # cut at a word
