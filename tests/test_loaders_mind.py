"""MIND loader: real news.tsv/behaviors.tsv layouts, per-user dedupe, and strict errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from llmtrsr_utils.artifacts import sha256_of
from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import DataFormatError
from llmtrsr_utils.datasets.loaders import mind

NEWS = [
    "N55528\tlifestyle\tlifestyleroyals\tThe Brands Queen Elizabeth, Prince Charles, and Prince "
    "Philip Swear By\tShop the notebooks, jackets, and more that the royals can't live without."
    "\thttps://assets.msn.com/labs/mind/AAGH0ET.html\t[{\"Label\": \"Prince Philip, Duke of "
    "Edinburgh\", \"Type\": \"P\", \"WikidataId\": \"Q80976\", \"Confidence\": 1.0, "
    "\"OccurrenceOffsets\": [48], \"SurfaceForms\": [\"Prince Philip\"]}]\t[]",
    "N19639\thealth\tweightloss\t50 Worst Habits For Belly Fat\t\t"
    "https://assets.msn.com/labs/mind/AAB19MK.html\t[]\t",
    "N61837\tnews\tnewsworld\tThe Cost of Trump's Aid Freeze in the Trenches of Ukraine's War"
    "\tLt. Ivan Molchanets peeked over a parapet.\thttps://assets.msn.com/labs/mind/AAJgNsz.html"
    "\t[]\t[]",
    "N53526\thealth\tvoices\tI Was An NBA Wife. Here's How It Affected My Mental Health."
    "\tI felt like I was a fraud.\thttps://assets.msn.com/labs/mind/AACk2N6.html\t[]\t[]",
    "N38324\thealth\tmedical\tHow to Get Rid of Skin Tags\tSkin tags are harmless."
    "\thttps://assets.msn.com/labs/mind/AAAKEkt.html\t[]\t[]",
]

BEHAVIORS = [
    # Comments on the latest_impression_click rule; history_last: see test_history_last_*.
    # U13740: two clicked impressions; the later in time (line 1) wins over the later line.
    "1\tU13740\t11/15/2019 8:55:22 AM\tN55528 N19639 N61837\t"
    "N78206-0 N26368-1 N7578-0 N58592-1 N19858-0",
    "2\tU13740\t11/11/2019 9:05:58 AM\tN55528 N19639\tN55528-0 N19639-1 N61837-0",
    # U91836: latest impression has no click, so the earlier clicked one is used.
    "3\tU91836\t11/12/2019 6:11:30 PM\tN38324\tN53526-1 N38324-0",
    "4\tU91836\t11/14/2019 10:22:10 PM\tN38324 N53526\tN61837-0 N55528-0",
    # U73700: never clicks: dropped.
    "5\tU73700\t11/14/2019 7:01:48 AM\t\tN50014-0 N23877-0",
    # U34670: empty history, two impressions at the same time: the later line wins.
    "6\tU34670\t11/13/2019 1:00:00 PM\t\tN19639-1 N61837-0",
    "7\tU34670\t11/13/2019 1:00:00 PM\t\tN53526-0 N38324-1",
]


def write_mind(folder: Path, news: list[str] = NEWS, behaviors: list[str] = BEHAVIORS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("\n".join(news) + "\n", encoding="utf-8")
    (folder / "behaviors.tsv").write_text("\n".join(behaviors) + "\n", encoding="utf-8")
    return folder


def load_error(folder: Path) -> DataFormatError:
    with pytest.raises(DataFormatError) as caught:
        mind.load(DataConfig(name="mind"), folder)
    return caught.value


def test_load_good_fixture(tmp_path: Path) -> None:
    """The kit's former rule, now opt-in: same answer as before mind_target existed."""
    folder = write_mind(tmp_path / "MINDsmall_train")
    data = mind.load(DataConfig(name="mind", mind_target="latest_impression_click"), folder)

    assert data.name == "mind" and data.domain == "news"
    assert data.attributes == ["category", "subcategory", "title"]
    assert list(data.items.columns) == ["item_id", "category", "subcategory", "title", "abstract"]
    assert data.items["item_id"].tolist() == ["N55528", "N19639", "N61837", "N53526", "N38324"]
    first = data.items.iloc[0]
    assert first["title"] == ("The Brands Queen Elizabeth, Prince Charles, and Prince Philip "
                              "Swear By")
    assert first["abstract"].startswith("Shop the notebooks")
    assert data.items.iloc[1]["abstract"] == ""
    assert all(isinstance(v, str) for v in data.items.to_numpy().ravel())

    seqs = data.sequences
    assert list(seqs.columns) == ["user_id", "history", "target", "impression_negatives"]
    assert seqs["user_id"].tolist() == ["U13740", "U34670", "U91836"]
    by_user = seqs.set_index("user_id")
    assert by_user.loc["U13740", "history"] == ["N55528", "N19639", "N61837"]
    assert by_user.loc["U13740", "target"] == "N58592"  # the last click in listed order
    assert by_user.loc["U13740", "impression_negatives"] == ["N78206", "N7578", "N19858"]
    assert by_user.loc["U91836", "history"] == ["N38324"]
    assert by_user.loc["U91836", "target"] == "N53526"
    assert by_user.loc["U91836", "impression_negatives"] == ["N38324"]
    assert by_user.loc["U34670", "history"] == []
    assert by_user.loc["U34670", "target"] == "N38324"
    assert by_user.loc["U34670", "impression_negatives"] == ["N53526"]

    assert data.counts == {"news_read": 5, "news_duplicate_rows": 0, "behaviors_read": 7,
                           "impressions_without_click": 2, "users_read": 4,
                           "users_without_click": 1, "sequences": 3}
    assert data.source_files == {"news.tsv": sha256_of(folder / "news.tsv"),
                                 "behaviors.tsv": sha256_of(folder / "behaviors.tsv")}


