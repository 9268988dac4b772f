"""The LLM's reading of chat messages is off the default path (issue 17.6): it cost most of each turn and added no
grounded value, while the rules read the held-out phrasings. It stays available as an opt-in."""

from llmrec.agents.conversation import ChatConfig
from llmrec.entrypoints.cli import parser


def test_the_rules_alone_read_messages_by_default():
    assert ChatConfig().llm_understanding is False


def test_the_llm_reading_is_an_opt_in_on_the_command_line():
    args = parser().parse_args(["chat", "--user", "196", "--llm-understanding"])
    assert args.llm_understanding and not args.no_llm_understanding
    plain = parser().parse_args(["chat", "--user", "196"])
    assert not plain.llm_understanding
