"""Settings shared by the library, the command line and the web app: defaults, where data lives,
and the common flags with their `FREERET_*` environment variables.

A flag wins over its environment variable, which wins over the default. `add_flags` puts the
shared flags on an argparse parser (the environment fills the defaults, so `--help` shows them);
`read_flags` turns the parsed strings into typed values and checks them. That is the one
validation path of `app.py` (config.py), `python -m freeret_rag` (cli.py) and its `eval` command.

Nothing here imports torch or gradio at import time (`default_model` imports torch when called).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Sequence

from .errors import FreeRetError

# The hub ids used when no model is given. A 2B Qwen2-VL where a GPU is present; on CPU the
# smallest SmolVLM: its SmolLM2-135M language model answers at interactive speed on CPU, but its
# retrieval quality is unmeasured and likely weak (pass --model for a larger one).
GPU_DEFAULT_MODEL = "Qwen/Qwen2-VL-2B-Instruct"
CPU_DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"

# Answer defaults: the app's Settings panel starts from them, chat.ChatSettings defaults to them.
TOP_K = 20  # candidates fetched by the embedding + lexical search
RERANK = True  # rerank candidates with the model
RERANK_K = 10  # candidates reranked
N_SOURCES = 3  # sources given to the model for an answer
MIN_RELEVANCE: float | None = None  # rerank probability below which a source is not relevant; None: "auto",
# the floor the library's self-check measured (none where the reranker cannot tell matches apart)

# Caps per file (0: none). Over a cap, the first part is indexed and the report says so: a 200 MB
# text file is ~410,000 chunks, ~13 hours of embedding on a CPU, while a question waits between batches.
MAX_PAGES = 500  # pages per PDF
MAX_CHUNKS = 5000  # chunks per text file (about 3.5 MB of text at 800-character chunks)
MAX_VIDEO_MINUTES = 180.0  # minutes per video (segments are bounded anyway; this keeps them short)

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


class ConfigError(FreeRetError, ValueError):
    """A flag or environment variable has a value that cannot be used."""


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """The per-user data folder + freeret-rag, shared by the app and the command line."""
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


def apply_privacy_env(environ: MutableMapping[str, str] | None = None) -> None:
    """Turn off analytics and telemetry of gradio, huggingface_hub and chromadb (unless set)."""
    environ = os.environ if environ is None else environ
    for name, value in PRIVACY_ENV.items():
        environ.setdefault(name, value)


def env_value(environ: Mapping[str, str], *names: str, default: Any = None) -> Any:
    """The first of `names` set to a non-empty value in `environ`, else `default`."""
    for name in names:
        if environ.get(name) not in (None, ""):
            return environ[name]
    return default


def parse_bool(value: str, name: str) -> bool:
    """'1', 'true', 'yes', 'on' / '0', 'false', 'no', 'off', '' (any case); else ConfigError."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true/false, got {value!r}")


def parse_weights(value: str, name: str) -> tuple[float, float, float] | None:
    """'dense,lexical,words' (a missing words weight is 1) as three non-negative numbers, not all 0."""
    if value.strip().lower() == "auto":
        return None
    try:
        weights = [float(part) for part in value.split(",")]
    except ValueError:
        raise ConfigError(f"{name}: expected numbers like 1,0.25,0.5, got {value!r}") from None
    if len(weights) == 2:
        weights.append(1.0)
    if len(weights) != 3 or min(weights) < 0 or max(weights) == 0:
        raise ConfigError(f"{name}: expected 2 or 3 non-negative weights (dense, lexical, words), got {value!r}")
    return weights[0], weights[1], weights[2]


def check_answer_settings(*, top_k: int | None = None, rerank_k: int | None = None, n_sources: int | None = None,
                          min_relevance: float | None = None) -> None:
    """Raise ConfigError unless each given count is at least 1 and min_relevance is a probability."""
    for name, value in (("top-k", top_k), ("rerank-k", rerank_k), ("sources", n_sources)):
        if value is not None and int(value) < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if min_relevance is not None and not 0.0 <= float(min_relevance) <= 1.0:
        raise ConfigError(f"min-relevance is a probability between 0 and 1, got {min_relevance}")


