from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmtrsr_utils.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


GRID_FOLDERS = {"ablations", "studies"}  # grid files, checked by tests/test_grid.py
KIT_PARAMS = sorted(p for p in (ROOT / "params").rglob("*.yaml")
                    if "accelerate" not in p.parts and not GRID_FOLDERS & set(p.parts))


@pytest.mark.parametrize("params", KIT_PARAMS, ids=lambda p: p.name)
def test_every_shipped_params_file_is_valid(params):
    """Loads, and its global batch can be made on one process (a params file whose
    batch_size x examples per row exceeds global_batch_size broke `make reproduce` and CI once
    tree packing put two examples in a row)."""
    from llmtrsr_utils.recommend import accumulation_steps

    cfg = load_config(params)
    assert isinstance(cfg, Config)
    assert accumulation_steps(cfg, 1) >= 1


def test_deepspeed_launcher_leaves_the_experiment_to_the_params():
    import json

    import yaml

    launcher = yaml.safe_load((ROOT / "params" / "accelerate" / "deepspeed_zero2.yaml").read_text())
    assert launcher["distributed_type"] == "DEEPSPEED"
    ds_file = ROOT / launcher["deepspeed_config"]["deepspeed_config_file"]
    ds = json.loads(ds_file.read_text())
    assert ds["zero_optimization"]["stage"] == 2
    # Batch, accumulation and clipping are filled by the Trainer from the params: the same
    # params give the same experiment on any number of GPUs.
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert ds[key] == "auto", key
    assert "optimizer" not in ds and "scheduler" not in ds
    for paper in ("paper_mind.yaml", "paper_amazon.yaml"):
        cfg = load_config(ROOT / "params" / paper)
        rec = cfg.recommender
        assert (rec.batch_size, rec.global_batch_size) == (1, 64)
        assert (rec.weight_decay, rec.adam_beta1, rec.adam_beta2) == (5e-4, 0.9, 0.95)
        assert rec.lora_r == 8 and rec.epochs == 8 and rec.learning_rate == 1e-4
        assert cfg.summarizer.load_in_8bit and rec.dtype == "bfloat16"
        assert cfg.summarizer.prompt_format == rec.prompt_format == "plain"
        assert cfg.classical.encoder == "google-bert/bert-base-uncased"
        assert cfg.data.negative_exclusion == "none"


def test_renamed_key_says_what_replaced_it(tmp_path):
    path = write(tmp_path, "recommender:\n  gradient_accumulation_steps: 64\n")
    with pytest.raises(ConfigError, match="replaced by recommender.global_batch_size"):
        load_config(path)
    with pytest.raises(ConfigError, match="replaced by recommender.global_batch_size"):
        load_config(None, ["recommender.gradient_accumulation_steps=2"])


def test_default_params_keep_the_names_outside_scripts_use():
    cfg = load_config(ROOT / "params" / "default.yaml")
    values = {"work_dir": cfg.work_dir, "seed": cfg.seed, "data.name": cfg.data.name,
              "data.dir": cfg.data.dir, "data.n_train_users": cfg.data.n_train_users,
              "data.n_valid_users": cfg.data.n_valid_users,
              "data.n_test_users": cfg.data.n_test_users,
              "summarizer.model": cfg.summarizer.model, "recommender.model": cfg.recommender.model}
    assert values["data.name"] == "movielens"
    assert values["summarizer.model"] == values["recommender.model"] == "smollm2-135m"
    assert all(values[k] > 0 for k in ("data.n_train_users", "data.n_valid_users",
                                       "data.n_test_users"))


