"""Amazon-M2 loader: numpy-printed sessions (wrapped over lines), locale filter, strict errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmtrsr_utils.artifacts import sha256_of
from llmtrsr_utils.config import DataConfig
from llmtrsr_utils.datasets.base import DataFormatError
from llmtrsr_utils.datasets.loaders import amazon_m2
from llmtrsr_utils.datasets.render import render_items

SESSIONS = (
    "prev_items,next_item,locale\n"
    "\"['B09W9FND7K' 'B09JSPLN1M']\",B09M7GY217,UK\n"                      # line 2, session 1
    "\"['B0BF5RJ8SF' 'B0BHV4MF7X' 'B09Z7QVLYT'\n 'B0BC7MMYV9']\",B0BFDL54Y7,UK\n"  # lines 3-4
    "\"['B076THCGSG' 'B007MO8IME']\",B001B4TKA0,DE\n"                      # line 5, session 3
    "\"['B09W9FND7K']\",B0BC7MMYV9,UK\n"                                   # line 6, session 4
)

PRODUCTS = (
    "id,locale,title,price,brand,color,size,model,material,author,desc\n"
    "B09W9FND7K,UK,\"Echo Dot (5th generation, 2022 release)\",54.99,Amazon,Charcoal,,"
    "B09B8X9RGM,,,\"Our best sounding Echo Dot yet,\nwith clearer vocals.\"\n"   # lines 2-3
    "B09W9FND7K,DE,\"Echo Dot (5. Generation, Modell 2022)\",59.99,Amazon,Anthrazit,,,,,"
    "Unser bester Echo Dot\n"                                                     # line 4
    "B09M7GY217,UK,Kindle Paperwhite,139.99,Amazon,Black,8 GB,,,,Thinner borders\n"  # line 5
    "B001B4TKA0,DE,Esslöffel,7.5,WMF,Silber,,,Edelstahl,,\n"                       # line 6
    "B0BC7MMYV9,UK,The Thursday Murder Club,8.99,,,,,,Richard Osman,A novel\n"     # line 7
)


def write_m2(folder: Path, sessions: str = SESSIONS, products: str = PRODUCTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sessions_train.csv").write_text(sessions, encoding="utf-8")
    (folder / "products_train.csv").write_text(products, encoding="utf-8")
    return folder


def load_error(folder: Path, **cfg) -> DataFormatError:
    with pytest.raises(DataFormatError) as caught:
        amazon_m2.load(DataConfig(name="amazon-m2", **cfg), folder)
    return caught.value


def test_load_uk_default(tmp_path: Path) -> None:
    folder = write_m2(tmp_path / "amazon-m2")
    data = amazon_m2.load(DataConfig(name="amazon-m2"), folder)

    assert data.name == "amazon-m2" and data.domain == "shopping"
    # The authors' fields after the id, in their order; no locale (read for the filter only).
    assert data.attributes == ["title", "price", "brand", "color", "size", "model", "material",
                               "author", "desc"]
    assert list(data.items.columns) == ["item_id", "locale", *data.attributes]
    assert set(data.items["locale"]) == {"UK"}
    assert data.items["item_id"].tolist() == ["B09W9FND7K", "B09M7GY217", "B0BC7MMYV9"]
    echo = data.items.iloc[0]
    assert echo["title"] == "Echo Dot (5th generation, 2022 release)"
    assert echo["desc"] == "Our best sounding Echo Dot yet,\nwith clearer vocals."
    assert echo["price"] == "54.99" and echo["size"] == "" and echo["model"] == "B09B8X9RGM"
    assert all(isinstance(v, str) for v in data.items.to_numpy().ravel())

    seqs = data.sequences
    assert list(seqs.columns) == ["user_id", "history", "target"]
    assert seqs["user_id"].tolist() == ["session-1", "session-2", "session-4"]
    assert seqs["history"].tolist() == [
        ["B09W9FND7K", "B09JSPLN1M"],
        ["B0BF5RJ8SF", "B0BHV4MF7X", "B09Z7QVLYT", "B0BC7MMYV9"],  # wrapped over two lines
        ["B09W9FND7K"],
    ]
    assert seqs["target"].tolist() == ["B09M7GY217", "B0BFDL54Y7", "B0BC7MMYV9"]

    assert data.counts == {"sessions_read": 4, "sessions_kept_locale": 3,
                           "sessions_other_locale": 1, "products_read": 5, "products_kept": 3,
                           "products_dropped": 2}
    assert data.source_files == {
        "sessions_train.csv": sha256_of(folder / "sessions_train.csv"),
        "products_train.csv": sha256_of(folder / "products_train.csv"),
    }


def test_rendered_text_starts_with_title_and_has_no_locale(tmp_path: Path) -> None:
    """Figures 3 and 8: "Title: ..." first; the locale column is not rendered."""
    data = amazon_m2.load(DataConfig(name="amazon-m2"), write_m2(tmp_path))
    texts = render_items(data.items, data.attributes).tolist()
    assert texts == [
        "Title: Echo Dot (5th generation, 2022 release); Price: 54.99; Brand: Amazon; "
        "Color: Charcoal; Model: B09B8X9RGM; Description: Our best sounding Echo Dot yet, "
        "with clearer vocals.",
        "Title: Kindle Paperwhite; Price: 139.99; Brand: Amazon; Color: Black; Size: 8 GB; "
        "Description: Thinner borders",
        "Title: The Thursday Murder Club; Price: 8.99; Author: Richard Osman; "
        "Description: A novel",
    ]
    assert all(text.startswith("Title: ") and "Locale" not in text and "UK" not in text
               for text in texts)
    # include_item_id: the id first, as the authors' "id: ..." (Table 1's tenth attribute).
    with_id = render_items(data.items, data.attributes, include_item_id=True).tolist()
    assert with_id[0].startswith("ID: B09W9FND7K; Title: Echo Dot")
    assert [t.split("; ", 1)[1] for t in with_id] == texts


def test_locale_filter_de(tmp_path: Path) -> None:
    data = amazon_m2.load(DataConfig(name="amazon-m2", locale="DE"), write_m2(tmp_path))
    assert data.sequences["user_id"].tolist() == ["session-3"]
    assert data.sequences["history"].tolist() == [["B076THCGSG", "B007MO8IME"]]
    assert data.items["item_id"].tolist() == ["B09W9FND7K", "B001B4TKA0"]
    assert data.items.iloc[0]["title"] == "Echo Dot (5. Generation, Modell 2022)"
    assert data.items.iloc[1]["title"] == "Esslöffel"


def test_locale_none_keeps_all_sessions_and_first_product_row(tmp_path: Path) -> None:
    data = amazon_m2.load(DataConfig(name="amazon-m2", locale=None), write_m2(tmp_path))
    assert data.sequences["user_id"].tolist() == [f"session-{n}" for n in range(1, 5)]
    assert data.items["item_id"].tolist() == ["B09W9FND7K", "B09M7GY217", "B001B4TKA0",
                                              "B0BC7MMYV9"]
    assert data.items.iloc[0]["locale"] == "UK"  # first row of the id in file order
    assert data.counts["products_dropped"] == 1


def test_unknown_locale_in_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="locale"):
        amazon_m2.load(DataConfig(name="amazon-m2", locale="US"), write_m2(tmp_path))


def test_unparseable_prev_items_names_first_line_of_record(tmp_path: Path) -> None:
    sessions = SESSIONS.replace("'B0BF5RJ8SF' 'B0BHV4MF7X' 'B09Z7QVLYT'\n 'B0BC7MMYV9']",
                                "'B0BF5RJ8SF', 'B0BHV4MF7X', 'B09Z7QVLYT',\n 'B0BC7MMYV9']")
    err = load_error(write_m2(tmp_path, sessions=sessions))
    assert err.path.endswith("sessions_train.csv") and err.line == 3
    assert "sessions_train.csv:3:" in str(err)
    assert "an array of quoted product ids like ['B09W9FND7K' 'B09JSPLN1M']" in str(err)


def test_prev_items_without_brackets(tmp_path: Path) -> None:
    sessions = SESSIONS.replace("\"['B09W9FND7K']\"", "B09W9FND7K")
    err = load_error(write_m2(tmp_path, sessions=sessions))
    assert err.path.endswith("sessions_train.csv") and err.line == 6


def test_same_id_same_locale_different_text(tmp_path: Path) -> None:
    products = PRODUCTS + "B09M7GY217,UK,Kindle Paperwhite (16 GB),159.99,Amazon,Black,,,,,\n"
    err = load_error(write_m2(tmp_path, products=products))
    assert err.path.endswith("products_train.csv") and err.line == 8
    assert "B09M7GY217" in str(err) and "first at line 5" in str(err)


def test_identical_duplicate_product_rows_collapse(tmp_path: Path) -> None:
    products = PRODUCTS + PRODUCTS.splitlines(keepends=True)[4]  # line 5 again, verbatim
    data = amazon_m2.load(DataConfig(name="amazon-m2"), write_m2(tmp_path, products=products))
    assert data.items["item_id"].tolist() == ["B09W9FND7K", "B09M7GY217", "B0BC7MMYV9"]


def test_products_wrong_header(tmp_path: Path) -> None:
    products = PRODUCTS.replace("author,desc", "author")
    err = load_error(write_m2(tmp_path, products=products))
    assert err.path.endswith("products_train.csv") and err.line == 1


def test_download_explains_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        amazon_m2.download(DataConfig(name="amazon-m2"), tmp_path)
    message = str(caught.value)
    assert amazon_m2.CHALLENGE_URL in message
    assert "amazon-kdd-cup-23-multilingual-recommendation-challenge" in message
    assert "sessions_train.csv" in message and "products_train.csv" in message
    assert "data.dir" in message and "LLMTRSR_DATA_DIR" in message
