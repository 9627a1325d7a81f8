"""OCR benchmark: keyword search on a scanned copy of a real PDF, with and without OCR.

    python bench/bench_ocr.py                       # tests/data/samples/shared-mime-info-spec.pdf
    python bench/bench_ocr.py --pdf paper.pdf --dpi 200 --words 5

The PDF's pages are rendered to images (--dpi) and rebuilt as an image-only PDF (devtools/scans.py).
Each page's distinctive words are the words of its original text layer that occur on no other
page (at least 5 letters, up to --words of them, longest first). A page counts as found when the
keyword index (the library's BM25 over file name and item text) ranks it first for a query made of
its distinctive words. Printed for the original PDF (its text layer), the scan with --ocr off and
the scan with --ocr auto, with the share of distinctive words present in each page's text and
the OCR time per page. No model is loaded: keyword search does not need one.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from freeret_rag.devtools.scans import scanned_copy  # noqa: E402
from freeret_rag.items import Item  # noqa: E402
from freeret_rag.media import MediaSettings, load_items  # noqa: E402
from freeret_rag.media import ocr as ocr_module  # noqa: E402
from freeret_rag.store import LexicalIndex, lexical_text  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "samples" / "shared-mime-info-spec.pdf"


def page_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{5,}", text.lower()))


def distinctive(pages: list[str], keep: int) -> list[list[str]]:
    """Per page: up to `keep` of its words that no other page has, longest first (then a-z)."""
    sets = [page_words(text) for text in pages]
    seen_on = Counter(word for words in sets for word in words)
    return [sorted((w for w in words if seen_on[w] == 1), key=lambda w: (-len(w), w))[:keep] for words in sets]


def found_share(items: list[Item], queries: list[list[str]]) -> tuple[int, int, float]:
    """(pages ranked first for their own words, pages with a query, share of query words in the page text)."""
    index = LexicalIndex()
    index.add((item.item_id, lexical_text(item.source, item.text), item.kind, item.doc_id) for item in items)
    found = asked = words_in = words_all = 0
    for item, words in zip(items, queries):
        if not words:
            continue
        asked += 1
        ranked = index.search(" ".join(words), 1)
        found += bool(ranked) and ranked[0][0] == item.item_id
        text = page_words(item.text)
        words_in += sum(word in text for word in words)
        words_all += len(words)
    return found, asked, words_in / max(words_all, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf", type=Path, default=SAMPLE)
    parser.add_argument("--dpi", type=int, default=150, help="scan resolution (default: 150)")
    parser.add_argument("--words", type=int, default=5, help="distinctive words per page (default: 5)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        scan = scanned_copy(args.pdf, work / f"scanned-{args.pdf.name}", dpi=args.dpi)
        original = list(load_items(args.pdf, "original", work / "a", settings=MediaSettings(ocr="off")))
        queries = distinctive([item.text for item in original], args.words)

        started = time.perf_counter()
        without = list(load_items(scan, "scan", work / "b", settings=MediaSettings(ocr="off")))
        seconds_off = time.perf_counter() - started
        ocr_module.read_text(original[0].open_images()[0])  # load the OCR models outside the timing
        ocr_seconds: list[float] = []
        read_text = ocr_module.read_text

        def timed(image):
            begun = time.perf_counter()
            try:
                return read_text(image)
            finally:
                ocr_seconds.append(time.perf_counter() - begun)

        ocr_module.read_text = timed  # pdf.py looks it up at each page
        started = time.perf_counter()
        with_ocr = list(load_items(scan, "scan", work / "c", settings=MediaSettings(ocr="auto")))
        seconds_auto = time.perf_counter() - started
        ocr_module.read_text = read_text

    pages = len(original)
    print(f"{args.pdf.name}: {pages} pages, scanned at {args.dpi} dpi; pages rendered for the model and OCR at "
          f"{MediaSettings().pdf_max_side} px on the long side; {args.words} distinctive words per page")
    print(f"pages without a text layer in the scan: {sum(item.no_text_layer for item in with_ocr)} of {len(with_ocr)}")
    for label, items in (("original PDF (text layer)", original), ("scan, --ocr off", without),
                         ("scan, --ocr auto", with_ocr)):
        found, asked, share = found_share(items, queries)
        print(f"  {label:<26} page ranked 1st for its words: {found}/{asked} ({found / max(asked, 1):.0%}); "
              f"distinctive words in the page text: {share:.0%}")
    mean = sum(ocr_seconds) / max(len(ocr_seconds), 1)
    print(f"OCR: {len(ocr_seconds)} pages, {mean:.2f} s per page (min {min(ocr_seconds):.2f}, "
          f"max {max(ocr_seconds):.2f}); loading the scan took {seconds_off:.1f} s without OCR, {seconds_auto:.1f} s with")
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
