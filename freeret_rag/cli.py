"""Command line: `freeret-rag` or `python -m freeret_rag` with
`[options] add PATH... | sync DIR... | list | delete DOC... | search "query" | reindex | eval DATASET_DIR`.

Subcommands form a registry: a module exposes `register(subparsers)`, adds its parsers and sets
`func(args) -> exit code` on each. This module registers its own; `freeret_rag.eval.cli` is picked up
when it exists (its commands can use `load_engine` / `open_library` from here). The shared flags
(settings.COMMON: --model, --device, --dtype, --visual-budget, --data-dir, --chroma-url, ...) and -v are accepted before
and after the subcommand, on every subcommand, extensions included. Heavy imports (torch, chromadb)
happen inside the commands, so `--help` stays quick.

Errors end the command with one line on stderr, never a traceback: a bad flag or value exits 2
(argparse, settings.ConfigError), a FreeRetError 2, an OSError (file system) 1, a Chroma server
that is not reachable 3 (nothing was lost: run the same command again when it is back).
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
from dataclasses import replace
from pathlib import Path
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Mapping, NoReturn, Sequence

from . import settings
from .errors import FreeRetError, StoreUnreachableError

if TYPE_CHECKING:
    from .library import AddReport, Library, Progress

EXTENSIONS = ("freeret_rag.eval.cli",)
KINDS = ("text", "image", "pdf_page", "video_segment")


# -- shared by every command ---------------------------------------------------------------------
def load_engine(args: argparse.Namespace):
    """The engine named by --model (default: the default model for this machine, settings.py)."""
    from .engine import FreeRet

    return FreeRet.from_pretrained(args.model or settings.default_model(), device=args.device, dtype=args.dtype,
                                   visual_budget=getattr(args, "visual_budget", "auto"))


def open_library(args: argparse.Namespace, *, engine: bool = True, allow_mismatch: bool = False) -> "Library":
    """The library at --data-dir / --chroma-url; without `engine`, the active index is opened model-free."""
    from .library import Library
    from .media import MediaSettings

    return Library(load_engine(args) if engine else None, args.data_dir, args.chroma_url,
                   allow_mismatch=allow_mismatch, fusion_weights=getattr(args, "fusion_weights", None),
                   media_settings=MediaSettings(ocr=getattr(args, "ocr", "auto")),
                   rerank_share=getattr(args, "rerank_share", None))


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
        elif event.stage in ("added", "unchanged", "skipped", "waiting", "cancelled"):
            self.close()
            detail = {"added": f"{event.done} item(s)", "unchanged": "already indexed"}.get(event.stage, "")
            message = "; ".join(part for part in (detail, event.message) if part)
            tqdm.write(f"[{event.file_index}/{event.files}] {event.stage:<9} {name}: {message}", file=self.stream)
        elif event.stage == "check":
            self.close()
            tqdm.write(event.message, file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _report(report: "AddReport") -> int:
    print(report.summary())
    return 1 if report.skipped and not (report.added or report.unchanged) else 0


def resolve_documents(library: "Library", refs: Sequence[str]) -> list[str]:
    """Doc ids for references given as a doc id, a unique id prefix, or a file name."""
    docs = library.documents() + library.waiting()
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
    from .media import MediaSettings

    library = open_library(args)
    library.media_settings = replace(library.media_settings,
                                     **settings.read_flags(args, settings.CAPS))  # the caps per file
    with _progress(args) as bar:
        return _report(library.add(args.paths, progress=bar))


@contextmanager
def _progress(args: argparse.Namespace) -> Iterator[ProgressBar | None]:
    """A progress bar (none with --quiet), closed however the command ends, so that an error is
    the last line printed."""
    bar = None if args.quiet else ProgressBar()
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def cmd_sync(args: argparse.Namespace) -> int:
    from .sync import FolderSync

    report = FolderSync(open_library(args), args.folders, keep_deleted=args.keep_deleted).run(
        progress=None if args.quiet else ProgressBar())
    print(report.summary())
    return 1 if report.missing and len(report.missing) == len(report.folders) else 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from .library import WAITING_FOR_IMAGES

    library = open_library(args, allow_mismatch=True)
    plan = library.reindex_plan() if library.others else None
    if plan is None or (not plan.movable and not library.needs_reindex):
        waiting = f"; {len(plan.unseeable)} document(s) still {WAITING_FOR_IMAGES}" if plan and plan.unseeable else ""
        print(f"the index already uses {library.store.model_id} ({library.store.prompt_version}); "
              f"nothing to re-index{waiting}")
        return 0
    if plan.unseeable:  # said before anything starts; nothing is deleted
        print(plan.warning(library.store.model_id), file=sys.stderr)
    with _progress(args) as bar:
        return _report(library.reindex(progress=bar))


def cmd_list(args: argparse.Namespace) -> int:
    library = open_library(args, engine=False, allow_mismatch=True)
    docs, waiting = library.documents(), library.waiting()
    if args.json:
        print(json.dumps([{**doc.__dict__, "text_note": getattr(doc, "text_note", "")} for doc in docs + waiting],
                         indent=2))
        return 0
    for doc in docs + waiting:
        added = time.strftime("%Y-%m-%d %H:%M", time.localtime(doc.added_at))
        mark = f"  [{doc.waiting}]" if getattr(doc, "waiting", None) else ""
        print(f"{doc.doc_id}  {doc.file_type:<5}  {doc.items:>5} item(s)  {added}  {doc.source}{mark}")
        if getattr(doc, "text_note", ""):
            print(f"{'':16}  {doc.text_note}")
    print(f"{len(docs)} document(s), {len(library)} items; model {library.store.model_id} "
          f"({library.store.prompt_version}) in {library.location}")
    if waiting:
        print(f"{len(waiting)} more document(s) listed but not searchable with this model (marked above)")
    if library.needs_reindex:
        print("a re-index is pending: run `reindex` with the new model")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    library = open_library(args, engine=False, allow_mismatch=True)
    for doc_id in resolve_documents(library, args.docs):
        doc = library.delete(doc_id)
        print(f"deleted {doc_id} ({doc.source if doc else 'not in the active index'})")
    return 0


def recorded_model(args: argparse.Namespace) -> str | None:
    """The model the library's index was built with (its vectors only match that model's), or None
    when there is no index yet."""
    from .library import Library

    try:
        return Library(None, args.data_dir, args.chroma_url).store.model_id
    except FreeRetError:
        return None


def cmd_search(args: argparse.Namespace) -> int:
    from .items import Query

    rerank = settings.read_flags(args, ("rerank", "rerank_k"))
    if not args.model:  # search with the model the index was built with, not the machine's default
        args.model = recorded_model(args)
    library = open_library(args)
    doc_ids = resolve_documents(library, args.doc) if args.doc else None
    hits = library.search(Query(args.query, image=args.image), k=args.k, kinds=args.kind or None, doc_ids=doc_ids,
                          **rerank)
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


def cmd_check(args: argparse.Namespace) -> int:
    """Show the stored self-check, or (with --run, or when there is none yet) measure it now."""
    library = open_library(args)
    result = library.self_check_result
    if args.run or result is None:
        log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        result = library.self_check(log)
    if args.json:
        print(result.to_json())
        return 0
    print(f"self-check of {library.location} with {result.model_id} ({result.prompt_version}):")
    for line in result.describe():
        print(f"- {line}")
    if library.self_check_stale:
        print("(the library has changed by half since: run `check --run` or add files to re-measure)")
    return 0


def register(subparsers: argparse._SubParsersAction, environ: Mapping[str, str] | None = None) -> None:
    add = subparsers.add_parser("add", help="index files and folders (recursively)")
    add.add_argument("paths", nargs="+", metavar="PATH")
    add.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary")
    settings.add_flags(add, os.environ if environ is None else environ, settings.CAPS)
    add.set_defaults(func=cmd_add)

    sync = subparsers.add_parser("sync", help="make the library follow folders: index new and changed files, "
                                              "follow renames, drop deleted ones")
    sync.add_argument("folders", nargs="+", metavar="DIR")
    sync.add_argument("--keep-deleted", action="store_true",
                      help="keep documents whose files were deleted from the folders")
    sync.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary")
    sync.set_defaults(func=cmd_sync)

    listing = subparsers.add_parser("list", help="list indexed documents (no model is loaded)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    delete = subparsers.add_parser("delete", help="remove documents with their items, thumbnails and kept uploads")
    delete.add_argument("docs", nargs="+", metavar="DOC", help="doc id, unique id prefix, or file name")
    delete.set_defaults(func=cmd_delete)

    search = subparsers.add_parser("search", help="hybrid search (dense + BM25, fused) with model reranking")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10, help="results to show (default: 10)")
    search.add_argument("--kind", action="append", choices=KINDS, help="only this item kind (repeatable)")
    search.add_argument("--doc", action="append", metavar="DOC", help="only this document (repeatable)")
    search.add_argument("--image", type=Path, help="search with an image (and the query text)")
    settings.add_flags(search, os.environ if environ is None else environ, ("rerank", "rerank_k"),
                       groups={"answer": search})
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    check = subparsers.add_parser("check", help="how well the loaded model finds your items (the self-check)",
                                  description="The model writes test queries for a sample of the library; the "
                                              "measured figures set fusion weights, reranking and the relevance "
                                              "floor. Shows the stored result; --run measures again.")
    check.add_argument("--run", action="store_true", help="measure again now")
    check.add_argument("--json", action="store_true")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    check.set_defaults(func=cmd_check)

    reindex = subparsers.add_parser("reindex", help="re-embed every document with the loaded model")
    reindex.add_argument("-q", "--quiet", action="store_true")
    reindex.set_defaults(func=cmd_reindex)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_global_flags(parser: argparse.ArgumentParser, environ: Mapping[str, str], *, suppress: bool) -> None:
    settings.add_flags(parser, environ, settings.COMMON, suppress=suppress)
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="log details")


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand; `environ` (default os.environ) fills the FREERET_* defaults."""
    environ = os.environ if environ is None else environ
    prog = "freeret-rag" if Path(sys.argv[0]).name == "freeret-rag" else "python -m freeret_rag"
    parser = Parser(prog=prog, description="FreeRet RAG library: index and search your files from the shell.",
                    epilog="Every option can also be set with the environment variable shown in [brackets], "
                           "and given before or after the command.")
    _add_global_flags(parser, environ, suppress=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(subparsers, environ)
    for name in EXTENSIONS:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(subparsers)
    for subparser in subparsers.choices.values():  # also after the command; absent ones keep the value before it
        _add_global_flags(subparser, environ, suppress=True)
    return parser


def fail(message: object, code: int) -> int:
    """Print `message` as one line on stderr (its lines joined); return `code`."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"error: {text or type(message).__name__}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (0 ok, 1 nothing done / file system error, 2 bad input)."""
    settings.apply_privacy_env()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        vars(args).update(settings.read_flags(args, settings.COMMON))
        return int(args.func(args) or 0)
    except StoreUnreachableError as error:  # the Chroma server went away: nothing was lost
        return fail(error, 3)
    except FreeRetError as error:  # settings.ConfigError included
        return fail(error, 2)
    except OSError as error:
        return fail(error, 1)
    except KeyboardInterrupt:
        return fail("interrupted; what was embedded is kept: the same command continues from there", 130)
