"""Command line: `python -m freeret_rag [options] add PATH... | list | delete DOC... | search "query" | reindex`.

Subcommands form a registry: a module exposes `register(subparsers)`, adds its parsers and sets
`func(args) -> exit code` on each. This module registers its own; `freeret_rag.eval.cli` is picked up
when it exists (its commands can use `load_engine` / `open_library` from here). Heavy imports (torch,
chromadb) happen inside the commands, so `--help` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import FreeRetError

if TYPE_CHECKING:
    from .library import AddReport, Library, Progress

EXTENSIONS = ("freeret_rag.eval.cli",)
KINDS = ("text", "image", "pdf_page", "video_segment")


# -- shared by every command ---------------------------------------------------------------------
def load_engine(args: argparse.Namespace):
    """The engine named by --model (default: the app's default model for this machine)."""
    from .config import default_model
    from .engine import FreeRet

    return FreeRet.from_pretrained(args.model or default_model(), device=args.device, dtype=args.dtype)


def open_library(args: argparse.Namespace, *, engine: bool = True, allow_mismatch: bool = False) -> "Library":
    """The library at --data-dir / --chroma-url; without `engine`, the active index is opened model-free."""
    from .library import Library

    return Library(load_engine(args) if engine else None, args.data_dir, args.chroma_url,
                   allow_mismatch=allow_mismatch)


class ProgressBar:
    """Renders library Progress events: a tqdm bar per file (items), then one result line per file."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.bar = None

    def __call__(self, event: "Progress") -> None:
        from tqdm import tqdm

        name = Path(event.path).name
        if event.stage == "file":
            self.close()
            self.bar = tqdm(desc=f"[{event.file_index}/{event.files}] {name}", unit="item", leave=False,
                            file=self.stream, dynamic_ncols=True)
        elif event.stage == "item" and self.bar is not None:
            self.bar.total = event.total or None
            self.bar.n = event.done
            self.bar.refresh()
        elif event.stage in ("added", "unchanged", "skipped"):
            self.close()
            detail = {"added": f"{event.done} item(s)", "unchanged": "already indexed", "skipped": ""}[event.stage]
            message = "; ".join(part for part in (detail, event.message) if part)
            tqdm.write(f"[{event.file_index}/{event.files}] {event.stage:<9} {name}: {message}", file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _report(report: "AddReport") -> int:
    print(report.summary())
    return 1 if report.skipped and not (report.added or report.unchanged) else 0


def resolve_documents(library: "Library", refs: Sequence[str]) -> list[str]:
    """Doc ids for references given as a doc id, a unique id prefix, or a file name."""
    docs = library.documents()
    found = []
    for ref in refs:
        matches = [d for d in docs if d.doc_id == ref] or [d for d in docs if d.doc_id.startswith(ref)] \
            or [d for d in docs if d.source == ref or d.path == ref]
        if not matches:
            raise FreeRetError(f"no document matches {ref!r}; see `list`")
        if len(matches) > 1:
            listed = ", ".join(f"{d.doc_id} ({d.source})" for d in matches)
            raise FreeRetError(f"{ref!r} matches several documents: {listed}; give a doc id")
        found.append(matches[0].doc_id)
    return found


# -- the commands --------------------------------------------------------------------------------
def cmd_add(args: argparse.Namespace) -> int:
    library = open_library(args)
    return _report(library.add(args.paths, progress=None if args.quiet else ProgressBar()))


def cmd_reindex(args: argparse.Namespace) -> int:
    library = open_library(args, allow_mismatch=True)
    if not library.others:
        print(f"the index already uses {library.store.model_id} ({library.store.prompt_version}); nothing to re-index")
        return 0
    return _report(library.reindex(progress=None if args.quiet else ProgressBar()))


def cmd_list(args: argparse.Namespace) -> int:
    library = open_library(args, engine=False, allow_mismatch=True)
    docs = library.documents()
    if args.json:
        print(json.dumps([doc.__dict__ for doc in docs], indent=2))
        return 0
    for doc in docs:
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(doc.added_at))
        print(f"{doc.doc_id}  {doc.file_type:<5}  {doc.items:>5} item(s)  {added}  {doc.source}")
    print(f"{len(docs)} document(s), {len(library)} items; model {library.store.model_id} "
          f"({library.store.prompt_version}) in {library.location}")
    if library.needs_reindex:
        print("a re-index is pending: run `reindex` with the new model")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    library = open_library(args, engine=False, allow_mismatch=True)
    for doc_id in resolve_documents(library, args.docs):
        doc = library.delete(doc_id)
        print(f"deleted {doc_id} ({doc.source if doc else 'not in the active index'})")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .items import Query

    library = open_library(args)
    doc_ids = resolve_documents(library, args.doc) if args.doc else None
    hits = library.search(Query(args.query, image=args.image), k=args.k, kinds=args.kind or None, doc_ids=doc_ids,
                          rerank=args.rerank, rerank_k=args.rerank_k)
    rows = [{"rank": rank, "score": hit.score, "label": hit.item.label, "doc_id": hit.item.doc_id,
             "item_id": hit.item.item_id, "kind": hit.item.kind, "dense": hit.dense_score,
             "lexical": hit.lexical_score, "fused": hit.fused_score, "rerank": hit.rerank_score,
             "thumbnail": hit.item.thumbnail, "text": hit.item.text[:300]} for rank, hit in enumerate(hits, 1)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        snippet = " ".join(row["text"].split())[:100]
        print(f"{row['rank']:>2}. {row['score']:.3f}  {row['label']}  [{row['kind']}, {row['doc_id']}]"
              + (f"\n      {snippet}" if snippet else ""))
    if not rows:
        print("no results")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    add = subparsers.add_parser("add", help="index files and folders (recursively)")
    add.add_argument("paths", nargs="+", metavar="PATH")
    add.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary")
    add.set_defaults(func=cmd_add)

    listing = subparsers.add_parser("list", help="list indexed documents (no model is loaded)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    delete = subparsers.add_parser("delete", help="remove documents with their items and thumbnails")
    delete.add_argument("docs", nargs="+", metavar="DOC", help="doc id, unique id prefix, or file name")
    delete.set_defaults(func=cmd_delete)

    search = subparsers.add_parser("search", help="hybrid search (dense + BM25, fused) with model reranking")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10, help="results to show (default: 10)")
    search.add_argument("--kind", action="append", choices=KINDS, help="only this item kind (repeatable)")
    search.add_argument("--doc", action="append", metavar="DOC", help="only this document (repeatable)")
    search.add_argument("--image", type=Path, help="search with an image (and the query text)")
    search.add_argument("--no-rerank", dest="rerank", action="store_false", help="skip model reranking")
    search.add_argument("--rerank-k", type=int, default=10, help="candidates reranked (default: 10)")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    reindex = subparsers.add_parser("reindex", help="re-embed every document with the loaded model")
    reindex.add_argument("-q", "--quiet", action="store_true")
    reindex.set_defaults(func=cmd_reindex)


def build_parser() -> argparse.ArgumentParser:
    from .config import CPU_DEFAULT_MODEL, GPU_DEFAULT_MODEL, default_data_dir

    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m freeret_rag",
                                     description="FreeRet RAG library: index and search your files from the shell.")
    parser.add_argument("--model", default=env("FREERET_MODEL", ""),
                        help=f"hub id, local folder or .gguf [FREERET_MODEL] (default: {GPU_DEFAULT_MODEL} "
                             f"with a GPU, {CPU_DEFAULT_MODEL} without)")
    parser.add_argument("--device", default=env("FREERET_DEVICE"), help="cpu, cuda, mps [FREERET_DEVICE]")
    parser.add_argument("--dtype", default=env("FREERET_DTYPE"), help="float32, bfloat16, float16 [FREERET_DTYPE]")
    parser.add_argument("--data-dir", type=Path, default=Path(env("FREERET_DATA_DIR") or default_data_dir(os.environ)),
                        help="index and assets [FREERET_DATA_DIR] (default: %(default)s)")
    parser.add_argument("--chroma-url", default=env("FREERET_CHROMA_URL"),
                        help="a Chroma server, e.g. http://127.0.0.1:8000 [FREERET_CHROMA_URL] (default: embedded)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(subparsers)
    for name in EXTENSIONS:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .config import apply_privacy_env

    apply_privacy_env()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except FreeRetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
