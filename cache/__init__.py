"""Embeddings and the pgvector explanation cache. Depends on nothing in llm_service."""
