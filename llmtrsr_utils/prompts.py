"""Every prompt the kit sends to an LLM, per domain, in one place.

Where each wording comes from (FIDELITY.md has the table):

- block summary: Figure 3 (shopping) and Figure 6 (news), verbatim; movies and generic are
  derived from them by swapping the domain's nouns, as section 4.1.2 suggests;
- hierarchical merge: Figure 4, verbatim, for every domain;
- recurrent update: Figure 7 (news), verbatim; shopping uses the authors' wording in
  ``preprocess/amazon/summary_generation.py`` (the paper shows no shopping update prompt);
  movies and generic are derived from Figure 7;
- recommendation: Figure 8 (shopping), verbatim, including its "Please output 'Yes' or 'No'";
  the paper shows no news or movie recommendation prompt, so both are derived from Figure 8 the
  same way (news takes the authors' nouns from ``LLM-TRSR/train.py``: "a news reading
  preference summary", "[Historical News]", "[Next News]"; the authors' "the recent five news"
  becomes "the recent news", since the paper shows 3). The answer tokens are the authors'
  lowercase ``yes``/``no`` (their train.py appends 'yes'/'no' and test.py reads those ids); the
  instruction prints them capitalized as Figure 8 does.

``prompt_format: plain`` wraps the user turn in the paper's ``### User:`` / ``### Assistant:``
text (as the figures print it: a blank line before ``### Assistant:``); ``chat`` uses the
tokenizer's chat template and is refused for a model without one; ``auto`` takes the template
when there is one, else plain (an explicit choice: the format used is recorded). Templates are
written flush-left: the authors' scripts leak source indentation into their prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PLAIN_TEMPLATE = "### User:\n{content}\n\n### Assistant:\n"
PROMPT_FORMATS = ("plain", "chat", "auto")


class ChatTemplateMissingError(ValueError):
    """prompt_format: chat for a tokenizer that has no chat template."""


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
    recent_header: str  # "Recent News Reading Data" (recurrent update, Figure 7)
    # Recommendation prompt (Figure 8): "Given <rec_summary> of the user, and information
    # related to the historical <rec_items> the user has <verb>, predict whether the user will
    # <act> the given next <item>. ... while the recent <rec_items> indicate ..."
    rec_summary: str  # "a preference summary"
    rec_items: str  # "items"
    act: str  # "click on"
    item: str  # "product"
    history_header: str  # "Historical Items"
    next_header: str  # "Next Item"
    # The recurrent update's first sentence when the paper shows none and the authors wrote
    # one (shopping); None derives it from Figure 7.
    update_opening: str | None = None


DOMAINS: dict[str, DomainWords] = {
    "news": DomainWords(
        activity="news reading", items="news", verb="read", records="reading records",
        details="the categories and titles of the news",
        goal="the user's news reading preferences", data_noun="news reading data",
        data_header="News Reading Data", recent_header="Recent News Reading Data",
        rec_summary="a news reading preference summary", rec_items="news", act="click on",
        item="news", history_header="Historical News", next_header="Next News"),
    "shopping": DomainWords(
        activity="shopping", items="products", verb="purchased", records="purchase records",
        details="the titles, descriptions, and attributes of the items they have bought",
        goal="the user's preferences, personality, and shopping habits",
        data_noun="purchase data", data_header="Historical Purchase Data",
        recent_header="Recent Purchase Data",
        rec_summary="a preference summary", rec_items="items", act="click on",
        item="product", history_header="Historical Items", next_header="Next Item",
        update_opening=("Given the following summary of a user's preferences and a list of "
                        "recent purchases they have made, analyze whether the user's shopping "
                        "preferences and habits have changed.")),
    "movies": DomainWords(
        activity="movie watching", items="movies", verb="watched", records="viewing records",
        details="the titles, release years, genres and tags of the movies they have rated",
        goal="the user's movie preferences", data_noun="movie watching data",
        data_header="Movie Watching Data", recent_header="Recent Movie Watching Data",
        rec_summary="a movie preference summary", rec_items="movies", act="watch",
        item="movie", history_header="Historical Movies", next_header="Next Movie"),
    "generic": DomainWords(
        activity="interaction", items="items", verb="interacted with",
        records="interactions", details="the attributes of the items they have interacted with",
        goal="the user's preferences", data_noun="interaction data",
        data_header="Interaction Data", recent_header="Recent Interaction Data",
        rec_summary="a preference summary", rec_items="items", act="interact with",
        item="item", history_header="Historical Items", next_header="Next Item"),
}


def domain_words(domain: str) -> DomainWords:
    try:
        return DOMAINS[domain]
    except KeyError:
        raise KeyError(f"no prompt wording for domain {domain!r}; known: "
                       f"{', '.join(DOMAINS)}") from None


def numbered(lines: Sequence[str]) -> str:
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, start=1))


# summarizer.summary_style: "paper" (Figures 4, 6, 7 as printed) or "fields" (issue 22, item 5:
# the same instruction, then a fixed short form to fill, so that a small summarizer names what
# the items have in common instead of retelling them).
SUMMARY_STYLES = ("paper", "fields")
SUMMARY_FIELDS: dict[str, tuple[str, ...]] = {
    "movies": ("Genres", "Themes", "Eras"),
    "news": ("Categories", "Topics", "Regions"),
    "shopping": ("Categories", "Brands", "Price range"),
    "generic": ("Kinds", "Attributes", "Periods"),
}


def summary_form(domain: str, style: str) -> str:
    """What ``style`` adds after a summarizer instruction: nothing (paper), or the fixed form."""
    if style not in SUMMARY_STYLES:
        raise ValueError(f"summary style must be one of {', '.join(SUMMARY_STYLES)}; got "
                         f"{style!r}")
    if style == "paper":
        return ""
    fields = SUMMARY_FIELDS.get(domain, SUMMARY_FIELDS["generic"])
    lines = "\n".join(f"{name}: ..." for name in fields)
    return (" Answer in exactly this form, a few words per line, naming only what the data "
            f"shows:\n{lines}")


def block_summary(domain: str, items: Sequence[str], style: str = "paper") -> str:
    """Summarize one block of items (Figures 3 and 6)."""
    words = domain_words(domain)
    return (f"Given the historical {words.data_noun} of a user, including {words.details}, "
            f"craft a concise summary that captures {words.goal}."
            f"{summary_form(domain, style)}\n\n"
            f"[{words.data_header}]\n{numbered(items)}")


def hierarchical_merge(domain: str, summaries: Sequence[str], style: str = "paper") -> str:
    """Summarize chronologically ordered summaries into one (Figure 4)."""
    return ("Given a series of user preferences summaries arranged in chronological order, "
            "generate a concise summary that encapsulates the user's overall preference. Note "
            "that the newly generated summary of user preferences should be consistent with the "
            f"format of the given summaries.{summary_form(domain, style)}\n\n"
            f"[User Preferences Summaries]\n{numbered(summaries)}")


def recurrent_update(domain: str, previous_summary: str, items: Sequence[str],
                     style: str = "paper") -> str:
    """Update a running summary with the next block of items (Figure 7)."""
    words = domain_words(domain)
    opening = words.update_opening or (
        f"Given the following summary of a user's {words.activity} preference, and a list "
        f"of recent {words.items} they have {words.verb}, analyze whether the user's "
        f"{words.activity} preferences and habits have changed.")
    return (f"{opening} Taking into account both the existing summary of user preferences and "
            f"the user's most recent {words.records}, generate an updated concise summary that "
            f"captures {words.goal}. Note that the newly generated summary of user preferences "
            "should be consistent with the format of the previous Preference Summary. It should "
            "serve as a complete summary of the user, rather than a separate narrative of the "
            f"user's original summary and current preferences.{summary_form(domain, style)}"
            "\n\n"
            f"[Previous Preference Summary]\n{previous_summary}\n\n"
            f"[{words.recent_header}]\n{numbered(items)}")


NULL_ITEMS = "NULL"  # the paper's placeholder when no recent item is shown (item_num 0)


def recommendation(domain: str, summary: str | None, recent_items: Sequence[str],
                   candidate: str, answers: Sequence[str] = ("yes", "no"),
                   no_summary: str = "null_summary") -> str:
    """The recommender's prompt without its answer (Figure 8): instruction, preference summary,
    recent items (oldest first, NULL when none), candidate.

    ``summary=None`` is a prompt without summary (the TALLRec baseline, with the full history as
    recent items): ``no_summary="null_summary"`` keeps Figure 8's instruction and writes NULL as
    the summary (the authors' ``no_summary``); ``"drop_summary"`` drops the summary from the
    instruction and the prompt.
    """
    words = domain_words(domain)
    yes, no = (word.capitalize() for word in answers)
    history = numbered(recent_items) if recent_items else NULL_ITEMS
    tail = (f"[{words.history_header}]\n{history}\n\n"
            f"[{words.next_header}]\n{candidate}")
    if summary is None and no_summary == "drop_summary":
        return (f"Given information related to the historical {words.rec_items} the user has "
                f"{words.verb}, predict whether the user will {words.act} the given next "
                f"{words.item}. Please output '{yes}' or '{no}'.\n\n{tail}")
    if summary is None and no_summary != "null_summary":
        raise ValueError(f"no_summary must be null_summary or drop_summary, got {no_summary!r}")
    return (f"Given {words.rec_summary} of the user, and information related to the historical "
            f"{words.rec_items} the user has {words.verb}, predict whether the user will "
            f"{words.act} the given next {words.item}. Note that the preference summary "
            f"captures long-term interests, while the recent {words.rec_items} indicate short "
            "term interests. Both of them should be holistically considered for a more "
            "comprehensive understanding of user behavior. "
            f"Please output '{yes}' or '{no}'.\n\n"
            f"[Preference Summary]\n{NULL_ITEMS if summary is None else summary}\n\n{tail}")


class PromptFormatter:
    """Wraps a user turn for one tokenizer and counts its tokens exactly as it will be fed.

    Args:
        tokenizer: the model's tokenizer.
        prompt_format: ``plain`` (the paper's ``### User:`` text), ``chat`` (the tokenizer's
            chat template; refused when the tokenizer has none) or ``auto`` (chat when there is
            a template, else plain). ``self.prompt_format`` is the format actually used.
        model_name: named in the error for a missing chat template.
    """

    def __init__(self, tokenizer, prompt_format: str = "plain", model_name: str = "the model"):
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}; got "
                             f"{prompt_format!r}")
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if prompt_format == "auto":
            prompt_format = "chat" if has_template else "plain"
        if prompt_format == "chat" and not has_template:
            raise ChatTemplateMissingError(
                f"prompt_format: chat, but {model_name}'s tokenizer has no chat template; use "
                f"prompt_format: plain (the paper's '### User:' format) for this model")
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format

    @property
    def use_chat_template(self) -> bool:
        return self.prompt_format == "chat"

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
