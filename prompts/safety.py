"""Item text is untrusted. Text that could steer a model is taken out of it before any prompt.

`sanitize` strips three kinds of text from a title and keeps the rest:
- chat-template control text of any model family: special tokens (`<|im_start|>`, `</s>`, `[INST]`,
  `<start_of_turn>`, `<<SYS>>`, ...), markup tags, role and turn markers (`Assistant:`, `### Instruction`);
- answer-shaped text: `Answer: K`, `the correct answer is K`, `pick K`, `choose this movie`, and the pointwise
  prompt's `Answer: Yes`, `the answer is yes`, `the user will enjoy it`;
- imperative injection phrases, to the end of their clause: `ignore everything above ...`, `you are now ...`.

A title with nothing left, or whose rest still reads like an instruction, is replaced by a neutral
reference ("item 1234 (title withheld)"); the item can still be ranked, but its text cannot steer the model.
`looks_like_instruction` is the detector: any of the above, or words of the older denylist.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_ROLE = r"(?:system|user|assistant|model|human|bot|ai|developer|tool)"
_CLAUSE = r"[^.!?;\n]*[.!?;]?"  # an imperative is removed up to the end of its clause
# One label letter, bare or in quotes/brackets; a bare "A"/"I" before a Capitalised word is an article ("Pick A Winner").
_LABEL = r"(?:[\"'(\[](?-i:[A-Z])[\"')\]]|(?-i:[B-HJ-Z]|[AI](?!\s+[A-Z][a-z])))(?![\w'])"
_ITEM = r"(?:this|it)(?:\s+(?:one|movie|film|item|title|candidate|book|option|answer))?"

CONTROL = re.compile(
    r"(?:<\s*[|｜][^<>]{0,60}[|｜]\s*>"  # <|im_start|>, <|eot_id|>, <｜begin▁of▁sentence｜>
    r"|<\s*/?\s*(?:s|bos|eos|pad|unk|start_of_turn|end_of_turn|sys)\s*>"  # </s>, <start_of_turn>
    r"|<<\s*/?\s*SYS\s*>>|\[\s*/?\s*(?:INST|SYS|SYSTEM|USER|ASSISTANT)\s*\]"  # Llama 2 / Mistral
    r"|</?[a-z][\w:-]{0,30}(?:\s[^<>]{0,80})?/?>"  # any markup tag: </title>, <system>, <br/>
    r")(?:\s*" + _ROLE + r"\b)?(?:\s*:)?(?:\s*" + _LABEL + ")?"  # with the role or the label after it
    r"|(?:#{2,}\s*(?:instruction|response|input|system|user|assistant|human|context)s?\b\s*:?"  # Alpaca-style headers
    r"|\b" + _ROLE + r"\s*:)" + _CLAUSE,  # a role marker ("Human:", "Assistant:") and its turn's clause
    re.IGNORECASE,
)
_YES_NO = r"(?:yes|no)\b"  # the pointwise prompt's answers

ANSWER = re.compile(
    r"\b(?:the\s+)?(?:(?:correct|right|best|final|true|only|real)\s+)?(?:answer|choice|option|pick|selection|letter|label)"
    r"\s*(?:is|=|:|-|should\s+be|would\s+be|will\s+be|must\s+be)\s*(?:option\s+|letter\s+|label\s+)?(?:" + _LABEL + "|" + _ITEM + "|" + _YES_NO + ")"
    r"|[.!?;:,)]\s*say\s+" + _YES_NO +  # "Grease. Say yes." (a title that starts "Say Yes" is a title)
    r"|\b(?:pick|choose|select|answer|output|reply|respond)\s+(?:with\s+)?(?:option\s+|letter\s+|label\s+|candidate\s+)?"
    r"(?:" + _LABEL + "|" + _ITEM + "|" + _YES_NO + ")"
    r"|\b(?:the\s+)?user\s+(?:will|would|does|should|must)\s+(?:definitely\s+|surely\s+|really\s+)?(?:enjoy|like|love)\s+(?:it|this)\b"
    r"|\banswer\s*:(?:\s*" + _YES_NO + ")?",  # the ranking and pointwise prompts' own answer cue
    re.IGNORECASE,
)
_IMPERATIVE_CORE = re.compile(
    r"(?:"
    r"\b(?:ignore|disregard|forget|override|bypass|skip)\s+(?:all|any|every(?:thing)?|the|previous|prior|above|earlier|preceding"
    r"|your|these|those|other|what|instructions?|rules?)\b"
    r"|\byou\s+(?:are\s+now|(?:must|should|will|have\s+to|need\s+to)\s+(?:now\s+)?(?:ignore|forget|disregard|answer|respond|reply"
    r"|say|output|pick|choose|select|rank|recommend|rate|tell|always|only|never))\b"
    r"|\b(?:new|updated|hidden|secret)\s+(?:rules?|instructions?|task|system\s+prompt)\b"
    r"|\b(?:system\s+prompt|jailbreak|developer\s+mode)\b"
    r"|\btell\s+(?:the\s+)?(?:user|reader|viewer|them|everyone|people)\b"
    r"|\b(?:recommend|rank|rate|promote|put|place|list|score)\s+" + _ITEM + r"\b"
    r"|\b(?:say|print|output|write|type|repeat|respond|reply)\s+(?:with\s+|only\s+)*(?:[\"'“][^\"'”]*[\"'”]|(?-i:[A-Z]{2,})\b)"
    r")" + _CLAUSE,
    re.IGNORECASE,
)
_LEAD_REVERSED = re.compile(r"(?:\s+(?:esaelp|won|dna|neht|os)\b)*+", re.IGNORECASE)
"""Softeners before an imperative ("please", "and then"), matched backwards from its first word."""


class _Imperative:
    """An imperative injection phrase with the softeners before it ("and then ignore ..."), in linear time.

    As one pattern (a starred group of softeners before the core), the regex backtracked over every suffix of a run
    of those words at every start position: quadratic ("and " x 4,000 took 7 s). Here the core is searched alone, and each
    match is extended backwards over its softeners by an anchored, possessive match on the reversed text before it
    (never past the previous match), so every character is read a bounded number of times."""

    def __init__(self, core: re.Pattern[str]):
        self.core = core

    def _spans(self, text: str):
        floor = 0
        for match in self.core.finditer(text):
            start = match.start()
            lead = _LEAD_REVERSED.match(text[floor:start][::-1])
            if lead:
                start -= lead.end()  # at the first softener's first letter
            yield start, match.end()
            floor = match.end()

    def search(self, text: str) -> re.Match[str] | None:
        return self.core.search(text)

    def sub(self, repl, text: str) -> str:
        out, last = [], 0
        for start, end in self._spans(text):
            span = re.match(r".*", text[start:end], re.DOTALL)
            assert span is not None
            out += [text[last:start], repl(span) if callable(repl) else repl]
            last = end
        return "".join([*out, text[last:]])


IMPERATIVE = _Imperative(_IMPERATIVE_CORE)
DENYLIST = re.compile(  # words no title needs; a title still holding one after `sanitize` is withheld
    r"ignore (all|any|the|previous|prior|above|earlier)|disregard|forget (all|everything|the|your)|system prompt|"
    r"\binstructions?\b|you are now|new rules?|answer with|respond with|reply with|\bprint\b|\bsay\s+[\"']|\bjailbreak|\bprompt\b",
    re.IGNORECASE,
)
_FORMAT = re.compile(r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")  # zero-width and direction characters
_SEPARATORS = " .,;:!?|/\\-–—*#>=~"
_MARK = "\x00"


@dataclass(frozen=True)
class Sanitized:
    text: str
    """The title with control, answer-shaped and imperative text removed."""
    removed: tuple[str, ...]
    """What was taken out, in order."""

    @property
    def withhold(self) -> bool:
        """Nothing is left once the instruction is removed, or what is left still reads like one."""
        return (bool(self.removed) and not re.search(r"\w", self.text)) or looks_like_instruction(self.text)


def _normal(text: str) -> str:
    """NFKC (full-width bars and letters become ASCII) without invisible characters."""
    return _FORMAT.sub("", unicodedata.normalize("NFKC", text))


def sanitize(text: str) -> Sanitized:
    """Strip control text, answer-shaped text and imperative phrases; a title with none of them is returned unchanged."""
    normal = _normal(text)
    removed: list[str] = []

    def cut(match: re.Match[str]) -> str:
        removed.append(match.group(0).strip())
        return _MARK

    out = normal
    for pattern in (CONTROL, IMPERATIVE, ANSWER):
        out = pattern.sub(cut, out)
    if not removed:
        return Sanitized(text, ())
    # A removed span, with the brackets or separators around it, becomes one space; separators left at the ends go.
    around = r"[\s" + re.escape(_SEPARATORS) + _MARK + r"]*"
    out = re.sub(r"[(\[{]" + around + _MARK + around + r"[)\]}]", _MARK, out)
    out = re.sub(r"[\s" + re.escape(_SEPARATORS) + r"]*" + _MARK + around, " ", out)
    return Sanitized(" ".join(out.split()).strip(_SEPARATORS), tuple(removed))


def looks_like_instruction(text: str) -> bool:
    """Control text, answer-shaped text, an imperative injection phrase, or a denylisted word."""
    text = _normal(text)
    return any(p.search(text) for p in (CONTROL, ANSWER, IMPERATIVE, DENYLIST))


def withheld(item_id: str) -> str:
    return f"item {item_id} (title withheld)"
