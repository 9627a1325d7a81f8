"""Configuration of the chat app: command-line flags, environment variables, defaults.

Every setting can be given as a flag or as a `FREERET_*` environment variable; a flag wins over
the environment, which wins over the default. `parse_config(argv, environ)` takes both explicitly
so that tests do not depend on the process environment.

Nothing here imports torch or gradio: `app.py --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

# The hub ids used when no model is given. A 2B Qwen2-VL where a GPU is present; on CPU the
# smallest SmolVLM: its SmolLM2-135M language model answers at interactive speed on CPU, but its
# retrieval quality is unmeasured and likely weak (pass --model for a larger one).
GPU_DEFAULT_MODEL = "Qwen/Qwen2-VL-2B-Instruct"
CPU_DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"

DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD = "200mb"

# Environment variables that keep libraries quiet: no usage analytics, no telemetry, no update
# checks. Set before gradio, huggingface_hub or chromadb are imported (see `apply_privacy_env`).
PRIVACY_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "DO_NOT_TRACK": "1",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


class ConfigError(ValueError):
    """A flag or environment variable has a value that cannot be used."""


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """The per-user data folder + freeret-rag, as the CLI uses it (freeret_rag.library)."""
    if sys.platform == "win32":
        base = Path(environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "freeret-rag"


def default_model() -> str:
    """The model used when none is given: a 2B VLM with a GPU, a 256M one without."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # torch missing or broken: the engine will say so when loading
        has_gpu = False
    return GPU_DEFAULT_MODEL if has_gpu else CPU_DEFAULT_MODEL


def parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true/false, got {value!r}")


