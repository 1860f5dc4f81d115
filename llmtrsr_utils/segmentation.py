"""Cut a history into blocks and make every summarizer prompt fit the model's context.

A prompt may use ``limit - max_new_tokens`` tokens, where ``limit`` is the smaller of the
configured ``max_length`` (paper: 2048) and the model's own context length. When a prompt is
over budget the longest texts in it are shortened, one at a time and only as much as needed;
the instruction is never touched and no item is dropped. Every shortening is counted, so a
summary built from shortened text is visible in the outputs. A prompt that cannot fit even with
every text cut to ``min_text_tokens`` is an error that says what to change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmtrsr_utils.prompts import PromptFormatter, block_summary

ELLIPSIS = " ..."
REPLACEMENT = "\ufffd"  # what a byte-level tokenizer decodes half a character to


def shortened_text(tokenizer, ids: Sequence[int], keep: int) -> str:
    """The first ``keep`` token ids of a text decoded, never ending in a broken character.

    Byte-level BPE splits one emoji, CJK or accented character over several tokens; cutting
    between them decodes to U+FFFD. Tokens are dropped from the cut until the text no longer
    ends in a replacement character that the whole text does not have there, then the
    ellipsis is added (issue 23)."""
    whole = tokenizer.decode(list(ids))
    while keep > 0:
        text = tokenizer.decode(list(ids[:keep])).rstrip()
        if not text.endswith(REPLACEMENT) or whole.startswith(text):
            return text + ELLIPSIS
        keep -= 1
    return ELLIPSIS


class PromptTooLongError(ValueError):
    """A prompt that cannot be made to fit the context budget."""


@dataclass
class FittedPrompt:
    prompt: str  # rendered (chat template applied), ready to tokenize
    texts: list[str]  # the texts as they went into the prompt
    tokens: int
    shortened: int  # how many texts were cut to fit


@dataclass
class Block:
    index: int  # 0-based, oldest block first
    item_ids: list[str]
    fitted: FittedPrompt

    @property
    def items(self) -> list[str]:
        return self.fitted.texts


def split_into_blocks(sequence: Sequence, block_size: int) -> list[list]:
    """Consecutive blocks of ``block_size`` (the last may be shorter), oldest first."""
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    return [list(sequence[i:i + block_size]) for i in range(0, len(sequence), block_size)]


class PromptFitter:
    """Builds prompts within a token budget for one tokenizer."""

    def __init__(self, formatter: PromptFormatter, *, max_length: int, max_new_tokens: int,
                 model_max_length: int | None = None, min_text_tokens: int = 16):
        limit = min(max_length, model_max_length) if model_max_length else max_length
        self.formatter = formatter
        self.tokenizer = formatter.tokenizer
        self.limit = limit
        self.budget = limit - max_new_tokens
        self.min_text_tokens = min_text_tokens
        if self.budget <= 0:
            raise PromptTooLongError(
                f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in a context of "
                f"{limit} tokens (max_length {max_length}, model {model_max_length})")

    def fit(self, build: Callable[[list[str]], str], texts: Sequence[str],
            what: str = "prompt") -> FittedPrompt:
        """Shorten the longest of ``texts`` until ``build(texts)`` fits the budget."""
        texts = list(texts)
        prompt = self.formatter.render(build(texts))
        tokens = len(self.formatter.encode(prompt))
        if tokens <= self.budget:
            return FittedPrompt(prompt, texts, tokens, 0)
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        lengths = [len(x) for x in ids]
        shortened: set[int] = set()
        while tokens > self.budget:
            longest = max(range(len(texts)), key=lambda i: lengths[i])
            if lengths[longest] <= self.min_text_tokens:
                raise PromptTooLongError(
                    f"{what} needs {tokens} tokens but the budget is {self.budget} "
                    f"({self.limit} context - generation room) even with each of its "
                    f"{len(texts)} texts cut to {self.min_text_tokens} tokens; raise max_length, "
                    f"lower max_new_tokens or block_size, or use fewer attributes")
            keep = max(self.min_text_tokens, lengths[longest] - (tokens - self.budget) - 2)
            texts[longest] = shortened_text(self.tokenizer, ids[longest], keep)
            lengths[longest] = keep
            shortened.add(longest)
            prompt = self.formatter.render(build(texts))
            tokens = len(self.formatter.encode(prompt))
        return FittedPrompt(prompt, texts, tokens, len(shortened))

    def segment(self, domain: str, item_ids: Sequence[str], item_texts: Sequence[str],
                block_size: int, user_id: str = "?", *, style: str = "paper") -> list[Block]:
        """The blocks of one user's history, each with its block-summary prompt fitted
        (``style``: the summarizer's ``summary_style``)."""
        blocks = []
        pairs = list(zip(item_ids, item_texts, strict=True))
        for index, chunk in enumerate(split_into_blocks(pairs, block_size)):
            ids = [i for i, _ in chunk]
            fitted = self.fit(lambda texts: block_summary(domain, texts, style),
                              [t for _, t in chunk],
                              what=f"user {user_id} block {index + 1} summary prompt")
            blocks.append(Block(index, ids, fitted))
        return blocks