# -- the shared flags ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    """One setting: its flag, its environment variable, its type and default, its help group."""

    dest: str
    option: str
    env: str
    kind: type  # str, int, float, bool or Path
    default: Any
    group: str  # "model", "storage" or "answer"
    help: str

    @property
    def label(self) -> str:
        return f"{self.option} [{self.env}]"


GROUP_TITLES = {"model": "model", "storage": "storage",
                "indexing": "indexing (caps per file; 0 for none)",
                "search": "search (a fixed value overrides what the library's self-check measured)",
                "answer": "answer defaults (each session can change them in Settings)"}

FLAGS: dict[str, Flag] = {flag.dest: flag for flag in (
    Flag("model", "--model", "FREERET_MODEL", str, "", "model",
         f"hub id, local model folder or .gguf file (default: {GPU_DEFAULT_MODEL} with a GPU, "
         f"{CPU_DEFAULT_MODEL} without)"),
    Flag("device", "--device", "FREERET_DEVICE", str, None, "model",
         "cpu, cuda, cuda:1, mps (default: best available)"),
    Flag("dtype", "--dtype", "FREERET_DTYPE", str, None, "model",
         "float32, bfloat16 or float16 (default: per device)"),
    Flag("visual_budget", "--visual-budget", "FREERET_VISUAL_BUDGET", str, "auto", "model",
         "visual tokens per image for search: auto (the model family's budget: SmolVLM one 512 px view, "
         "Qwen2-VL 448x448 px; answers at full resolution on a GPU) or full (the processor's own "
         "resolution everywhere; slower, and a library built with the other setting must be re-indexed)"),
    Flag("data_dir", "--data-dir", "FREERET_DATA_DIR", Path, None, "storage",
         "index, page renders and uploaded files"),
    Flag("chroma_url", "--chroma-url", "FREERET_CHROMA_URL", str, None, "storage",
         "use a Chroma server, e.g. http://localhost:8000, instead of the embedded store"),
    Flag("ocr", "--ocr", "FREERET_OCR", str, "auto", "storage",
         "read PDF pages by OCR: auto (pages without a text layer), on (every page), off (default: auto)"),
    Flag("fusion_weights", "--fusion-weights", "FREERET_FUSION_WEIGHTS", str, None, "search",
         "fixed RRF weights 'dense,lexical,words', e.g. 1,0.25,0.5 (default: measured)"),
    Flag("rerank_share", "--rerank-share", "FREERET_RERANK_SHARE", float, None, "search",
         "fixed share of the rerank in the final order, 0 (off) to 1 (the reranker's order) (default: measured)"),
    Flag("max_pages", "--max-pages", "FREERET_MAX_PAGES", int, MAX_PAGES, "indexing",
         f"pages indexed per PDF; a longer one is indexed up to this page (default: {MAX_PAGES})"),
    Flag("max_chunks", "--max-chunks", "FREERET_MAX_CHUNKS", int, MAX_CHUNKS, "indexing",
         f"text chunks indexed per text file, about 650 characters each (default: {MAX_CHUNKS})"),
    Flag("max_video_minutes", "--max-video-minutes", "FREERET_MAX_VIDEO_MINUTES", float, MAX_VIDEO_MINUTES,
         "indexing", f"minutes indexed per video (default: {MAX_VIDEO_MINUTES:g})"),
    Flag("top_k", "--top-k", "FREERET_TOP_K", int, TOP_K, "answer",
         f"candidates fetched by the embedding search (default: {TOP_K})"),
    Flag("rerank", "--rerank", "FREERET_RERANK", bool, RERANK, "answer",
         "rerank candidates with the model (default: on)"),
    Flag("rerank_k", "--rerank-k", "FREERET_RERANK_K", int, RERANK_K, "answer",
         f"candidates reranked (default: {RERANK_K})"),
    Flag("n_sources", "--sources", "FREERET_SOURCES", int, N_SOURCES, "answer",
         f"sources given to the model for an answer (default: {N_SOURCES})"),
    Flag("min_relevance", "--min-relevance", "FREERET_MIN_RELEVANCE", float, MIN_RELEVANCE, "answer",
         "rerank probability below which a source counts as not relevant; when no source clears it "
         "the app says it found nothing (default: auto, the floor the library's self-check measured)"),
)}
COMMON = ("model", "device", "dtype", "visual_budget", "data_dir", "chroma_url", "ocr", "fusion_weights",
          "rerank_share")
