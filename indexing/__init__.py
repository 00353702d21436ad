"""FAISS indexes of embeddings with their metadata."""
