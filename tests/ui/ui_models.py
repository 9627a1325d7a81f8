"""Re-export of `freeret_rag.devtools.smollm2_graft` so UI tests can keep `from ui_models import ...`."""

from freeret_rag.devtools.smollm2_graft import CHATML_VLM_TEMPLATE, build_fluent_vlm  # noqa: F401