ANSWER = ("top_k", "rerank", "rerank_k", "n_sources", "min_relevance")
CAPS = ("max_pages", "max_chunks", "max_video_minutes")


def add_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str], names: Sequence[str] = COMMON,
              *, suppress: bool = False, groups: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add the named shared flags to `parser`, each in its help group; returns the groups.

    Defaults come from the FREERET_* variables in `environ` (raw strings, checked by `read_flags`).
    `suppress=True` leaves the attribute out when the flag is absent: for a copy of the flags on a
    subcommand, so that `add DIR --model M` and `--model M add DIR` both work and neither resets
    the other. `groups` maps a group key to an existing argument group to add to.
    """
    groups = {} if groups is None else groups
    for name in names:
        flag = FLAGS[name]
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(GROUP_TITLES[flag.group])
        default, text = env_value(environ, flag.env, default=flag.default), flag.help
        if flag.kind is Path:
            text = f"{text} (default: {default_data_dir(environ)})"
            default = default or str(default_data_dir(environ))
        extra: dict[str, Any] = ({"action": argparse.BooleanOptionalAction} if flag.kind is bool
                                 else {"metavar": flag.option.lstrip("-").replace("-", "_").upper()})
        groups[flag.group].add_argument(flag.option, dest=flag.dest, help=f"{text} [{flag.env}]",
                                        default=argparse.SUPPRESS if suppress else default, **extra)
    return groups


def _convert(flag: Flag, value: Any) -> Any:
    if flag.kind is bool:
        return value if isinstance(value, bool) else parse_bool(str(value), flag.label)
    if value is None or value == "":
        return flag.default
    if flag.dest in ("min_relevance", "rerank_share") and str(value).strip().lower() == "auto":
        return None
    if flag.dest == "fusion_weights":
        return parse_weights(str(value), flag.label)
    if flag.kind is Path:
        return Path(value).expanduser()
    if flag.kind in (int, float):
        try:
            return flag.kind(value)
        except (TypeError, ValueError):
            expected = "a whole number" if flag.kind is int else "a number"
            raise ConfigError(f"{flag.label}: expected {expected}, got {value!r}") from None
    return str(value)


def read_flags(args: argparse.Namespace, names: Sequence[str] = COMMON) -> dict[str, Any]:
    """Typed, checked values of the named shared flags in `args`; raises ConfigError."""
    values = {name: _convert(FLAGS[name], getattr(args, name)) for name in names}
    check_answer_settings(**{name: values[name] for name in ANSWER if name in values and name != "rerank"})
    for name in CAPS:
        if name in values and values[name] < 0:
            raise ConfigError(f"{FLAGS[name].option.lstrip('-')} must be 0 (no cap) or more, got {values[name]}")
    share = values.get("rerank_share")
    if share is not None and not 0.0 <= share <= 1.0:
        raise ConfigError(f"rerank-share is between 0 and 1, got {share}")
    if values.get("visual_budget", "auto") not in ("auto", "full"):
        raise ConfigError(f"visual-budget is auto or full, got {values['visual_budget']!r}")
    if "ocr" in values and values["ocr"] not in ("auto", "on", "off"):
        raise ConfigError(f"ocr is auto, on or off, got {values['ocr']!r}")
    if values.get("chroma_url") and not re.match(r"^https?://", values["chroma_url"]):
        raise ConfigError(f"chroma-url must start with http:// or https://, got {values['chroma_url']!r}")
    return values
