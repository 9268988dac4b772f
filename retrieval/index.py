"""The catalog's item embeddings in a Chroma collection, one per (dataset source, embedder).

A collection is bound to one catalog. Its name carries a key hashed from the dataset's *source*
(a built-in's name, or the resolved folder of a user's dataset, never the folder's bare name) and
the embedder's identity (model folder name, config and file sizes), so two datasets that share a
name never share a collection. The collection's metadata records the source (checked on open),
the embedder and the catalog's content fingerprint (item ids + document text).

Building is idempotent: each item's document text is hashed into its metadata, and a rebuild
embeds only new or changed items (precomputed vectors, batched) and deletes items that left
the catalog; when the fingerprint matches, nothing is read or written. Editing a folder's files
updates its collection in place; moving the folder makes a new one (old ones are left in Chroma).
Queries over-fetch and drop excluded ids in Python, because a Chroma `where` filter made queries
about 2x slower here (see ENVIRONMENT.md); after a build they also drop ids outside the catalog.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from llmrec.errors import ChromaUnavailable, DatasetError
from llmrec.retrieval.embedder import SentenceEmbedder
from llmrec.schemas import Item


class IndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    chroma_url: str | None = Field(
        default=None, description="Chroma server (http://host:port); embedded PersistentClient under home/chroma when None."
    )
    batch_size: int = Field(default=256, ge=1, description="Items embedded and upserted per batch.")


@dataclass(frozen=True)
class BuildCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0


def item_document(item: Item) -> str:
    """The text that is embedded: 'Title (year). Genres: a, b.', then each attribute: 'Author: X. Publisher: Y.'
    (an item without attributes, e.g. every MovieLens movie, keeps exactly the text it had before attributes)."""
    text = item.label().rstrip(".") + "."
    text = f"{text} Genres: {', '.join(item.genres)}." if item.genres else text
    return " ".join([text, *(f"{name.capitalize()}: {value.rstrip('.')}." for name, value in item.attributes)])


def item_metadata(item: Item, document: str) -> dict[str, Any]:
    return {
        "title": item.title,
        "year": item.year if item.year is not None else -1,
        "genres": "|" + "|".join(item.genres) + "|",  # "|a|b|": a `$contains "|a|"` filter matches one genre exactly
        "doc_hash": hashlib.sha256(document.encode()).hexdigest()[:32],
    }


def collection_name(dataset: str, embedder_id: str, key: str) -> str:
    """A valid Chroma name (3-512 chars of [a-zA-Z0-9._-], alphanumeric at both ends) that ends with `key`."""
    raw = f"llmrec-{dataset}-{embedder_id}".lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", raw)
    name = re.sub(r"\.{2,}", ".", re.sub(r"-{2,}", "-", name))
    return f"{name[: 500 - len(key)].strip('-._')}-{key}"


def embedder_identity(embedder: SentenceEmbedder) -> str:
    """What makes two embedders give the same vectors: the model folder's name, config.json, file sizes and max length."""
    folder = Path(embedder.config.model_dir)
    digest = hashlib.sha256(f"{embedder.model_id}|{embedder.config.max_length}".encode())
    if (folder / "config.json").is_file():
        digest.update((folder / "config.json").read_bytes())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"|{path.relative_to(folder)}:{path.stat().st_size}".encode())
    return f"{embedder.model_id}:{digest.hexdigest()[:16]}"


def catalog_fingerprint(doc_hashes: dict[str, str]) -> str:
    """The content of a catalog as embedded: every item id with the hash of its document text."""
    digest = hashlib.sha256()
    for item_id in sorted(doc_hashes):
        digest.update(f"{item_id}\t{doc_hashes[item_id]}\n".encode())
    return digest.hexdigest()[:32]