def parse_size(value: str | int, name: str = "max upload size") -> int:
    """'200mb', '1.5 GB', '500k', '1048576' -> bytes (powers of 1024, as Gradio counts)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"{name}: cannot read {value!r}; write e.g. 200mb, 2gb or a number of bytes")
    number, unit = float(match.group(1)), (match.group(2) or "").lower().rstrip("b").rstrip("i")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[unit]
    size = int(number * factor)
    if size <= 0:
        raise ConfigError(f"{name}: must be positive, got {value!r}")
    return size


def parse_auth(value: str | None) -> list[tuple[str, str]]:
    """`user:pass`, several separated by commas, or the path of a file with one `user:pass` a line.

    Blank lines and lines starting with `#` in the file are skipped. Passwords may contain ':'.
    """
    if not value:
        return []
    path = Path(value).expanduser()
    if ":" not in value or path.is_file():
        if not path.is_file():
            raise ConfigError(f"--auth: {value!r} is neither user:password nor an existing file")
        entries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        entries = [line for line in entries if line and not line.startswith("#")]
        source = str(path)
    else:
        entries = [part.strip() for part in value.split(",") if part.strip()]
        source = "--auth"
    pairs = []
    for entry in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise ConfigError(f"{source}: expected user:password, got an entry without both parts")
        pairs.append((user, password))
    if not pairs:
        raise ConfigError(f"{source}: no user:password entries")
    return pairs


@dataclass
class AppConfig:
    """Everything `app.py` needs to build and launch the app."""

    model: str = ""
    device: str | None = None
    dtype: str | None = None
    max_answer_tokens: int | None = None
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    chroma_url: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    root_path: str | None = None
    auth: list[tuple[str, str]] = field(default_factory=list)
    max_upload_bytes: int = parse_size(DEFAULT_MAX_UPLOAD)
    share: bool = False
    # Defaults of the settings panel (each browser session may change its own).
    top_k: int = 20
    rerank: bool = True
    rerank_k: int = 10
    n_sources: int = 3
    min_relevance: float = 0.2
    # Concurrency: how many model-bound events run at once (one model on one device: 1) and how
    # many may wait in the queue before new ones are refused.
    concurrency: int = 1
    max_queue: int = 64
    title: str = "FreeRet RAG"

    @property
    def asset_dir(self) -> Path:
        """Where page renders, thumbnails and frames live (served to the browser)."""
        return self.data_dir / "assets"

    @property
    def upload_dir(self) -> Path:
        """Where uploaded originals are kept (so sources can be opened and videos played)."""
        return self.data_dir / "files"


def _env_default(environ: Mapping[str, str], *names: str, default=None):
    for name in names:
        if environ.get(name) not in (None, ""):
            return environ[name]
    return default


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    env = lambda *names, default=None: _env_default(environ, *names, default=default)  # noqa: E731
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="FreeRet RAG: chat with your own PDFs, images and videos. One multimodal model "
                    "retrieves, reranks and answers, locally.",
        epilog="Every flag can also be set with the environment variable shown in [brackets].",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=env("FREERET_MODEL", default=""),
                       help="hub id, local model folder or .gguf file [FREERET_MODEL] "
                            f"(default: {GPU_DEFAULT_MODEL} with a GPU, {CPU_DEFAULT_MODEL} without)")
    model.add_argument("--device", default=env("FREERET_DEVICE"),
                       help="cpu, cuda, cuda:1, mps [FREERET_DEVICE] (default: best available)")
    model.add_argument("--dtype", default=env("FREERET_DTYPE"),
                       help="float32, bfloat16 or float16 [FREERET_DTYPE] (default: per device)")

    model.add_argument("--max-answer-tokens", type=int, default=env("FREERET_MAX_ANSWER_TOKENS"),
                       help="longest answer, in tokens [FREERET_MAX_ANSWER_TOKENS] (default: the engine's, 384)")

    storage = parser.add_argument_group("storage")
    storage.add_argument("--data-dir", default=env("FREERET_DATA_DIR", default=str(default_data_dir(environ))),
                         help="index, page renders and uploaded files [FREERET_DATA_DIR] "
                              f"(default: {default_data_dir(environ)})")
    storage.add_argument("--chroma-url", default=env("FREERET_CHROMA_URL"),
                         help="use a Chroma server, e.g. http://localhost:8000, instead of the embedded "
                              "store [FREERET_CHROMA_URL]")

    server = parser.add_argument_group("server")
    server.add_argument("--host", default=env("FREERET_HOST", "GRADIO_SERVER_NAME", default="127.0.0.1"),
                        help="address to listen on; 0.0.0.0 for all interfaces [FREERET_HOST] "
                             "(default: 127.0.0.1, this machine only)")
    server.add_argument("--port", type=int, default=env("FREERET_PORT", "GRADIO_SERVER_PORT", default=DEFAULT_PORT),
                        help=f"port [FREERET_PORT] (default: {DEFAULT_PORT})")
    server.add_argument("--root-path", default=env("FREERET_ROOT_PATH", "GRADIO_ROOT_PATH"),
                        help="URL prefix when served behind a reverse proxy [FREERET_ROOT_PATH]")
    server.add_argument("--auth", default=env("FREERET_AUTH"),
                        help="require a login: user:password (several separated by commas) or a file "
                             "with one user:password a line [FREERET_AUTH] (default: no login)")
    server.add_argument("--max-upload", default=env("FREERET_MAX_UPLOAD", default=DEFAULT_MAX_UPLOAD),
                        help=f"largest file accepted, e.g. 200mb, 2gb [FREERET_MAX_UPLOAD] (default: {DEFAULT_MAX_UPLOAD})")
    server.add_argument("--share", action=argparse.BooleanOptionalAction,
                        default=parse_bool(env("FREERET_SHARE", default="false"), "FREERET_SHARE"),
                        help="create a public gradio.live link (sends traffic through Gradio's servers) "
                             "[FREERET_SHARE] (default: off)")
    server.add_argument("--concurrency", type=int, default=env("FREERET_CONCURRENCY", default=1),
                        help="model calls run at once [FREERET_CONCURRENCY] (default: 1, one model)")
    server.add_argument("--max-queue", type=int, default=env("FREERET_MAX_QUEUE", default=64),
                        help="requests allowed to wait for the model [FREERET_MAX_QUEUE] (default: 64)")

    search = parser.add_argument_group("answer defaults (each session can change them in Settings)")
    search.add_argument("--top-k", type=int, default=env("FREERET_TOP_K", default=20),
                        help="candidates fetched by the embedding search [FREERET_TOP_K] (default: 20)")
    search.add_argument("--rerank", action=argparse.BooleanOptionalAction,
                        default=parse_bool(env("FREERET_RERANK", default="true"), "FREERET_RERANK"),
                        help="rerank candidates with the model [FREERET_RERANK] (default: on)")
    search.add_argument("--rerank-k", type=int, default=env("FREERET_RERANK_K", default=10),
                        help="candidates reranked [FREERET_RERANK_K] (default: 10)")
    search.add_argument("--sources", type=int, default=env("FREERET_SOURCES", default=3),
                        help="sources given to the model for an answer [FREERET_SOURCES] (default: 3)")
    search.add_argument("--min-relevance", type=float, default=env("FREERET_MIN_RELEVANCE", default=0.2),
                        help="rerank probability below which a source counts as not relevant; when no "
                             "source clears it the app says it found nothing [FREERET_MIN_RELEVANCE] "
                             "(default: 0.2)")
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> AppConfig:
    """Flags over environment over defaults. Raises ConfigError (or exits on --help / bad flags)."""
    environ = os.environ if environ is None else environ
    args = build_parser(environ).parse_args(argv)
    config = AppConfig(
        model=args.model or "",
        device=args.device or None,
        dtype=args.dtype or None,
        max_answer_tokens=int(args.max_answer_tokens) if args.max_answer_tokens else None,
        data_dir=Path(args.data_dir).expanduser(),
        chroma_url=args.chroma_url or None,
        host=args.host,
        port=int(args.port),
        root_path=args.root_path or None,
        auth=parse_auth(args.auth),
        max_upload_bytes=parse_size(args.max_upload),
        share=bool(args.share),
        top_k=int(args.top_k),
        rerank=bool(args.rerank),
        rerank_k=int(args.rerank_k),
        n_sources=int(args.sources),
        min_relevance=float(args.min_relevance),
        concurrency=int(args.concurrency),
        max_queue=int(args.max_queue),
    )
    validate(config)
    return config


def validate(config: AppConfig) -> None:
    if not 0 < config.port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, got {config.port}")
    if config.max_answer_tokens is not None and config.max_answer_tokens < 1:
        raise ConfigError(f"max-answer-tokens must be at least 1, got {config.max_answer_tokens}")
    for name in ("top_k", "rerank_k", "n_sources", "concurrency", "max_queue"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if not 0.0 <= config.min_relevance <= 1.0:
        raise ConfigError(f"min-relevance is a probability between 0 and 1, got {config.min_relevance}")
    if config.chroma_url and not re.match(r"^https?://", config.chroma_url):
        raise ConfigError(f"chroma-url must start with http:// or https://, got {config.chroma_url!r}")


def apply_privacy_env(environ: dict[str, str] | None = None) -> None:
    """Turn off analytics and telemetry of gradio, huggingface_hub and chromadb (unless set)."""
    environ = os.environ if environ is None else environ
    for name, value in PRIVACY_ENV.items():
        environ.setdefault(name, value)
