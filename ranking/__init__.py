"""Rankers, one module per objective (`listwise`, `pointwise`, `sequence`, `embedding`), all fused with the retriever's rank (`fusion`)."""