# U55555: the first row in file order has an empty History (dropped, as the authors'
# dropna), so the second row is the user's first; its click (N55528) is not History[-1].
BEHAVIORS_AUTHORS = [
    *BEHAVIORS,
    "8\tU55555\t11/10/2019 3:00:00 PM\t\tN19639-1 N53526-0",
    "9\tU55555\t11/09/2019 3:00:00 PM\tN53526 N38324 N61837\tN55528-1 N19639-0 N38324-0",
    "10\tU55555\t11/11/2019 3:00:00 PM\tN53526 N38324 N61837 N19639\tN55528-0 N61837-1",
]


def test_history_last_is_the_default_and_the_authors_rule(tmp_path: Path) -> None:
    """First row with a History per user in file order; target History[-1], history the rest."""
    folder = write_mind(tmp_path, behaviors=BEHAVIORS_AUTHORS)
    data = mind.load(DataConfig(name="mind"), folder)
    assert DataConfig().mind_target == "history_last"

    seqs = data.sequences
    assert list(seqs.columns) == ["user_id", "history", "target", "impression_negatives"]
    # U73700 and U34670 have only rows with an empty History: dropped.
    assert seqs["user_id"].tolist() == ["U13740", "U55555", "U91836"]
    by_user = seqs.set_index("user_id")
    # Line 1 (also the latest in time); its clicks N26368/N58592 are ignored.
    assert by_user.loc["U13740", "history"] == ["N55528", "N19639"]
    assert by_user.loc["U13740", "target"] == "N61837"
    assert by_user.loc["U13740", "impression_negatives"] == ["N78206", "N7578", "N19858"]
    # Line 3, the first in file order although line 4 is later in time; History has one
    # news, so the history is empty (clean_sequences drops it by min_history).
    assert by_user.loc["U91836", "history"] == []
    assert by_user.loc["U91836", "target"] == "N38324"
    assert by_user.loc["U91836", "impression_negatives"] == ["N38324"]
    # Line 9: line 8 has no History; line 10 is a later row.
    assert by_user.loc["U55555", "history"] == ["N53526", "N38324"]
    assert by_user.loc["U55555", "target"] == "N61837"
    assert by_user.loc["U55555", "impression_negatives"] == ["N19639", "N38324"]

    assert data.counts == {"news_read": 5, "news_duplicate_rows": 0, "behaviors_read": 10,
                           "behaviors_without_history": 4, "behaviors_not_first_of_user": 3,
                           "users_read": 5, "users_without_history": 2, "sequences": 3}


def test_latest_impression_click_differs_on_the_same_file(tmp_path: Path) -> None:
    """The same file under the kit's former rule: latest clicked impression, its last click."""
    folder = write_mind(tmp_path, behaviors=BEHAVIORS_AUTHORS)
    data = mind.load(DataConfig(name="mind", mind_target="latest_impression_click"), folder)
    by_user = data.sequences.set_index("user_id")
    assert data.sequences["user_id"].tolist() == ["U13740", "U34670", "U55555", "U91836"]
    assert by_user.loc["U13740", "history"] == ["N55528", "N19639", "N61837"]
    assert by_user.loc["U13740", "target"] == "N58592"
    assert by_user.loc["U55555", "history"] == ["N53526", "N38324", "N61837", "N19639"]
    assert by_user.loc["U55555", "target"] == "N61837"  # line 10, the latest with a click
    assert by_user.loc["U55555", "impression_negatives"] == ["N55528"]
    assert data.counts["impressions_without_click"] == 2
    assert data.counts["users_without_click"] == 1


