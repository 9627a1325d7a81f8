"""Re-export of `freeret_rag.devtools.tiny_models` so tests can keep `from tiny_models import ...`."""

from freeret_rag.devtools.tiny_models import *  # noqa: F401,F403
from freeret_rag.devtools.tiny_models import build_tokenizer, randomize_norms  # noqa: F401
