"""`python -m freeret_rag eval DATASET_DIR --model M [ablation switches]` (registered by freeret_rag.cli).

DATASET_DIR is any BEIR-layout folder, e.g. the sets in the repository's assets/eval (they are not
part of the installed package). Prints a table (Recall@1/5/10, MRR@10, nDCG@10 and latency per
stage) and writes the full report as JSON (`--output`, default `eval-<dataset>-<model>.json` in the
current folder). The shared flags (--model, --device, --dtype, ...) are added by freeret_rag.cli.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from .. import settings
from ..embed import EMBED_POINTS
from ..errors import FreeRetError
from ..prompts import RERANK_LABELS
from .baselines import BASELINES


def default_output(dataset: Path, model: str) -> Path:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", Path(model.rstrip("/")).name).strip("-") or "model"
    return Path(f"eval-{dataset.resolve().name}-{slug}.json")


def cmd_eval(args: argparse.Namespace) -> int:
    from ..engine import FreeRet
    from .datasets import load_beir
    from .runner import EvalConfig, evaluate_engine, format_report

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    if not args.dataset.is_dir():
        raise FreeRetError(f"no such dataset folder: {args.dataset}")
    try:
        dataset = load_beir(args.dataset)
    except FileNotFoundError as error:  # its message names the missing file
        raise FreeRetError(str(error)) from error
    except (OSError, ValueError) as error:  # unreadable, a malformed record, qrels naming unknown ids
        raise FreeRetError(f"cannot read the dataset in {args.dataset}: {error}") from error
    model = args.model or settings.default_model()
    log(f"loading {model} ...")
    started = time.perf_counter()
    engine = FreeRet.from_pretrained(model, device=args.device, dtype=args.dtype,
                                     visual_budget=getattr(args, "visual_budget", "auto"), embed_point=args.embed_point,
                                     priors=args.priors, rerank_framing=args.rerank_framing,
                                     rerank_swap=args.rerank_swap, batch_size=args.batch_size)
    load_s = time.perf_counter() - started
    config = EvalConfig(rerank_k=args.rerank_k, depth=args.depth, check_queries=args.check_queries,
                        baselines=tuple(args.baselines or ()), limit=args.limit, batch_size=args.batch_size,
                        dense=args.dense, words=args.words, cache=str(args.cache) if args.cache else None)
    report = evaluate_engine(engine, dataset, config, log=log)
    report["model"]["load_s"] = load_s
    output = args.output or default_output(args.dataset, model)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(format_report(report))
    print(f"report written to {output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` subcommand (its handler is `args.func`)."""
    parser = subparsers.add_parser(
        "eval", help="retrieval quality per stage on a BEIR-layout dataset (temporary index)",
        description="Index DATASET_DIR (corpus.jsonl, queries.jsonl, qrels/test.tsv) into a temporary store and "
                    "report Recall@1/5/10, MRR@10 and nDCG@10 for lexical, dense, fused and reranked retrieval.")
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR")
    ablation = parser.add_argument_group("ablations")
    ablation.add_argument("--embed-point", choices=EMBED_POINTS, default="attn",
                          help="attn: last layer's attention output (the method); final: last hidden state; "
                               "mean: mean pooling (default: attn)")
    ablation.add_argument("--no-priors", dest="priors", action="store_false",
                          help="E5-V's one-word summary prompt instead of the explicit priors")
    ablation.add_argument("--rerank-framing", choices=tuple(RERANK_LABELS), default="choice",
                          help="choice: neutral A/B options (the method); yesno: Yes/No question")
    ablation.add_argument("--rerank-swap", action="store_true", help="also score with the options swapped")
    ablation.add_argument("--rerank-k", type=int, default=settings.RERANK_K,
                          help=f"candidates reranked; 0 skips reranking (default: {settings.RERANK_K})")
    ablation.add_argument("--dense", choices=("model", "minilm"), default="model",
                          help="model: the loaded model's vectors; minilm: all-MiniLM-L6-v2's vectors as a strong "
                               "dense stand-in (eval only), to test the fusion and rerank gates against a good "
                               "dense ranker")
    ablation.add_argument("--no-words", dest="words", action="store_false",
                          help="leave out the model's own words (the third, keyword channel)")
    parser.add_argument("--cache", type=Path, help="keep the model's embeddings, test queries and rerank scores "
                                                   "in this file between runs")
    parser.add_argument("--check-queries", type=int, default=32,
                        help="test queries the self-check writes (default 32; each costs a short generation)")
    parser.add_argument("--depth", type=int, default=100, help="candidates per first-stage ranker (default 100)")
    parser.add_argument("--baselines", nargs="*", choices=BASELINES, help="also run these text baselines")
    parser.add_argument("--limit", type=int, help="only the first N judged queries")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", type=Path, help="JSON report path")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=cmd_eval)
