"""SentencePiece encoding with a per-word cache (exactly `sp.encode`), and packing straight to numpy."""

from __future__ import annotations

import re
from itertools import chain

import numpy as np

_WORD_START = re.compile(r"(?<=[^ ])(?= )")


class WordCachedEncoder:
    """SentencePiece encoding with a per-word cache; gives exactly `sp.encode(text)`.

    Why exact: with identity normalisation, a dummy prefix and `allow_whitespace_only_pieces=True`
    (see tokenizer.py), SentencePiece cuts its input into words before every space that follows a
    non-space (a run of spaces stays with the word after it, so indentation gets pieces like "▁▁▁▁")
    and no piece crosses a cut. So encode(text) is the concatenation of the encodings of those words,
    where every word is encoded without its first space (the dummy prefix stands in for it; the
    first word gets a space prepended for that) and a lone trailing space is the "▁" piece. Natural
    text repeats its words, so most are cache hits; the misses of a chunk go to SentencePiece in one
    batch call. Tests compare against
    `sp.encode` on English, Chinese, code and odd whitespace.
    """

    MAX_WORD = 48  # longer "words" (e.g. Chinese runs without spaces) are encoded, not cached
    MAX_ENTRIES = 2_000_000

    def __init__(self, model_path: str) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=model_path)
        a = self.sp.encode("a")
        # Keys are words with their leading space; the lone space (trailing "▁") is the only one whose
        # encoding is not encode(key[1:]).
        self._space = self.sp.encode("a ")[len(a):]
        self.cache: dict[str, list[int]] = {" ": self._space}
        # encode_packed's cache: the same words, their tokens as bytes of one dtype
        self._packed: dict[str, bytes] = {}
        self._packed_dtype: np.dtype | None = None

    @staticmethod
    def words(text: str) -> list[str]:
        """The cache keys of a text: its SentencePiece words, each with one leading space. The first
        word gets one too, which is exactly what the dummy prefix does to it."""
        return _WORD_START.split(" " + text)

    def _fill(self, groups: list[list[str]]) -> list[str]:
        """Encode the words of `groups` that are not cached yet (one batch call); returns them."""
        misses = sorted({w for words in groups for w in words if w not in self.cache})
        if misses:
            encoded = self.sp.encode([w[1:] for w in misses], out_type=int, num_threads=1)
            self.cache.update(zip(misses, encoded, strict=True))
        return misses

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # Text with few spaces (Chinese, Japanese) has no reusable words: SentencePiece directly.
        direct = [i for i, t in enumerate(texts) if t.count(" ") * 12 < len(t)]
        out: list[list[int]] = [[] for _ in texts]
        if direct:
            for i, ids in zip(direct, self.sp.encode([texts[i] for i in direct], out_type=int, num_threads=1),
                              strict=True):
                out[i] = ids
        chosen = set(direct)
        cache = self.cache
        if len(cache) > self.MAX_ENTRIES:
            cache.clear()
            cache[" "] = self._space
        get = cache.get
        pending: list[tuple[int, list[str]]] = []
        # One pass that assumes every word is cached (the common case once warm); a document with a
        # miss is redone after the misses of the whole batch were encoded in one call.
        for i, text in enumerate(texts):
            if i in chosen or not text:
                continue
            words = self.words(text)
            acc: list[int] = []
            for w in words:
                ids = get(w)
                if ids is None:
                    pending.append((i, words))
                    break
                acc += ids
            else:
                out[i] = acc
        if pending:
            misses = self._fill([words for _, words in pending])
            for i, words in pending:
                acc = []
                for w in words:
                    acc += cache[w]
                out[i] = acc
            for w in misses:
                if len(w) > self.MAX_WORD:
                    del cache[w]
        return out


    def encode_packed(self, texts: list[str], dtype: np.dtype, eos: int) -> tuple[np.ndarray, np.ndarray]:
        """The same tokens as `encode_batch`, with `eos` after each text, as one array of `dtype`,
        plus each text's length (EOS included).

        Why a second path: building a Python list of ints per document and converting it to numpy
        cost more than the encoding itself. This one caches each word's tokens as the bytes of the
        shard dtype, so a document is one `b"".join` of cached bytes (memcpy, no int objects).
        """
        dtype = np.dtype(dtype)
        if dtype != self._packed_dtype or len(self._packed) > self.MAX_ENTRIES:
            self._packed = {" ": np.array(self._space, dtype).tobytes()}
            self._packed_dtype = dtype
        packed = self._packed
        # Text with few spaces (Chinese, Japanese) has no reusable words: SentencePiece directly.
        keys = [None if not t or t.count(" ") * 12 < len(t) else self.words(t) for t in texts]
        direct = [t for t, k in zip(texts, keys, strict=True) if k is None]
        misses = list(set(chain.from_iterable(k for k in keys if k is not None)).difference(packed))
        if misses:
            encoded = self.sp.encode([w[1:] for w in misses], out_type=int, num_threads=1)
            packed.update(zip(misses, (np.array(ids, dtype).tobytes() for ids in encoded), strict=True))
        whole = iter([np.array(ids, dtype).tobytes() for ids in self.sp.encode(direct, out_type=int, num_threads=1)]
                     if direct else [])
        join, get = b"".join, packed.__getitem__
        docs = [next(whole) if k is None else join(map(get, k)) for k in keys]
        for w in misses:
            if len(w) > self.MAX_WORD:
                del packed[w]
        eos_bytes = np.array([eos], dtype).tobytes()
        out = np.frombuffer(bytearray(eos_bytes.join(docs) + eos_bytes), dtype=dtype)
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs)) // dtype.itemsize + 1
        return out, lengths