def test_unknown_key_is_named_with_file_and_suggestion(tmp_path):
    path = write(tmp_path, "data:\n  n_trian_users: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert "'data.n_trian_users'" in message
    assert "did you mean 'n_train_users'" in message


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'sead'.*did you mean 'seed'"):
        load_config(write(tmp_path, "sead: 3\n"))


@pytest.mark.parametrize("text, key, expected", [
    ("seed: abc\n", "seed", "int"),
    ("data:\n  n_test_users: 2.5\n", "data.n_test_users", "int"),
    ("data:\n  download: 'yes'\n", "data.download", "bool"),
    ("seed: true\n", "seed", "int"),
    ("data:\n  attributes: title\n", "data.attributes", "list of str"),
    ("data: 5\n", "data", "mapping"),
])
def test_wrong_type_names_key_and_expected_type(tmp_path, text, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert f"'{key}'" in str(err.value)
    assert expected in str(err.value)


def test_negative_size_and_bad_choice_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.n_test_users' must be at least 1; got -3"):
        load_config(write(tmp_path, "data:\n  n_test_users: -3\n"))
    with pytest.raises(ConfigError, match=r"'data.name' must be one of .*movielens.*got 'imdb'"):
        load_config(write(tmp_path, "data:\n  name: imdb\n"))


def test_min_history_above_max_history(tmp_path):
    with pytest.raises(ConfigError, match="data.min_history"):
        load_config(write(tmp_path, "data:\n  min_history: 30\n  max_history: 20\n"))


def test_overrides_are_typed_and_validated(tmp_path):
    cfg = load_config(write(tmp_path, "seed: 1\n"), [
        "seed=9", "data.n_test_users=4", "data.download=false", "data.dir=null",
        "data.attributes=[title, genres]", "recommender.model=gemma3-270m", "data.min_rating=3"])
    assert cfg.seed == 9 and cfg.data.n_test_users == 4 and cfg.data.download is False
    assert cfg.data.dir is None and cfg.data.attributes == ["title", "genres"]
    assert cfg.recommender.model == "gemma3-270m"
    assert cfg.data.min_rating == 3.0 and isinstance(cfg.data.min_rating, float)
    # YAML 1.1 reads 3e-4 (no dot) as a string; a float key takes it as the number it means.
    assert load_config(None, ["recommender.learning_rate=3e-4"]).recommender.learning_rate == 3e-4
    with pytest.raises(ConfigError, match="'recommender.learning_rate' expects float, got str"):
        load_config(None, ["recommender.learning_rate=fast"])


@pytest.mark.parametrize("override, match", [
    ("data.n_tset_users=3", r"--set data.n_tset_users: unknown key 'data.n_tset_users'"),
    ("seed", r"expected key=value"),
    ("seed.x=1", r"'seed' has no sub-keys"),
    ("data.n_test_users=many", r"'data.n_test_users' expects int, got str 'many'"),
])
def test_bad_overrides_are_refused(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "data: [unclosed\n"))


def test_fingerprint_follows_values():
    a, b = load_config(None), load_config(None, ["seed=43"])
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint("data") == b.fingerprint("data")


@pytest.mark.parametrize("given, expected", [
    ("work_dir=work/x", ["work_dir=work/x"]),
    ("work_dir=work/x,data.n_test_users=8", ["work_dir=work/x", "data.n_test_users=8"]),
    ("work_dir=work/x, data.n_test_users=8\n", ["work_dir=work/x", "data.n_test_users=8"]),
    ("work_dir=work/x\ndata.n_test_users=8", ["work_dir=work/x", "data.n_test_users=8"]),
    # A comma inside a value stays: only a comma followed by key= separates overrides.
    ("ablations.item_nums=[0, 3],seed=1", ["ablations.item_nums=[0, 3]", "seed=1"]),
    ("", []),
    (["work_dir=work/x", "seed=1"], ["work_dir=work/x", "seed=1"]),
    (None, []),
])
def test_overrides_as_papermill_passes_them(given, expected):
    """papermill's `-p overrides "k=v"` passes a string; it must not be read character by
    character (it was: ConfigError: --set 'w': expected key=value)."""
    from llmtrsr_utils.config import override_list

    assert override_list(given) == expected


def test_a_string_of_overrides_loads():
    cfg = load_config(ROOT / "params" / "smoke.yaml",
                      "work_dir=work/x, data.n_test_users=5, ablations.item_nums=[0, 1]")
    assert (cfg.work_dir, cfg.data.n_test_users, cfg.ablations.item_nums) == (
        "work/x", 5, [0, 1])


@pytest.mark.parametrize(("override", "message"), [
    ("recommender.learning_rate=.nan", "recommender.learning_rate' must be a finite number"),
    ("recommender.learning_rate=nan", "recommender.learning_rate' must be a finite number"),
    ("data.min_rating=.inf", "data.min_rating' must be a finite number"),
    ("summarizer.temperature=-.inf", "summarizer.temperature' must be a finite number"),
    ("summarizer.top_p=1.5", "summarizer.top_p' must be at most 1.0"),
    ("recommender.lora_dropout=1.0", "recommender.lora_dropout' must be below 1.0"),
    ("recommender.adam_beta1=1", "recommender.adam_beta1' must be below 1.0"),
    ("recommender.adam_beta2=1.2", "recommender.adam_beta2' must be below 1.0"),
    ("classical.dropout=2", "classical.dropout' must be below 1.0"),
    ("recommender.warmup_ratio=1", "recommender.warmup_ratio' must be below 1.0"),
])
def test_nan_inf_and_numbers_past_their_upper_bound_are_refused(override, message):
    """Issue 23: NaN and inf passed the lower-bound checks, and nothing bounded dropout, Adam
    betas or top_p above; each is refused naming the key."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])
    load_config(None, ["summarizer.top_p=1.0", "recommender.adam_beta2=0.999"])  # edges pass
