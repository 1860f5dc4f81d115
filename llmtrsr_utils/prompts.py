"""Every prompt the kit sends to an LLM, per domain, in one place.

Wording follows the paper's figures: block summary (Figures 3 and 6), hierarchical merge
(Figure 4), recurrent update (Figure 7). The user turn is wrapped in the model's chat template
when it has one, else in the paper's ``### User:`` / ``### Assistant:`` format. Templates are
written flush-left: the authors' scripts leak source indentation into their prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PLAIN_TEMPLATE = "### User:\n{content}\n\n### Assistant:\n"


@dataclass(frozen=True)
class DomainWords:
    """The nouns and verbs that make one instruction fit news, products or movies."""

    activity: str  # "news reading"
    items: str  # "news"
    verb: str  # "read"
    records: str  # "reading records"
    details: str  # "the categories and titles of the news"
    goal: str  # what the summary should capture
    data_noun: str  # "news reading data": "Given the historical <data_noun> of a user"
    data_header: str  # "News Reading Data"
    act: str  # "click on": what the recommender predicts the user will do
    item: str  # "news article": one candidate


DOMAINS: dict[str, DomainWords] = {
    "news": DomainWords(
        activity="news reading", items="news", verb="read", records="reading records",
        details="the categories and titles of the news",
        goal="the user's news reading preferences", data_noun="news reading data",
        data_header="News Reading Data",
        act="click on", item="news article"),
    "shopping": DomainWords(
        activity="shopping", items="products", verb="purchased", records="purchases",
        details="the titles, descriptions, and attributes of the items they have bought",
        goal="the user's preferences, personality, and shopping habits",
        data_noun="purchase data",
        data_header="Historical Purchase Data",
        act="purchase", item="product"),
    "movies": DomainWords(
        activity="movie watching", items="movies", verb="watched", records="viewing records",
        details="the titles, release years, genres and tags of the movies they have rated",
        goal="the user's movie preferences", data_noun="movie watching data",
        data_header="Movie Watching Data",
        act="watch", item="movie"),
    "generic": DomainWords(
        activity="interaction", items="items", verb="interacted with",
        records="interactions", details="the attributes of the items they have interacted with",
        goal="the user's preferences", data_noun="interaction data",
        data_header="Interaction Data",
        act="interact with", item="item"),
}


def domain_words(domain: str) -> DomainWords:
    try:
        return DOMAINS[domain]
    except KeyError:
        raise KeyError(f"no prompt wording for domain {domain!r}; known: "
                       f"{', '.join(DOMAINS)}") from None


def numbered(lines: Sequence[str]) -> str:
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, start=1))


def block_summary(domain: str, items: Sequence[str]) -> str:
    """Summarize one block of items (Figures 3 and 6)."""
    words = domain_words(domain)
    return (f"Given the historical {words.data_noun} of a user, including {words.details}, "
            f"craft a concise summary that captures {words.goal}.\n\n"
            f"[{words.data_header}]\n{numbered(items)}")


def hierarchical_merge(domain: str, summaries: Sequence[str]) -> str:
    """Summarize chronologically ordered summaries into one (Figure 4)."""
    return ("Given a series of user preferences summaries arranged in chronological order, "
            "generate a concise summary that encapsulates the user's overall preference. Note "
            "that the newly generated summary of user preferences should be consistent with the "
            "format of the given summaries.\n\n"
            f"[User Preferences Summaries]\n{numbered(summaries)}")


def recurrent_update(domain: str, previous_summary: str, items: Sequence[str]) -> str:
    """Update a running summary with the next block of items (Figure 7)."""
    words = domain_words(domain)
    return (f"Given the following summary of a user's {words.activity} preference, and a list "
            f"of recent {words.items} they have {words.verb}, analyze whether the user's "
            f"{words.activity} preferences and habits have changed. Taking into account both the "
            f"existing summary of user preferences and the user's most recent {words.records}, "
            f"generate an updated concise summary that captures {words.goal}. Note that the "
            "newly generated summary of user preferences should be consistent with the format "
            "of the previous Preference Summary. It should serve as a complete summary of the "
            "user, rather than a separate narrative of the user's original summary and current "
            "preferences.\n\n"
            f"[Previous Preference Summary]\n{previous_summary}\n\n"
            f"[Recent {words.data_header}]\n{numbered(items)}")


NULL_ITEMS = "NULL"  # the paper's placeholder when no recent item is shown (item_num 0)


def recommendation(domain: str, summary: str | None, recent_items: Sequence[str],
                   candidate: str, answers: Sequence[str] = ("yes", "no")) -> str:
    """The recommender's prompt without its answer (Figure 8): instruction, preference summary,
    recent items (oldest first), candidate. ``summary=None`` drops the summary part: with the
    full history as recent items this is the TALLRec baseline."""
    words = domain_words(domain)
    yes, no = answers
    history = numbered(recent_items) if recent_items else NULL_ITEMS
    if summary is None:
        return (f"Given information related to the historical {words.items} the user has "
                f"{words.verb}, predict whether the user will {words.act} the given next "
                f"{words.item}. Please output '{yes}' or '{no}'.\n\n"
                f"[Historical Items]\n{history}\n\n"
                f"[Next Item]\n{candidate}")
    return (f"Given a preference summary of the user, and information related to the historical "
            f"{words.items} the user has {words.verb}, predict whether the user will {words.act} "
            f"the given next {words.item}. Note that the preference summary captures long-term "
            "interests, while the recent items indicate short term interests. Both of them should "
            "be holistically considered for a more comprehensive understanding of user behavior. "
            f"Please output '{yes}' or '{no}'.\n\n"
            f"[Preference Summary]\n{summary}\n\n"
            f"[Historical Items]\n{history}\n\n"
            f"[Next Item]\n{candidate}")


class PromptFormatter:
    """Wraps a user turn for one tokenizer and counts its tokens exactly as it will be fed."""

    def __init__(self, tokenizer, use_chat_template: bool | None = None):
        self.tokenizer = tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template

    def render(self, content: str) -> str:
        """The full prompt text, ending where the model's answer begins."""
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False,
                add_generation_prompt=True)
        return PLAIN_TEMPLATE.format(content=content)

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt; a chat template already holds its special tokens,
        the plain format gets the tokenizer's own (e.g. Gemma's <bos>)."""
        return self.tokenizer(prompt, add_special_tokens=not self.use_chat_template)["input_ids"]

    def count(self, content: str) -> int:
        return len(self.encode(self.render(content)))
