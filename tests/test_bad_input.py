"""The bad-input corpus: each case builds one broken input in the real format and names the
exact error it must give (file and line, or the params key, and what was expected). Cases
that reach the data stage also check that nothing already computed was lost."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from llmtrsr_utils.config import ConfigError, DataConfig, load_config
from llmtrsr_utils.datasets.base import DataFormatError
from llmtrsr_utils.datasets.loaders import amazon_m2, generic, mind, movielens
from tests.conftest import smoke_config, write_movielens
from tests.test_loaders_amazon_m2 import PRODUCTS, SESSIONS, write_m2
from tests.test_loaders_generic import INTERACTIONS, ITEMS, write_generic
from tests.test_loaders_mind import BEHAVIORS, NEWS, write_mind

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    name: str
    run: Callable[[Path], object]  # raises the error, given an empty folder
    error: type[Exception]
    # The exact message, "{dir}" standing for the folder; a message ending in " ..." is
    # compared up to there (what follows lists every known key or model, which grows).
    message: str


def params_file(folder: Path, text: str) -> Path:
    path = folder / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def lines_replaced(text: str, index: int, line: str) -> str:
    rows = text.splitlines()
    rows[index] = line
    return "\n".join(rows) + "\n"


def movielens_with(folder: Path, file: str, line_index: int, line: str) -> Path:
    root = write_movielens(folder / "ml")
    path = root / file
    path.write_text(lines_replaced(path.read_text(), line_index, line), encoding="utf-8")
    return root


def load_movielens(root: Path):
    return movielens.load(DataConfig(name="movielens"), root)


def mind_case(folder: Path, news=NEWS, behaviors=BEHAVIORS):
    return mind.load(DataConfig(name="mind"), write_mind(folder / "mind", news, behaviors))


def m2_case(folder: Path, sessions=SESSIONS, products=PRODUCTS):
    return amazon_m2.load(DataConfig(name="amazon-m2"), write_m2(folder / "m2", sessions,
                                                                products))


def generic_case(folder: Path, items=ITEMS, interactions=INTERACTIONS, **data):
    return generic.load(DataConfig(name="generic", **data), write_generic(folder / "g", items,
                                                                         interactions))


def non_utf8(folder: Path):
    root = write_movielens(folder / "ml")
    raw = (root / "movies.csv").read_bytes().replace(b"Babylon 5", b"Babylon \xff5")
    (root / "movies.csv").write_bytes(raw)
    return load_movielens(root)


def missing_history_item(folder: Path):
    from llmtrsr_utils.datasets.splits import prepare_dataset

    root = write_generic(folder / "g", interactions=INTERACTIONS + "u2,ghost,50\n")
    cfg = load_config(None, [f"work_dir={folder / 'work'}", "data.name=generic",
                             f"data.dir={root}", "data.missing_item_policy=error",
                             "data.min_history=1", "data.n_train_users=1",
                             "data.n_valid_users=1", "data.n_test_users=1"])
    return prepare_dataset(cfg)


def generic_prepared(folder: Path, interactions: str = INTERACTIONS, *overrides: str):
    from llmtrsr_utils.datasets.splits import prepare_dataset

    root = write_generic(folder / "g", interactions=interactions)
    cfg = load_config(None, [f"work_dir={folder / 'work'}", "data.name=generic",
                             f"data.dir={root}", "data.min_history=1", "data.n_train_users=1",
                             "data.n_valid_users=1", "data.n_test_users=1", *overrides])
    return prepare_dataset(cfg)


def empty_history(folder: Path):
    from llmtrsr_utils.baselines import embedding_scores

    frame = pd.DataFrame({"user_id": ["u7"], "history": [[]], "target": ["a"],
                          "negatives": [["b"]]})
    return embedding_scores(frame, ["a", "b"], [[1.0, 0.0], [0.0, 1.0]])


def split_with_bad_candidates(folder: Path, negatives: list[str]):
    from llmtrsr_utils.datasets.splits import load_split

    pd.DataFrame({"user_id": ["u1"], "history": [["a", "b"]], "target": ["c"],
                  "negatives": [negatives]}).to_parquet(folder / "test.parquet")
    return load_split(folder, "test")


def summarizer_prompt_too_long(folder: Path):
    from llmtrsr_utils.models import load_tokenizer
    from llmtrsr_utils.prompts import PromptFormatter
    from llmtrsr_utils.segmentation import PromptFitter

    fitter = PromptFitter(PromptFormatter(load_tokenizer("smollm2-135m"), "chat"),
                          max_length=128, max_new_tokens=64)
    return fitter.segment("movies", ["m1"], ["Title: " + "a very long title " * 30],
                          block_size=1, user_id="42")


def chat_format_without_template(folder: Path):
    from llmtrsr_utils.models import load_tokenizer
    from llmtrsr_utils.prompts import PromptFormatter

    tokenizer = load_tokenizer("smollm2-135m")
    tokenizer.chat_template = None  # as a base model's tokenizer (e.g. Gemma 3 270M)
    return PromptFormatter(tokenizer, "chat", "gemma3-270m")


def unknown_model(folder: Path):
    from llmtrsr_utils.models import load_causal_lm

    return load_causal_lm("smolm2-135m")


def answer_not_one_token(folder: Path):
    from llmtrsr_utils.models import load_tokenizer
    from llmtrsr_utils.recommend import answer_token_ids

    tokenizer = load_tokenizer("smollm2-135m")
    return answer_token_ids(tokenizer, "Will the user watch it? Answer:", ["absolutely", "no"])


def grid_with_unknown_axis(folder: Path):
    from llmtrsr_utils.grid import load_grid

    path = folder / "grid.yaml"
    path.write_text("notebook: notebooks/grid_point.ipynb\naxes:\n  recommender.item_nums: [1]\n")
    return load_grid(path)


CASES = [
    Case("movielens ratings row with too few columns",
         lambda d: load_movielens(movielens_with(d, "ratings.csv", 3, "1,5,4.0")),
         DataFormatError, "{dir}/ml/ratings.csv:4: expected 4 ','-separated fields (userId, "
                          "movieId, rating, timestamp); got 3 fields"),
    Case("movielens rating that is not a number",
         lambda d: load_movielens(movielens_with(d, "ratings.csv", 2, "1,5,four,964982703")),
         DataFormatError, "{dir}/ml/ratings.csv:3: expected a number in column 'rating'; "
                          "got 'four'"),
    Case("movielens timestamp that is not a number",
         lambda d: load_movielens(movielens_with(d, "ratings.csv", 2, "1,5,4.0,yesterday")),
         DataFormatError, "{dir}/ml/ratings.csv:3: expected a number in column 'timestamp'; "
                          "got 'yesterday'"),
    Case("a non-UTF-8 byte", non_utf8, DataFormatError,
         "{dir}/ml/movies.csv:3: expected UTF-8 text; got byte 0xff at column 11"),
    Case("movielens movies file with a wrong header",
         lambda d: load_movielens(movielens_with(d, "movies.csv", 0, "id,title,genres")),
         DataFormatError, "{dir}/ml/movies.csv:1: expected header movieId,title,genres; "
                          "got id,title,genres"),
    Case("MIND news row with too few columns",
         lambda d: mind_case(d, news=[NEWS[0], "N1\tnews\tworld"]), DataFormatError,
         "{dir}/mind/news.tsv:2: expected 8 tab-separated fields (news_id, category, "
         "subcategory, title, abstract, url, title_entities, abstract_entities); got 3 fields"),
    Case("MIND duplicated news id with different text",
         lambda d: mind_case(d, news=[*NEWS, NEWS[1].replace("50 Worst", "49 Worst")]),
         DataFormatError, "{dir}/mind/news.tsv:6: expected item id 'N19639' to appear once (or repeat identical text); got a second, different row for it (first at line 2)"),
    Case("MIND behaviors time that does not parse",
         lambda d: mind_case(d, behaviors=[BEHAVIORS[0].replace("11/15/2019 8:55:22 AM",
                                                                "yesterday")]),
         DataFormatError, "{dir}/mind/behaviors.tsv:1: expected a time like '11/15/2019 8:55:22 AM' in field 3; got 'yesterday'"),
    Case("MIND impression label other than 0 or 1",
         lambda d: mind_case(d, behaviors=[BEHAVIORS[0].replace("N26368-1", "N26368-2")]),
         DataFormatError, "{dir}/mind/behaviors.tsv:1: expected space-separated impressions like 'N78206-0 N26368-1' in field 5 (news id, '-', label 0 or 1); got 'N26368-2'"),
    Case("Amazon-M2 prev_items that does not parse",
         lambda d: m2_case(d, sessions=SESSIONS.replace("\"['B09W9FND7K']\"",
                                                        "\"['B09W9FND7K'\"")),
         DataFormatError, "{dir}/m2/sessions_train.csv:6: expected an array of quoted product ids like ['B09W9FND7K' 'B09JSPLN1M']; got \"['B09W9FND7K'\""),
    Case("Amazon-M2 products file with a wrong header",
         lambda d: m2_case(d, products=PRODUCTS.replace("id,locale,title", "asin,locale,title")),
         DataFormatError, "{dir}/m2/products_train.csv:1: expected header id,locale,title,price,brand,color,size,model,material,author,desc; got asin,locale,title,price,brand,color,size,model,material,author,desc"),
    Case("generic interaction timestamp that is not a number",
         lambda d: generic_case(d, interactions=INTERACTIONS.replace("u1,i1,10", "u1,i1,ten")),
         DataFormatError, "{dir}/g/interactions.csv:4: expected a number or an ISO 8601 date in column 'timestamp'; got 'ten'"),
    Case("generic items file that is empty", lambda d: generic_case(d, items=""),
         DataFormatError, "{dir}/g/items.csv:1: expected a header row 'item_id,<attribute>,...' naming at least one attribute; got an empty file"),
    Case("generic duplicated item id with different text",
         lambda d: generic_case(d, items=ITEMS + "i2,Tea (black),Groceries\n"),
         DataFormatError, "{dir}/g/items.csv:8: expected item id 'i2' to appear once (or repeat identical text); got a second, different row for it (first at line 3)"),
    Case("generic items header without item_id",
         lambda d: generic_case(d, items=ITEMS.replace("item_id,title", "id,title")),
         DataFormatError, "{dir}/g/items.csv:1: expected a header row 'item_id,<attribute>,...' naming at least one attribute; got id,title,category"),
    Case("a history item missing from the catalogue (policy error)", missing_history_item,
         DataFormatError, "items.csv, interactions.csv: expected every history item in the items catalogue (data.missing_item_policy: error; drop_item or drop_user drop and count it instead); got user 'u2': history item 'ghost' is not in the catalogue"),
    Case("a target missing from the catalogue under missing_item_policy error",
         lambda d: generic_prepared(d, INTERACTIONS + "u2,ghost,500\nu3,i1,1\nu3,i2,2\n",
                                    "data.missing_item_policy=error"),
         DataFormatError, "items.csv, interactions.csv: expected every target item in the items catalogue (data.missing_item_policy: error; drop_item or drop_user drop the user and count it instead); got user 'u2': target item 'ghost' is not in the catalogue"),
    Case("a catalogue smaller than the negatives asked for",
         lambda d: generic_prepared(d, INTERACTIONS + "u3,i1,1\nu3,i2,2\n"), ConfigError,
         "data.train_negatives: 1 negatives per train user, but the items catalogue of generic holds 4 items and user 'u1' may not be given 4 of them (data.negative_exclusion: history_and_target); lower data.train_negatives or use a larger catalogue"),
    Case("an empty history", empty_history, ValueError, "user 'u7' has an empty history: no profile to compare against"),
    Case("a candidate set whose target is also a negative",
         lambda d: split_with_bad_candidates(d, ["x", "c", "y"]), DataFormatError, "{dir}/test.parquet: expected exactly one positive per candidate set (the target, not repeated among the negatives); got record 0 (user 'u1'): target 'c' is also negative #2"),
    Case("a candidate set with a repeated negative",
         lambda d: split_with_bad_candidates(d, ["x", "y", "x"]), DataFormatError, "{dir}/test.parquet: expected distinct negatives per candidate set; got record 0 (user 'u1'): a negative appears twice"),
    Case("params with an unknown key",
         lambda d: load_config(params_file(d, "data:\n  n_test_user: 5\n")), ConfigError,
         "{dir}/params.yaml: unknown key 'data.n_test_user' (did you mean 'n_test_users'?); known keys at data: ..."),
    Case("params with a negative size",
         lambda d: load_config(params_file(d, "data:\n  n_test_users: -3\n")), ConfigError,
         "{dir}/params.yaml: key 'data.n_test_users' must be at least 1; got -3"),
    Case("params with a value of the wrong type",
         lambda d: load_config(params_file(d, "recommender:\n  epochs: two\n")), ConfigError,
         "{dir}/params.yaml: key 'recommender.epochs' expects int, got str 'two'"),
    Case("params with a value outside the choices",
         lambda d: load_config(params_file(d, "data:\n  history_policy: random\n")),
         ConfigError, "{dir}/params.yaml: key 'data.history_policy' must be one of filter, truncate; got 'random'"),
    Case("params that are not valid YAML",
         lambda d: load_config(params_file(d, "data: [n_test_users: 5\n")), ConfigError,
         '{dir}/params.yaml: not valid YAML: while parsing a flow sequence\n  in "<unicode string>", line 1, column 7: ...'),
    Case("a test size larger than the users available",
         lambda d: _prepare(d, ["data.n_test_users=500"]), ConfigError, "params: data.n_train_users + data.n_valid_users + data.n_test_users = 6 + 3 + 500 = 509, but only 30 users of movielens remain after filtering (history 10..10, policy truncate)"),
    Case("a model name neither registered nor a path", unknown_model, Exception, "model 'smolm2-135m' is neither a registered name (smollm2-135m, gemma3-270m, minilm-l6, tiny-random-llama, ..."),
    Case("a summarizer prompt that cannot fit even one item", summarizer_prompt_too_long,
         Exception, "user 42 block 1 summary prompt needs 97 tokens but the budget is 64 (128 context - generation room) even with each of its 1 texts cut to 16 tokens; raise max_length, lower max_new_tokens or block_size, or use fewer attributes"),
    Case("prompt_format chat for a model without a chat template", chat_format_without_template,
         Exception, "prompt_format: chat, but gemma3-270m's tokenizer has no chat template; use prompt_format: plain (the paper's '### User:' format) for this model"),
    Case("an answer word that is not one token", answer_not_one_token, Exception, "answer word 'absolutely' is not a single token after the prompt as the training text tokenizes it (it becomes ['absol', 'utely', '<|im_end|>']); set recommender.answer_words to words that are single tokens for this tokenizer"),
    Case("a grid with an unknown axis", grid_with_unknown_axis, ConfigError, "{dir}/grid.yaml: unknown key 'recommender.item_nums' (did you mean 'item_num'?); known keys at recommender: ..."),
]


def _prepare(folder: Path, overrides: list[str]):
    from llmtrsr_utils.datasets.splits import prepare_dataset

    root = write_movielens(folder / "ml")
    return prepare_dataset(smoke_config(folder / "work", root, *overrides))


def test_the_corpus_has_at_least_twenty_cases():
    assert len(CASES) >= 20
    assert len({c.name for c in CASES}) == len(CASES)
    # The README's count is the corpus's (it said 29 when the file held 30).
    stated = re.search(r"holds (\d+) such cases", (ROOT / "README.md").read_text())
    assert stated and int(stated.group(1)) == len(CASES)


EARLIER = {"work/results/metrics.parquet": b"earlier results",
           "work/summaries/movielens_test_hierarchical_x.parquet": b"earlier summaries",
           "work/adapters/tallrec_x/training.json": b"{}"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_gives_its_exact_error(case, tmp_path):
    for name, content in EARLIER.items():  # what an earlier run had computed
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    with pytest.raises(case.error) as caught:
        case.run(tmp_path)
    for name, content in EARLIER.items():  # ... is still there, untouched
        assert (tmp_path / name).read_bytes() == content, name
    message = str(caught.value)
    if isinstance(caught.value, KeyError):
        message = caught.value.args[0]
    expected = case.message.format(dir=tmp_path)
    if expected.endswith(" ..."):
        assert message.startswith(expected[:-4]), message
    else:
        assert message == expected
