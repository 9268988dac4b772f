"""The one text-normalisation module."""

from llmrec.text import fold, natural_title, normal, title_forms, words


def test_folding_and_words():
    assert fold("Misérables") == "Miserables"
    assert normal("Misérables, Les") == "miserables les" and normal("Sci-Fi") == "sci fi"
    assert words("Children's") == ["Children", "s"]


def test_title_forms_in_either_article_order():
    assert natural_title("Usual Suspects, The") == "The Usual Suspects" and natural_title("Heat") == "Heat"
    assert title_forms("Usual Suspects, The") == {"Usual Suspects, The", "The Usual Suspects"}
    assert title_forms("Big Blue, The (Grand bleu, Le)") == {
        "Big Blue, The (Grand bleu, Le)", "Big Blue, The", "The Big Blue", "Grand bleu, Le", "Le Grand bleu"}
    assert title_forms("Sabrina (1954)") == {"Sabrina (1954)"}  # a year is not an alternative title
