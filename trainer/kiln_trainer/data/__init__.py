"""Data preparation: sources → clean → filter → dedup → SentencePiece BPE → packed shards (see prepare.py)."""
