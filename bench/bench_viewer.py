"""How long the citation viewer takes to show a PDF page (prints figures).

For every page of a real PDF (default: the shared-mime-info specification in tests/data/samples):
the full-size page picture rendered the first time (highlight.page_picture at 144 dpi), the same
call again (the cached file), and the boxes of a question's words (highlight.page_boxes). The
viewer does one picture and one box search per click.

    python bench/bench_viewer.py [--pdf FILE] [--question "..."]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from freeret_rag.highlight import page_boxes, page_picture, question_words  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdf", default=str(REPO / "tests" / "data" / "samples" / "shared-mime-info-spec.pdf"))
    parser.add_argument("--question", default="How are glob patterns and magic rules used to find a MIME type?")
    args = parser.parse_args()
    import pymupdf

    with pymupdf.open(args.pdf) as doc:
        pages = doc.page_count
    words = question_words(args.question)
    first, again, boxes, found, sizes = [], [], [], 0, []
    with tempfile.TemporaryDirectory() as folder:
        for page in range(1, pages + 1):
            start = time.perf_counter()
            picture = page_picture(args.pdf, page, folder)
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            page_picture(args.pdf, page, folder)
            again.append(time.perf_counter() - start)
            start = time.perf_counter()
            found += len(page_boxes(args.pdf, page, words))
            boxes.append(time.perf_counter() - start)
            sizes.append(picture.stat().st_size)

    def ms(values):
        return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"

    print(f"{Path(args.pdf).name}: {pages} pages; words {words}; {found} boxes in all")
    print(f"page picture, first time: {ms(first)}; PNG median {statistics.median(sizes) / 1024:.0f} KB")
    print(f"page picture, cached:     {ms(again)}")
    print(f"boxes of the words:       {ms(boxes)}")
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
