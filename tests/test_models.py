"""Model loading: sources, device/dtype choice, capabilities, and errors users can act on."""

from __future__ import annotations

import pytest
import torch

from freeret_rag import FreeRet, ModelLoadError
from freeret_rag.models import adapter_for, pick_dtype
from freeret_rag.models.loading import _cpu_supports_bf16


@pytest.mark.parametrize("family, model_type, caps", [
    ("qwen2_vl", "qwen2_vl", {"text", "image", "video"}),
    ("qwen2_5_vl", "qwen2_5_vl", {"text", "image", "video"}),
    ("idefics3", "idefics3", {"text", "image", "video"}),
    ("smolvlm", "smolvlm", {"text", "image", "video"}),
    ("llava", "llava", {"text", "image", "video"}),
    ("gemma3", "gemma3", {"text", "image", "video"}),
    ("llama", "llama", {"text"}),
    ("gemma3_text", "gemma3_text", {"text"}),
    ("olmo2", "olmo2", {"text"}),
])
def test_every_family_loads_from_a_folder_with_its_adapter(family, model_type, caps, tiny_model_dirs):
    engine = FreeRet.from_pretrained(tiny_model_dirs[family], device="cpu", dtype="float32")
    assert engine.lm.adapter is adapter_for(model_type) and engine.lm.adapter.name == model_type
    assert engine.capabilities == caps
    assert engine.lm.tokenizer.padding_side == "left"
    assert engine.lm.dtype == torch.float32 and engine.lm.device.type == "cpu"


def test_unknown_families_are_refused_not_guessed():
    assert adapter_for("mistral").name == "mistral"
    with pytest.raises(ModelLoadError, match="'falcon' is not supported"):
        adapter_for("falcon")


def test_missing_hub_model_offline_says_how_to_point_at_a_local_model():
    with pytest.raises(ModelLoadError) as error:
        FreeRet.from_pretrained("someone/not-a-downloaded-model")
    message = str(error.value)
    assert "not on this machine" in message and "--model" in message and ".gguf" in message


def test_folder_without_config_and_missing_gguf_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        FreeRet.from_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        FreeRet.from_pretrained(tmp_path / "model.gguf")


def test_dtype_choice():
    assert pick_dtype(torch.device("cpu"), "fp32") == torch.float32
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    assert pick_dtype(torch.device("mps")) == torch.float16
    expected = torch.bfloat16 if _cpu_supports_bf16() else torch.float32  # fast bf16 only with AVX512-BF16/AMX
    assert pick_dtype(torch.device("cpu")) == expected
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        pick_dtype(torch.device("cpu"), "int3")
