from __future__ import annotations

import pytest

from llmtrsr_utils.models import load_tokenizer
from llmtrsr_utils.prompts import PromptFormatter, block_summary, hierarchical_merge
from llmtrsr_utils.segmentation import PromptFitter, PromptTooLongError, split_into_blocks


@pytest.fixture(scope="module")
def formatter():
    return PromptFormatter(load_tokenizer("tiny-random-llama"))


def items(n: int, words: int = 6) -> list[str]:
    return [f"Title: Movie {i}; Genres: " + " ".join(["drama"] * words) for i in range(n)]


def test_blocks_are_consecutive_oldest_first():
    assert split_into_blocks(list(range(12)), 5) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    assert split_into_blocks([], 5) == []
    with pytest.raises(ValueError):
        split_into_blocks([1], 0)


def test_prompt_that_fits_is_left_alone(formatter):
    fitter = PromptFitter(formatter, max_length=2048, max_new_tokens=150)
    blocks = fitter.segment("movies", [str(i) for i in range(12)], items(12), block_size=5)
    assert [len(b.item_ids) for b in blocks] == [5, 5, 2]
    assert all(b.fitted.shortened == 0 for b in blocks)
    assert all(b.fitted.tokens <= fitter.budget for b in blocks)
    assert blocks[0].items == items(12)[:5]


def test_item_longer_than_the_whole_budget_is_shortened_not_dropped(formatter):
    fitter = PromptFitter(formatter, max_length=256, max_new_tokens=56, min_text_tokens=8)
    texts = items(5)
    texts[2] = "Title: Endless; Tags: " + "very long text " * 400  # > 1,000 tokens alone
    block = fitter.segment("movies", list("abcde"), texts, block_size=5)[0]
    assert block.fitted.tokens <= fitter.budget == 200
    assert block.fitted.shortened == 1
    assert block.items[2].endswith("...") and block.items[2].startswith("Title: Endless")
    assert block.items[:2] == texts[:2] and block.items[3:] == texts[3:]
    # The instruction and all five items are still there.
    content = block_summary("movies", block.items)
    assert content.split("\n")[0] in block.fitted.prompt
    assert all(f"\n{i}. " in block.fitted.prompt for i in range(1, 6))


def test_longest_texts_are_cut_first_and_only_as_needed(formatter):
    fitter = PromptFitter(formatter, max_length=400, max_new_tokens=100, min_text_tokens=8)
    summaries = ["short summary " * 3, "medium summary text " * 30, "long summary words " * 60]
    fitted = fitter.fit(lambda t: hierarchical_merge("movies", t), summaries)
    assert fitted.tokens <= fitter.budget
    assert fitted.texts[0] == summaries[0]
    assert fitted.texts[2] != summaries[2]


def test_prompt_that_cannot_fit_is_a_clear_error(formatter):
    fitter = PromptFitter(formatter, max_length=120, max_new_tokens=40, min_text_tokens=30)
    with pytest.raises(PromptTooLongError, match=r"user u7 block 1 summary prompt needs \d+ "
                                                 r"tokens but the budget is 80"):
        fitter.segment("movies", list("abcde"), items(5, words=40), block_size=5, user_id="u7")
    with pytest.raises(PromptTooLongError, match="leaves no room"):
        PromptFitter(formatter, max_length=100, max_new_tokens=100)


def test_model_limit_caps_max_length(formatter):
    fitter = PromptFitter(formatter, max_length=2048, max_new_tokens=48, model_max_length=512)
    assert fitter.limit == 512 and fitter.budget == 464


def test_prompts_have_no_stray_indentation():
    for content in (block_summary("news", ["a", "b"]), hierarchical_merge("shopping", ["x"])):
        assert not any(line.startswith((" ", "\t")) for line in content.splitlines())


@pytest.mark.parametrize("text", [
    "🎬🎞️🍿 Amélie, Crème brûlée",
    "東京物語 七人の侍 千と千尋の神隠し",
    "Ça ira 👩‍👩‍👧 naïve façade",
])
def test_shortening_never_leaves_a_broken_character(formatter, text):
    """Issue 23: a cut between the byte tokens of one character decoded to U+FFFD in the
    prompt. Every cut length of these texts is tried: none ends in a replacement character,
    and each is a prefix of the text plus the ellipsis."""
    from llmtrsr_utils.segmentation import ELLIPSIS, REPLACEMENT, shortened_text

    tokenizer = formatter.tokenizer
    ids = tokenizer.encode(text, add_special_tokens=False)
    broken = [k for k in range(1, len(ids))
              if tokenizer.decode(ids[:k]).rstrip().endswith(REPLACEMENT)]
    assert broken, "the tokenizer must split a character here, or the test proves nothing"
    for keep in range(1, len(ids)):
        cut = shortened_text(tokenizer, ids, keep)
        assert REPLACEMENT not in cut and cut.endswith(ELLIPSIS)
        assert text.startswith(cut.removesuffix(ELLIPSIS))
    fitter = PromptFitter(formatter, max_length=90, max_new_tokens=8, min_text_tokens=4)
    fitted = fitter.fit(lambda texts: block_summary("movies", texts), [text * 8, "Heat"])
    assert fitted.shortened == 1 and REPLACEMENT not in fitted.prompt
