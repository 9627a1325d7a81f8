"""Configuration of the chat app: the app-only flags (server, login, upload size) on top of the
shared ones (model, storage, answer defaults) defined in freeret_rag/settings.py.

Every setting can be given as a flag or as a `FREERET_*` environment variable; a flag wins over
the environment, which wins over the default. `parse_config(argv, environ)` takes both explicitly
so that tests do not depend on the process environment.

Nothing here imports torch or gradio: `app.py --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from . import settings
from .settings import (CPU_DEFAULT_MODEL, GPU_DEFAULT_MODEL, PRIVACY_ENV, ConfigError, apply_privacy_env,
                       default_data_dir, default_model, env_value, parse_bool)

__all__ = ["AppConfig", "CPU_DEFAULT_MODEL", "ConfigError", "DEFAULT_MAX_UPLOAD", "DEFAULT_PORT", "GPU_DEFAULT_MODEL",
           "PRIVACY_ENV", "apply_privacy_env", "build_parser", "default_data_dir", "default_model", "parse_auth",
           "parse_bool", "parse_config", "parse_size", "validate"]

DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD = "200mb"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


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
    visual_budget: str = "auto"
    max_answer_tokens: int | None = None
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    chroma_url: str | None = None
    ocr: str = "auto"  # read PDF pages by OCR: auto (pages without a text layer), on, off
    watch: tuple[Path, ...] = ()  # folders kept in step with the library while the app runs
    keep_deleted: bool = False  # watched files deleted on disk stay in the library
    fusion_weights: tuple[float, float, float] | None = None  # fixed: override the self-check's
    rerank_share: float | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    root_path: str | None = None
    auth: list[tuple[str, str]] = field(default_factory=list)
    allow_no_login: bool = False  # serve beyond this machine without a login, on purpose
    max_upload_bytes: int = parse_size(DEFAULT_MAX_UPLOAD)
    share: bool = False
    # Defaults of the settings panel (each browser session may change its own).
    top_k: int = settings.TOP_K
    rerank: bool = settings.RERANK
    rerank_k: int = settings.RERANK_K
    n_sources: int = settings.N_SOURCES
    min_relevance: float | None = settings.MIN_RELEVANCE
    # Caps per file (0: none): over a cap, the first pages / chunks / minutes are indexed.
    max_pages: int = settings.MAX_PAGES
    max_chunks: int = settings.MAX_CHUNKS
    max_video_minutes: float = settings.MAX_VIDEO_MINUTES
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


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    env = lambda *names, default=None: env_value(environ, *names, default=default)  # noqa: E731
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="FreeRet RAG: chat with your own PDFs, images and videos. One multimodal model "
                    "retrieves, reranks and answers, locally.",
        epilog="Every flag can also be set with the environment variable shown in [brackets].",
    )
    groups = {key: parser.add_argument_group(settings.GROUP_TITLES[key]) for key in ("model", "storage")}
    server = parser.add_argument_group("server")
    groups["answer"] = parser.add_argument_group(settings.GROUP_TITLES["answer"])
    settings.add_flags(parser, environ, settings.COMMON + settings.ANSWER + settings.CAPS, groups=groups)
    groups["model"].add_argument("--max-answer-tokens", type=int, default=env("FREERET_MAX_ANSWER_TOKENS"),
                                 help="longest answer, in tokens [FREERET_MAX_ANSWER_TOKENS] "
                                      "(default: the engine's, 384)")
    groups["storage"].add_argument(
        "--watch", action="append", metavar="DIR", default=None,
        help="keep the library in step with this folder while the app runs: new and changed files are indexed, "
             "deleted ones removed (repeatable) [FREERET_WATCH, folders separated by "
             f"{os.pathsep!r}]")
    groups["storage"].add_argument(
        "--keep-deleted", action=argparse.BooleanOptionalAction,
        default=parse_bool(env("FREERET_KEEP_DELETED", default="false"), "FREERET_KEEP_DELETED"),
        help="keep watched files that were deleted on disk in the library [FREERET_KEEP_DELETED] (default: off)")

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
    server.add_argument("--allow-no-login", action=argparse.BooleanOptionalAction,
                        default=parse_bool(env("FREERET_ALLOW_NO_LOGIN", default="false"), "FREERET_ALLOW_NO_LOGIN"),
                        help="serve beyond this machine (a --host other than loopback, or --share) without a "
                             "login; refused otherwise, as anyone who reaches the port would see and change the "
                             "whole library [FREERET_ALLOW_NO_LOGIN] (default: off)")
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
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> AppConfig:
    """Flags over environment over defaults. Raises ConfigError (or exits on --help / bad flags)."""
    environ = os.environ if environ is None else environ
    args = build_parser(environ).parse_args(argv)
    config = AppConfig(
        **settings.read_flags(args, settings.COMMON + settings.ANSWER + settings.CAPS),
        max_answer_tokens=int(args.max_answer_tokens) if args.max_answer_tokens else None,
        host=args.host,
        port=int(args.port),
        root_path=args.root_path or None,
        auth=parse_auth(args.auth),
        allow_no_login=bool(args.allow_no_login),
        max_upload_bytes=parse_size(args.max_upload),
        share=bool(args.share),
        concurrency=int(args.concurrency),
        max_queue=int(args.max_queue),
        watch=tuple(Path(folder).expanduser() for folder in
                    (args.watch or [f for f in env_value(environ, "FREERET_WATCH", default="").split(os.pathsep) if f])),
        keep_deleted=bool(args.keep_deleted),
    )
    validate(config)
    return config


def validate(config: AppConfig) -> None:
    """Checks of the app-only settings (the shared ones are checked by settings.read_flags)."""
    if not 0 < config.port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, got {config.port}")
    if config.max_answer_tokens is not None and config.max_answer_tokens < 1:
        raise ConfigError(f"max-answer-tokens must be at least 1, got {config.max_answer_tokens}")
    for folder in config.watch:
        if not folder.is_dir():
            raise ConfigError(f"watch: there is no folder {folder}")
    for name in ("concurrency", "max_queue"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if (config.share or not is_loopback(config.host)) and not config.auth and not config.allow_no_login:
        where = "a public gradio.live link" if config.share else f"{config.host} (beyond this machine)"
        raise ConfigError(f"serving on {where} without a login would let anyone who reaches it read, add and "
                          "delete the whole library: give a login with --auth / FREERET_AUTH user:password, or "
                          "serve it open on purpose with --allow-no-login / FREERET_ALLOW_NO_LOGIN=1")


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another name: it may resolve to any address
        return False
