"""Several app processes (replicas) on one Chroma server: a change log, so that what one of them adds
or deletes is seen by the others within a second, without a restart.

Each process keeps a view of the complete documents in memory (the lexical indexes and the catalog
of documents, see store.Store), loaded at opening. With a Chroma server, every change of the set of
complete documents (a commit, a delete, a relocation) also adds one record to a small collection
beside the index, `freeretlog-<digest>`: which documents changed, when, and by which view. Records
are only ever added (never read-modified-written), so two replicas writing at once lose nothing.

A reader (`ChangeLog.changes`) asks for the records of the last `MARGIN_S` seconds before its
previous look (one small `get`), skips those it has already seen and its own, and the store re-reads
just those documents from Chroma (store.Store.sync): the result does not depend on the order of the
records, since what is re-read is what Chroma holds now. A reader that did not look for longer than
the log keeps records (`KEEP_S`) is told so (None) and reloads everything.

Clocks: a record's time is its writer's; readers on other hosts need clocks within `MARGIN_S` of it
(NTP). Not used for an embedded index: processes on one data folder see each other's writes through
the writer lock's change file (locking.py).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from typing import Any, Iterable

LOG_PREFIX = "freeretlog-"  # not "freeret-": store.list_indexes must not take it for an index
MARGIN_S = 10.0  # records written up to this long before a reader's previous look are read again
KEEP_S = 3600.0  # records older than this are deleted by writers
SYNC_EVERY_S = 0.5  # a replica asks the server at most this often (Library.refresh)


def log_name(index_name: str) -> str:
    """The change log's collection name for an index (3-63 characters, like Chroma wants)."""
    return f"{LOG_PREFIX}{hashlib.sha256(index_name.encode()).hexdigest()[:16]}"


class ChangeLog:
    """The change log of one index on a Chroma server, as seen by one view of it (`by`)."""

    def __init__(self, client: Any, index_name: str, now: float | None = None) -> None:
        self.client, self.index_name = client, index_name
        self._collection: Any = None  # created by the first writer: opening and reading write nothing
        self.by = uuid.uuid4().hex  # this view: its own records are not re-read
        self._lock = threading.Lock()
        #: The reader's previous look (its own clock); records from MARGIN_S before it on are read.
        self.looked = time.time() if now is None else now
        self._seen: dict[str, float] = {}  # record id -> its time, for records within the margin

    def record(self, doc_ids: Iterable[str], now: float | None = None) -> None:
        """Say that these documents changed (after the change is in Chroma). Also drops old records."""
        doc_ids = sorted(set(doc_ids))
        if not doc_ids:
            return
        now = time.time() if now is None else now
        if self._collection is None:
            self._collection = self.client.get_or_create_collection(
                log_name(self.index_name), embedding_function=None, metadata={"index": self.index_name})
        self._collection.add(ids=[uuid.uuid4().hex], embeddings=[[1.0]],  # Chroma wants a vector
                            metadatas=[{"at": now, "by": self.by, "docs": json.dumps(doc_ids)}])
        self._collection.delete(where={"at": {"$lt": now - KEEP_S}})

    def changes(self, now: float | None = None) -> set[str] | None:
        """The documents that other views changed since this one's previous look (one request), or
        None when that look is too old for the log (a full reload is needed)."""
        now = time.time() if now is None else now
        with self._lock:
            since = self.looked - MARGIN_S
            if now - since > KEEP_S:
                self.looked, self._seen = now, {}
                return None
            if self._collection is None:
                from chromadb.errors import NotFoundError

                try:
                    self._collection = self.client.get_collection(log_name(self.index_name), embedding_function=None)
                except NotFoundError:  # nobody wrote since the log exists: nothing to re-read
                    self.looked = now
                    return set()
            page = self._collection.get(where={"at": {"$gte": since}}, include=["metadatas"])
            changed: set[str] = set()
            for record_id, meta in zip(page["ids"], page["metadatas"] or []):
                if record_id in self._seen:
                    continue
                self._seen[record_id] = float(meta["at"])
                if meta.get("by") != self.by:
                    changed.update(json.loads(meta["docs"]))
            self.looked = now
            self._seen = {key: at for key, at in self._seen.items() if at >= now - MARGIN_S}
            return changed
