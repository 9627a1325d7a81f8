"""FreeRet RAG web app: `python app.py --help` lists every option.

Also the entry point of a Hugging Face Space (the Space runs `python app.py`). Kept thin:
configuration in freeret_rag/config.py, the app in freeret_rag/ui.py.
"""

from __future__ import annotations

import logging
import sys

from freeret_rag.config import ConfigError, apply_privacy_env, parse_config

# No analytics or telemetry from gradio, huggingface_hub or chromadb: set before they are imported.
apply_privacy_env()

try:  # Hugging Face ZeroGPU: `spaces` must be imported before torch initialises CUDA.
    import spaces  # noqa: F401
except ImportError:
    pass


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = parse_config(argv)
    except ConfigError as error:
        print(f"app.py: error: {error}", file=sys.stderr)
        return 2

    from freeret_rag.errors import FreeRetError
    from freeret_rag.ui import FreeRetApp, launch

    try:
        app = FreeRetApp(config)
    except FreeRetError as error:
        print(f"app.py: error: {error}", file=sys.stderr)
        return 1
    launch(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
