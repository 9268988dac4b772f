"""Retrieval: RecBole catalog loading, sentence embeddings, the Chroma item index, and retrievers.

Modules (imported explicitly; this package imports nothing heavy on its own):
`catalog` (Dataset), `datasets` (load_dataset), `embedder` (SentenceEmbedder), `index` (CatalogIndex),
`retrievers` (Popularity/Embedding/Cooccurrence/Hybrid retrievers).
"""
