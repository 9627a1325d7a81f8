"""Builders of small offline models for tests, benchmarks and demos (no network, no downloads).

- `tiny_models.build_tiny_model(family, out_dir, seed)`: random, architecturally real models of
  every supported family, under 1 MB each.
- `smollm2_graft.build_fluent_vlm(out_dir, gguf_dir, gguf_file)`: the real SmolLM2-135M-Instruct
  language model inside an Idefics3 shell, for fluent end-to-end runs.
- `real_shapes`: random-weight models with the real shapes of SmolVLM-256M-Instruct and
  Qwen2-VL-2B-Instruct, for speed and memory figures (never quality).
- `scans.scanned_copy(source, target, dpi)`: an image-only ("scanned") copy of a PDF, for OCR.

Importing this package imports neither torch nor transformers; the builders do, when called.
"""
