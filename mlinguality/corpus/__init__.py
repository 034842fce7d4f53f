"""Stage 2: parallel corpora (to be filled by the corpus issue)."""
