"""Replicas on one Chroma server: what keeping a replica's in-memory view up to date costs.

    python bench/bench_replicas.py                      # 1k and 10k items, figures to stdout
    python bench/bench_replicas.py --out bench/figures/replicas-loopback-cpu.txt

Starts `chroma run` on a loopback port in a temporary folder, writes N complete items (documents
of 10 items, random unit vectors of 576 dims, 40-word texts) straight into Chroma, then opens two
views of that index, as two replicas would (each with its own HttpClient and change log reader):

- open: a view reading every item back (what a replica's start, or a reload, costs);
- check, nothing changed: `Store.sync()` when no other view wrote (the request Library.refresh
  makes at most every 0.5 s instead of its heartbeat), and the heartbeat itself, for comparison;
- check after a change: the writer commits a new 10-item document (or deletes one); the time of the
  reader's next `sync()`, which re-reads that document only, and that it then finds (or not) it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from freeret_rag.items import Item  # noqa: E402
from freeret_rag.store import Store, collection_name, connect  # noqa: E402

DOC_ITEMS = 10
WORDS = [f"w{i}" for i in range(5000)]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    cli = Path(sys.executable).parent / "chroma"
    cli = str(cli) if cli.exists() else shutil.which("chroma")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([cli, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder.parent)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            connect(folder, url).heartbeat()
            return server, url
        except Exception:
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("chroma server did not start")
            time.sleep(0.2)


def items_of(doc: str, start: int, rng: np.random.Generator) -> list[Item]:
    return [Item(kind="text", text=" ".join(rng.choice(WORDS, 40)), item_id=f"{doc}:{i}", doc_id=doc,
                 source=f"{doc}.txt", chunk=i) for i in range(DOC_ITEMS)]


def fill(collection, model_id: str, n: int, dim: int, rng: np.random.Generator) -> None:
    """n complete items, as Store.put + Store.commit leave them, written in batches."""
    for start in range(0, n, 2000):
        ids, metas, texts = [], [], []
        for d in range(start // DOC_ITEMS, min(n, start + 2000) // DOC_ITEMS):
            for item in items_of(f"doc{d:06d}", 0, rng):
                ids.append(item.item_id)
                texts.append(item.text)
                metas.append({**item.to_metadata(), "content_hash": "0" * 64, "path": f"/bench/{item.source}",
                              "file_type": "text", "model_id": model_id, "prompt_version": "p1",
                              "added_at": 1.0, "complete": True, "n_items": DOC_ITEMS})
        vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
        collection.upsert(ids=ids, embeddings=vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                          metadatas=metas, documents=texts)


def ms(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=20, method="inclusive") if len(samples) > 1 else samples * 19
    return f"p50 {statistics.median(samples) * 1000:7.2f} ms   p95 {cuts[18] * 1000:7.2f} ms   ({len(samples)} runs)"


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def run(sizes: list[int], dim: int, checks: int, changes: int) -> list[str]:
    lines = [f"bench_replicas: one `chroma run` on loopback, two views (replicas) of one index; {dim} dims, "
             f"documents of {DOC_ITEMS} items", f"uptime at start: {uptime()}", f"cpus: {os.cpu_count()}"]
    with tempfile.TemporaryDirectory(prefix="freeret-replicas-") as scratch:
        server, url = start_server(Path(scratch) / "server")
        try:
            for n in sizes:
                model_id = f"bench/replicas-{n}"
                rng = np.random.default_rng(n)
                writer = Store(connect(Path(scratch), url), model_id, "p1", changelog=True)
                built, _ = timed(lambda: fill(writer.collection, model_id, n, dim, rng))
                opened, reader = timed(lambda: Store(connect(Path(scratch), url), model_id, "p1", changelog=True))
                assert len(reader) == n, (len(reader), n)
                lines.append(f"\n{n} items (written in {built:.1f} s)")
                lines.append(f"  open a view (read every item back)        {opened * 1000:9.1f} ms")
                reader.sync()
                quiet = [timed(reader.sync)[0] for _ in range(checks)]
                lines.append(f"  check, nothing changed (Store.sync)       {ms(quiet)}")
                beats = [timed(reader.client.heartbeat)[0] for _ in range(checks)]
                lines.append(f"  heartbeat, for comparison                 {ms(beats)}")
                added, deleted = [], []
                for k in range(changes):
                    doc = f"new{n}-{k:03d}"
                    items = items_of(doc, 0, rng)
                    vectors = rng.standard_normal((DOC_ITEMS, dim)).astype(np.float32)
                    writer.put(items, vectors, {"content_hash": "1" * 64, "path": f"/bench/{doc}.txt",
                                                "file_type": "text", "added_at": 2.0})
                    writer.commit(doc)
                    seconds, changed = timed(reader.sync)
                    assert changed == {doc} and reader.document(doc) is not None, changed
                    assert reader.lexical.search(items[0].text, 1)[0][0].startswith(doc)
                    added.append(seconds)
                    writer.delete([doc])
                    seconds, changed = timed(reader.sync)
                    assert changed == {doc} and reader.document(doc) is None and len(reader) == n
                    deleted.append(seconds)
                lines.append(f"  check after another view added 10 items   {ms(added)}")
                lines.append(f"  check after another view deleted them     {ms(deleted)}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    lines.append(f"\nuptime at end: {uptime()}")
    lines.append("A replica looks at most every 0.5 s (replicas.SYNC_EVERY_S), on its next search or listing, so a "
                 "change is visible in another replica within 0.5 s plus one check.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--checks", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = run(args.sizes, args.dim, args.checks, args.changes)
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
