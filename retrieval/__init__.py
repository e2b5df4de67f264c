"""Adaptive-length retrieval benchmarks on arrays (FAISS). Not built yet; it never imports eigenmap."""
