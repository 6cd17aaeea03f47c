"""One module per format of dirt that real text brings into a corpus; `clean.py` runs them in order.

Each module exposes ``looks_like(text) -> bool`` (a cheap test, so documents without that format
pay almost nothing) and ``strip(text) -> str``.
"""