def connect(chroma_url: str | None, home: Path) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url is None:
        (home / "chroma").mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(home / "chroma"), settings=settings)
    url = urlparse(chroma_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ChromaUnavailable(f"Chroma URL {chroma_url!r} is not http(s)://host:port")
    try:
        client = chromadb.HttpClient(host=url.hostname, port=url.port or (443 if url.scheme == "https" else 8000),
                                     ssl=url.scheme == "https", settings=settings)
        client.heartbeat()
    except Exception as exc:  # chromadb raises ValueError or httpx errors for an unreachable server
        raise ChromaUnavailable(f"cannot reach Chroma at {chroma_url}: {exc}") from None
    return client


class CatalogIndex:
    """Item vectors for one dataset source and one embedder; nothing is opened until first use.

    `source` is `Dataset.source` (a built-in's name or a resolved folder); it defaults to `dataset`,
    which is right for built-ins only.
    """

    def __init__(self, dataset: str, embedder: SentenceEmbedder, home: Path, config: IndexConfig | None = None,
                 *, source: str | None = None) -> None:
        self.config = config or IndexConfig()
        self.embedder = embedder
        self.home = home
        self.source = source or dataset
        self.embedder_id = embedder_identity(embedder)
        key = hashlib.sha256(f"{self.source}\n{self.embedder_id}".encode()).hexdigest()[:12]
        self.name = collection_name(dataset, embedder.model_id, key)
        self._collection: Any = None
        self._vectors: dict[str, np.ndarray] = {}
        self._count: int | None = None
        self._catalog: frozenset[str] | None = None  # the item ids of the last build; queries return no others

    @property
    def collection(self) -> Any:
        if self._collection is None:
            client = connect(self.config.chroma_url, self.home)
            collection = self._call(client.get_or_create_collection, name=self.name, embedding_function=self.embedder,
                                    configuration={"hnsw": {"space": "cosine"}}, metadata=self._metadata(""))
            stored = (collection.metadata or {}).get("llmrec_source", self.source)
            if stored != self.source:
                raise DatasetError(f"Chroma collection {self.name} belongs to dataset source {stored!r}, not {self.source!r}")
            self._collection = collection
        return self._collection

    def _metadata(self, fingerprint: str) -> dict[str, str]:
        return {"llmrec_source": self.source, "llmrec_embedder": self.embedder_id, "llmrec_fingerprint": fingerprint}

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import httpx

        try:
            return fn(*args, **kwargs)
        except (httpx.TransportError, ConnectionError) as exc:
            raise ChromaUnavailable(f"Chroma at {self.config.chroma_url or self.home / 'chroma'} failed: {exc}") from None

    def count(self) -> int:
        """Items in the collection (cached between builds)."""
        if self._count is None:
            self._count = int(self._call(self.collection.count))
        return self._count

    def _stored_hashes(self) -> dict[str, str]:
        hashes: dict[str, str] = {}
        page = 5000
        for offset in range(0, self.count(), page):
            got = self._call(self.collection.get, include=["metadatas"], limit=page, offset=offset)
            hashes.update({i: (m or {}).get("doc_hash", "") for i, m in zip(got["ids"], got["metadatas"])})
        return hashes

    def build(self, items: Iterable[Item], progress: bool = True) -> BuildCounts:
        """Embed and upsert new or changed items, delete items no longer in the catalog."""
        self._count = None
        docs: dict[str, tuple[str, dict[str, Any]]] = {}
        for item in items:
            doc = item_document(item)
            docs[item.item_id] = (doc, item_metadata(item, doc))
        fingerprint = catalog_fingerprint({item_id: meta["doc_hash"] for item_id, (_, meta) in docs.items()})
        self._catalog = frozenset(docs)
        if (self.collection.metadata or {}).get("llmrec_fingerprint") == fingerprint and self.count() == len(docs):
            return BuildCounts(unchanged=len(docs))
        stored = self._stored_hashes()
        pending = [(item_id, doc, meta) for item_id, (doc, meta) in docs.items() if stored.get(item_id) != meta["doc_hash"]]
        unchanged = len(docs) - len(pending)
        removed = [item_id for item_id in stored if item_id not in docs]
        if pending or removed:
            self._call(self.collection.modify, metadata=self._metadata(""))  # a build cut short is never taken as complete
        for start in range(0, len(removed), 5000):
            self._call(self.collection.delete, ids=removed[start : start + 5000])
        size = self.config.batch_size
        with tqdm(total=len(pending), desc=f"embedding {self.name}", unit="item", disable=not progress or not pending) as bar:
            for start in range(0, len(pending), size):
                batch = pending[start : start + size]
                vectors = self.embedder.encode([doc for _, doc, _ in batch])
                self._call(self.collection.upsert, ids=[i for i, _, _ in batch], embeddings=vectors,
                           documents=[d for _, d, _ in batch], metadatas=[m for _, _, m in batch])
                bar.update(len(batch))
        self._vectors.clear()
        self._count = None
        self._call(self.collection.modify, metadata=self._metadata(fingerprint))
        added = sum(1 for item_id, _, _ in pending if item_id not in stored)
        return BuildCounts(added=added, updated=len(pending) - added, unchanged=unchanged, removed=len(removed))

    def similar(self, query: str | Sequence[float] | np.ndarray, n: int, exclude_ids: Iterable[str] = ()) -> list[tuple[str, float]]:
        """Up to `n` (item_id, cosine distance) pairs nearest to a text or vector, excluded ids removed."""
        exclude = set(exclude_ids)
        total = self.count()
        if n <= 0 or total == 0:
            return []
        vector = self.embedder.encode([query])[0] if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        fetch = min(total, n + len(exclude))
        got = self._call(self.collection.query, query_embeddings=[vector], n_results=fetch, include=["distances"])
        known = self._catalog
        pairs = [(i, float(d)) for i, d in zip(got["ids"][0], got["distances"][0])
                 if i not in exclude and (known is None or i in known)]
        return pairs[:n]

    def embeddings_for(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the given items (cached after the first read); unknown ids are absent."""
        missing = [i for i in dict.fromkeys(item_ids) if i not in self._vectors]
        if missing:
            got = self._call(self.collection.get, ids=missing, include=["embeddings"])
            for item_id, vector in zip(got["ids"], got["embeddings"]):
                self._vectors[item_id] = np.asarray(vector, dtype=np.float32)
        return {i: self._vectors[i] for i in item_ids if i in self._vectors}
