"""OCR of page images (scanned pages without a text layer) with RapidOCR.

    text = read_text(image)    # PIL image -> the lines found, top to bottom, one per line

RapidOCR runs PP-OCR models with onnxruntime on the CPU; the models ship in its wheel, so nothing
is downloaded. The engine is created once, on first use (about 1 s), and shared by every thread
(calls are serialised: onnxruntime already uses every core for one page).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from freeret_rag.media.common import to_rgb

OCR_MODES = ("auto", "on", "off")  # auto: pages without a text layer; on: every page; off: none

_engine: Any = None
_lock = threading.Lock()


def _get_engine() -> Any:
    global _engine
    if _engine is None:
        from rapidocr import RapidOCR

        _engine = RapidOCR(params={"Global.log_level": "error"})
    return _engine


def read_text(image: Image.Image) -> str:
    """The text RapidOCR reads on `image`: its lines in reading order, newline-separated."""
    pixels = np.asarray(to_rgb(image))
    with _lock:
        result = _get_engine()(pixels)
    texts = result.txts or ()
    boxes = result.boxes if result.boxes is not None else [None] * len(texts)
    # Sorted top to bottom, left to right by RapidOCR. A "line" taller than a fifth of the page is
    # a picture or a rule misread (a red block gave one CJK character at 0.97 confidence): dropped.
    tallest = pixels.shape[0] / 5
    return "\n".join(text.strip() for text, box in zip(texts, boxes)
                     if text.strip() and (box is None or np.ptp(np.asarray(box)[:, 1]) <= tallest))
