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
    # Many users (libraries.py, ui_users.py): with `auth` each login has its own library; a shared
    # library (indexed with the CLI) is searched by everyone, read-only; in demo mode every browser
    # session has a temporary library of its own, capped and removed after `demo_ttl_minutes` idle.
    shared_library: Path | None = None
    demo: bool = False
    demo_ttl_minutes: float = 60.0
    demo_grace_seconds: float = 60.0  # a closed tab's library goes this long after (a dropped link comes back)
    demo_max_mb: float = 50.0
    demo_max_files: int = 10

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
    many = parser.add_argument_group("many users")
    many.add_argument("--shared-library", metavar="DIR", default=env("FREERET_SHARED_LIBRARY"),
                      help="a library folder (indexed with the CLI: freeret-rag --data-dir DIR add ...) that every "
                           "user searches, read-only, besides their own [FREERET_SHARED_LIBRARY]")
    many.add_argument("--demo", action=argparse.BooleanOptionalAction, default=None,
                      help="public demo: every browser session gets a temporary library of its own, removed when "
                           "the tab closes or after --demo-ttl-minutes, and a sample library one click away "
                           "[FREERET_DEMO] (default: on in a Hugging Face Space (SPACE_ID set) without --auth)")
    many.add_argument("--demo-ttl-minutes", type=float, default=env("FREERET_DEMO_TTL_MINUTES", default=60),
                      help="a demo session's library is removed after this long without a request "
                           "[FREERET_DEMO_TTL_MINUTES] (default: 60)")
    many.add_argument("--demo-grace-seconds", type=float, default=env("FREERET_DEMO_GRACE_SECONDS", default=60),
                      help="a closed tab's demo library is removed this long after, unless the tab comes back "
                           "(Gradio says 'closed' also when a connection drops for a moment) "
                           "[FREERET_DEMO_GRACE_SECONDS] (default: 60)")
    many.add_argument("--demo-max-mb", type=float, default=env("FREERET_DEMO_MAX_MB", default=50),
                      help="most megabytes of files in one demo session's library [FREERET_DEMO_MAX_MB] (default: 50)")
    many.add_argument("--demo-max-files", type=int, default=env("FREERET_DEMO_MAX_FILES", default=10),
                      help="most files in one demo session's library [FREERET_DEMO_MAX_FILES] (default: 10)")
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
        shared_library=Path(args.shared_library).expanduser() if args.shared_library else None,
        demo_ttl_minutes=float(args.demo_ttl_minutes),
        demo_grace_seconds=float(args.demo_grace_seconds),
        demo_max_mb=float(args.demo_max_mb),
        demo_max_files=int(args.demo_max_files),
    )
    demo = args.demo
    if demo is None:
        demo = parse_bool(env_value(environ, "FREERET_DEMO"), "FREERET_DEMO") if env_value(environ, "FREERET_DEMO") \
            else bool(env_value(environ, "SPACE_ID")) and not config.auth
    config.demo = bool(demo)
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
    if config.demo and config.auth:
        raise ConfigError("--demo gives every browser session a temporary library and --auth every login a library "
                          "of its own: choose one (--no-demo with --auth)")
    if config.watch and (config.demo or config.auth):
        raise ConfigError("--watch keeps one library in step with a folder, and with "
                          f"{'--demo' if config.demo else '--auth'} every "
                          f"{'session' if config.demo else 'login'} has a library of its own: index the folder "
                          "into a --shared-library with the CLI instead (freeret-rag --data-dir DIR add FOLDER)")
    shared_index = config.shared_library / ("" if config.chroma_url else "chroma") if config.shared_library else None
    if shared_index is not None and not shared_index.is_dir():
        raise ConfigError(f"--shared-library: {config.shared_library} holds no library (index files into it with "
                          f"freeret-rag --data-dir {config.shared_library} add FILES)")
    if config.demo_ttl_minutes <= 0 or config.demo_max_mb < 0 or config.demo_max_files < 0 \
            or config.demo_grace_seconds < 0:
        raise ConfigError("--demo-ttl-minutes must be positive, --demo-max-mb, --demo-max-files and "
                          "--demo-grace-seconds 0 or more")
    if (config.share or not is_loopback(config.host)) and not config.auth and not config.allow_no_login \
            and not config.demo:  # a demo session sees its own temporary library only
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
