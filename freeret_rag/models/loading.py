"""Load one model from a hub id, a local folder or a `.gguf` file, on the best device available."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError
from .adapters import FamilyAdapter, adapter_for

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    """A model with everything needed to prompt it. `processor` is None for text-only LLMs."""

    model: nn.Module
    tokenizer: Any
    processor: Any | None
    adapter: FamilyAdapter
    model_id: str
    device: torch.device
    dtype: torch.dtype

    @property
    def capabilities(self) -> frozenset[str]:
        """Which inputs the model takes. VLMs read video as sampled frames (natively on Qwen)."""
        return frozenset({"text", "image", "video"}) if self.processor is not None else frozenset({"text"})

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim


def _cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast only with AVX512-BF16 or AMX; elsewhere they are emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    if requested:
        try:
            return DTYPES[requested.lower()]
        except KeyError:
            raise ModelLoadError(f"unknown dtype {requested!r}; use one of {sorted(set(DTYPES))}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if _cpu_supports_bf16() else torch.float32


def _is_vision_language(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def _offline_hint(source: str) -> str:
    return (
        f"Model {source!r} is not on this machine and cannot be downloaded "
        f"({'offline mode (HF_HUB_OFFLINE=1)' if os.environ.get('HF_HUB_OFFLINE') == '1' else 'the hub is unreachable'}). "
        f"Download it once with `hf download {source}` while online, or point --model at a local "
        "model folder (with config.json) or a .gguf file."
    )


def load_model(source: str | Path, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """Load `source` (hub id, folder, or .gguf file) as a VLM or a text-only LLM.

    Raises ModelLoadError with an actionable message for anything that cannot be loaded.
    """
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor,
                              AutoTokenizer)

    source = str(source)
    path = Path(source).expanduser()
    is_gguf = path.suffix.lower() == ".gguf"
    torch_device = pick_device(device)
    # transformers keeps GGUF weights packed and computes in fp32: any other dtype only adds casts.
    torch_dtype = pick_dtype(torch_device, dtype or ("float32" if is_gguf else None))
    source_kwargs: dict[str, Any] = {}  # where the files are: also for config and tokenizer
    if is_gguf:
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        location, source_kwargs["gguf_file"] = str(path.parent), path.name
    elif path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder (no config.json) and not a .gguf file")
        location = str(path)
    else:
        location = source
    try:
        config = AutoConfig.from_pretrained(location, **source_kwargs)
        adapter = adapter_for(config.model_type)  # refuses unsupported families before loading weights
        if _is_vision_language(config):
            processor = AutoProcessor.from_pretrained(location)
            tokenizer = processor.tokenizer
            model = AutoModelForImageTextToText.from_pretrained(location, dtype=torch_dtype, **source_kwargs)
        else:
            processor = None
            tokenizer = AutoTokenizer.from_pretrained(location, **source_kwargs)
            model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, **source_kwargs)
    except OSError as error:
        if not path.exists():
            raise ModelLoadError(_offline_hint(source)) from error
        raise ModelLoadError(f"could not load {source!r}: {error}") from error
    except (ValueError, KeyError) as error:
        raise ModelLoadError(f"could not load {source!r}: {error}") from error

    model = model.to(device=torch_device, dtype=torch_dtype).eval()
    tokenizer.padding_side = "left"  # the read-out position is the last one for every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    adapter.layer_layout(model)  # refuses a decoder layer whose read-out point is not known
    log.info("loaded %s (%s, adapter %s) on %s as %s", source, config.model_type, adapter.name, torch_device, torch_dtype)
    return LoadedModel(model=model, tokenizer=tokenizer, processor=processor, adapter=adapter, model_id=source,
                       device=torch_device, dtype=torch_dtype)
