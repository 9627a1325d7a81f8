"""The tiny offline models load through the normal Auto classes and run real forwards."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from PIL import Image  # noqa: E402

from tiny_models import TEXT_FAMILIES, TINY_FAMILIES, VLM_FAMILIES, build_tiny_model  # noqa: E402

USER_IMAGE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is this a flower? A or B?"}]}]
EXPECTED_MODEL = {"qwen2_vl": "Qwen2VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                  "idefics3": "Idefics3ForConditionalGeneration", "smolvlm": "SmolVLMForConditionalGeneration",
                  "llava": "LlavaForConditionalGeneration", "gemma3": "Gemma3ForConditionalGeneration",
                  "llama": "LlamaForCausalLM", "gemma3_text": "Gemma3ForCausalLM", "olmo2": "Olmo2ForCausalLM"}


def load(path, family):
    if family in TEXT_FAMILIES:
        return (transformers.AutoTokenizer.from_pretrained(path),
                transformers.AutoModelForCausalLM.from_pretrained(path).eval())
    return (transformers.AutoProcessor.from_pretrained(path),
            transformers.AutoModelForImageTextToText.from_pretrained(path).eval())


def photo(size=(120, 90)):
    return Image.new("RGB", size, (200, 40, 40))


def inputs_for(family, proc, images=None):
    if family in TEXT_FAMILIES:
        text = proc.apply_chat_template([{"role": "user", "content": "Is this a flower?"}], tokenize=False,
                                        add_generation_prompt=True)
        return proc(text, return_tensors="pt")
    text = proc.apply_chat_template(USER_IMAGE, add_generation_prompt=True)
    return proc(text=[text], images=images or [photo()], return_tensors="pt")


def expected_image_tokens(family, proc, model, batch):
    if family.startswith("qwen"):
        return int(batch["image_grid_thw"].prod(-1).sum()) // proc.image_processor.merge_size ** 2
    if family in ("idefics3", "smolvlm"):
        return proc.image_seq_len * batch["pixel_values"].shape[1]  # tokens per tile x tiles
    if family == "gemma3":
        return model.config.mm_tokens_per_image  # patches average-pooled to a fixed count
    return model.config.image_seq_length  # llava: (image_size / patch)^2, CLS dropped


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_reload_chat_template_and_forward(family, tiny_model_dirs):
    proc, model = load(tiny_model_dirs[family], family)
    assert type(model).__name__ == EXPECTED_MODEL[family]
    batch = inputs_for(family, proc)
    prompt = (proc if family in TEXT_FAMILIES else proc.tokenizer).decode(batch["input_ids"][0])
    assert prompt.rstrip().endswith(("assistant", "Assistant:", "ASSISTANT:", "<start_of_turn>model", "<|assistant|>"))
    with torch.no_grad():
        logits = model(**batch).logits
    vocab = model.config.get_text_config().vocab_size
    assert logits.shape == (1, batch["input_ids"].shape[1], vocab)
    assert torch.isfinite(logits).all()
    if family in VLM_FAMILIES:
        image_token_id = getattr(model.config, "image_token_id", None) or model.config.image_token_index
        n = int((batch["input_ids"] == image_token_id).sum())
        assert n == expected_image_tokens(family, proc, model, batch)
        if family.startswith("qwen"):
            assert 4 <= n <= 64
            assert "mm_token_type_ids" in batch


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_option_letters_are_single_tokens(family, tiny_model_dirs):
    proc, _ = load(tiny_model_dirs[family], family)
    tok = getattr(proc, "tokenizer", proc)
    ids = {t: tok.encode(t, add_special_tokens=False) for t in ("A", "B", " A", " B")}
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({v[0] for v in ids.values()}) == 4
    assert tok.eos_token_id is not None and tok.pad_token_id is not None


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_same_seed_same_model(family, tmp_path):
    a, b, c = (load(build_tiny_model(family, tmp_path / n, seed=s), family) for n, s in (("a", 0), ("b", 0), ("c", 1)))
    sa, sb, sc = (m.state_dict() for _, m in (a, b, c))
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    with torch.no_grad():
        la, lb = (m(**inputs_for(family, p)).logits for p, m in (a, b))
    assert torch.equal(la, lb)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_greedy_generate(family, tiny_model_dirs):
    proc, model = load(tiny_model_dirs[family], family)
    batch = inputs_for(family, proc)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 1 and batch["input_ids"].shape[1] < out.shape[1] <= batch["input_ids"].shape[1] + 4


@pytest.mark.parametrize("family", VLM_FAMILIES)
def test_left_padded_batch_of_two_images(family, tiny_model_dirs):
    proc, model = load(tiny_model_dirs[family], family)
    proc.tokenizer.padding_side = "left"
    texts = [proc.apply_chat_template(USER_IMAGE, add_generation_prompt=True),
             proc.apply_chat_template([{"role": "user", "content": [
                 {"type": "image"}, {"type": "text", "text": "A longer question about the garden and a ladybird?"}]}],
                 add_generation_prompt=True)]
    images = [[photo()], [photo((60, 200))]]  # one list of images per prompt (required by SmolVLM)
    batch = proc(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "smolvlm"])
def test_video_forward(family, tiny_model_dirs):
    proc, model = load(tiny_model_dirs[family], family)
    frames = [Image.new("RGB", (64, 48), (60 * i, 120, 30)) for i in range(4)]
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "video"},
                                                                  {"type": "text", "text": "What happens?"}]}],
                                    add_generation_prompt=True)
    batch = proc(text=[text], videos=[frames], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape
    if family.startswith("qwen"):
        n = int((batch["input_ids"] == model.config.video_token_id).sum())
        assert n == int(batch["video_grid_thw"].prod()) // 4 and n > 0


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_build_and_load_are_fast(family, tmp_path):
    t0 = time.perf_counter()
    path = build_tiny_model(family, tmp_path / family)
    t1 = time.perf_counter()
    load(path, family)
    t2 = time.perf_counter()
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"\n{family}: build {t1 - t0:.3f}s load {t2 - t1:.3f}s size {size / 1e6:.2f} MB")
    assert t2 - t0 < 30 and size < 5e6


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_norm_has_random_weights(family, tiny_model_dirs):
    """Constant norm weights would hide a read-out on the wrong side of a norm."""
    _, model = load(tiny_model_dirs[family], family)
    norms = [(name, module) for name, module in model.named_modules()
             if type(module).__name__.endswith(("RMSNorm", "LayerNorm")) and getattr(module, "weight", None) is not None]
    assert norms
    for name, module in norms:
        weight = module.weight.detach()
        scale = 1 + weight if type(module).__name__.startswith("Gemma") else weight  # Gemma scales by 1 + w
        assert weight.std() > 0.1 and 0.5 <= scale.min() and scale.max() <= 1.5, name


def test_unknown_family_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny family"):
        build_tiny_model("gpt5", tmp_path)


def test_conftest_fixtures(samples_dir, smollm2_gguf, tiny_model_dir):
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (samples_dir / "LadyBird.jpg").is_file()
    (samples_dir / "scratch.txt").write_text("writable")  # a copy, never the shared originals
    pkg, name = smollm2_gguf
    assert (pkg / name).is_file() and name.endswith(".gguf")
    assert (tiny_model_dir / "config.json").is_file()