def test_unknown_mind_target(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.mind_target='newest'"):
        mind.load(DataConfig(name="mind", mind_target="newest"), write_mind(tmp_path))


def test_news_with_too_few_fields(tmp_path: Path) -> None:
    news = list(NEWS)
    news[2] = "\t".join(news[2].split("\t")[:6])
    err = load_error(write_mind(tmp_path, news=news))
    assert err.path.endswith("news.tsv") and err.line == 3
    assert "news.tsv:3:" in str(err) and "8 tab-separated fields" in str(err)


def test_duplicate_news_with_different_text(tmp_path: Path) -> None:
    news = [*NEWS, NEWS[1].replace("50 Worst Habits", "49 Worst Habits")]
    err = load_error(write_mind(tmp_path, news=news))
    assert err.path.endswith("news.tsv") and err.line == 6 and "N19639" in str(err)


def test_bad_time(tmp_path: Path) -> None:
    behaviors = list(BEHAVIORS)
    behaviors[3] = behaviors[3].replace("11/14/2019 10:22:10 PM", "2019-11-14 22:22:10")
    err = load_error(write_mind(tmp_path, behaviors=behaviors))
    assert err.path.endswith("behaviors.tsv") and err.line == 4
    assert "behaviors.tsv:4:" in str(err) and "2019-11-14 22:22:10" in str(err)


def test_bad_impression_token(tmp_path: Path) -> None:
    behaviors = list(BEHAVIORS)
    behaviors[4] = behaviors[4].replace("N23877-0", "N23877")
    err = load_error(write_mind(tmp_path, behaviors=behaviors))
    assert err.path.endswith("behaviors.tsv") and err.line == 5
    assert "'N23877'" in str(err)


def test_impression_label_other_than_0_or_1(tmp_path: Path) -> None:
    behaviors = list(BEHAVIORS)
    behaviors[1] = behaviors[1].replace("N19639-1", "N19639-2")
    err = load_error(write_mind(tmp_path, behaviors=behaviors))
    assert err.path.endswith("behaviors.tsv") and err.line == 2 and "N19639-2" in str(err)


def test_behaviors_with_wrong_field_count(tmp_path: Path) -> None:
    behaviors = [*BEHAVIORS[:5], BEHAVIORS[5] + "\textra", *BEHAVIORS[6:]]
    err = load_error(write_mind(tmp_path, behaviors=behaviors))
    assert err.path.endswith("behaviors.tsv") and err.line == 6 and "6 fields" in str(err)


def test_non_utf8_byte(tmp_path: Path) -> None:
    folder = write_mind(tmp_path)
    lines = (folder / "news.tsv").read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"NBA Wife", b"NBA \xff Wife")
    (folder / "news.tsv").write_bytes(b"\n".join(lines))
    err = load_error(folder)
    assert err.path.endswith("news.tsv") and err.line == 4
    assert "UTF-8" in str(err) and "0xff" in str(err)


def fake_download_module(monkeypatch: pytest.MonkeyPatch, fetch) -> None:
    """Stand in for llmtrsr_utils.datasets.download so no test can reach the network."""
    fake = types.ModuleType("llmtrsr_utils.datasets.download")
    fake.fetch_and_extract = fetch
    monkeypatch.setitem(sys.modules, "llmtrsr_utils.datasets.download", fake)


def test_download_refused_without_licence(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("download attempted before the licence was accepted")

    fake_download_module(monkeypatch, no_network)
    with pytest.raises(PermissionError) as caught:
        mind.download(DataConfig(name="mind"), tmp_path)
    message = str(caught.value)
    assert "accept_licence" in message and "MSR%20License_Data.pdf" in message
    assert list(tmp_path.iterdir()) == []


def test_download_calls_fetch_with_official_url(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_fetch(url, dest_dir, *, sha256, expected_files=None, filename=None):
        calls.append((url, dest_dir, sha256, expected_files))
        return dest_dir

    fake_download_module(monkeypatch, fake_fetch)
    cfg = DataConfig(name="mind", variant="large", accept_licence=True)
    folder = mind.download(cfg, tmp_path)
    assert folder == tmp_path / "MINDlarge_train"
    assert calls == [("https://mind201910small.blob.core.windows.net/release/MINDlarge_train.zip",
                      tmp_path / "MINDlarge_train", None,
                      {"news.tsv": None, "behaviors.tsv": None})]


def test_folder_names_follow_variant() -> None:
    assert mind.folder_names(DataConfig(name="mind"))[0] == "MINDsmall_train"
    assert mind.folder_names(DataConfig(name="mind", variant="large")) == (
        "MINDlarge_train", "MINDsmall_train", "mind")
    with pytest.raises(ValueError, match="variant"):
        mind.folder_names(DataConfig(name="mind", variant="medium"))
