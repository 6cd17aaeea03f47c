from __future__ import annotations

import random
from pathlib import Path

import pytest
from kiln_api.data_config import CleanSpec, DataSpecError, TokenizerSpec
from kiln_trainer.data import tinycorpus
from kiln_trainer.data.clean import clean_text
from kiln_trainer.data.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID, UNK_ID, load, train_tokenizer


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tok")
    rng = random.Random(2)
    lines = [tinycorpus.paragraph(rng, lang) for lang in ("en", "zh") for _ in range(300)]
    (d / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = train_tokenizer(d / "lines.txt", d / "tok", TokenizerSpec(vocab_size=800), num_threads=2)
    assert info.vocab_size == 800 and len(info.sha256) == 64
    return d / "tok.model"


def test_special_ids(model: Path) -> None:
    sp = load(model)
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    assert sp.piece_to_id("<mask>") == MASK_ID
    assert sp.encode("<mask>") [-1] == MASK_ID  # never split


@pytest.mark.parametrize(
    "raw",
    [
        "Anna met 小明 at the harbour; 他们一起去了图书馆。 Then they counted 12,345 steps!",
        "龘靐齉 are rare characters, 🙂 is an emoji, and ＡＢＣ becomes ABC.",
        "Line one\nline two\n\n第三行：你好，世界！",
    ],
)
def test_round_trip_mixed_text_without_unk(model: Path, raw: str) -> None:
    sp = load(model)
    x = clean_text(raw, CleanSpec())
    ids = sp.encode(x)
    assert UNK_ID not in ids
    assert sp.decode(ids) == x


def test_vocab_larger_than_corpus_supports(tmp_path: Path) -> None:
    (tmp_path / "lines.txt").write_text("a tiny corpus\n小小的语料\n" * 20, encoding="utf-8")
    with pytest.raises(DataSpecError, match=r"^data\.tokenizer\.vocab_size: 5000 is larger than the corpus supports"):
        train_tokenizer(tmp_path / "lines.txt", tmp_path / "tok", TokenizerSpec(vocab_size=5000), num_threads=1)


def test_word_cached_encoder_equals_sentencepiece(model: Path) -> None:
    from kiln_trainer.data.pack import WordCachedEncoder

    sp = load(model)
    enc = WordCachedEncoder(str(model))
    rng = random.Random(9)
    texts = [tinycorpus.paragraph(rng, lang) for lang in ("en", "zh") for _ in range(50)]
    texts += ["", " ", "  leading", "trailing  ", "a  b   c", "x    = 1\n    y = 2", "数字123和abc混合 text",
              "tab\tand\nnewline", "龘" * 60 + " long", "🙂 emoji  twice 🙂", "a ", "a\n ", " \n a", "    ",
              "def f(x):\n    if x:\n        return  x \n", "end with two  "]
    for _ in range(2):  # second round: all from the cache
        assert enc.encode_batch(texts) == [sp.encode(t) for t in texts]


def test_word_cached_encoder_on_indented_code(tmp_path: Path) -> None:
    """Runs of spaces become pieces ("▁▁▁▁"); the cache must cut words exactly where SentencePiece does."""
    from kiln_trainer.data.pack import WordCachedEncoder

    rng = random.Random(4)
    names = ["value", "count", "items", "result", "total", "name", "index"]

    def snippet() -> str:
        a, b = rng.sample(names, 2)
        depth = " " * rng.choice([4, 8, 12])
        return (f"def {a}_{b}({a}, {b}):\n{depth}if {a} > {rng.randint(0, 99)}:\n{depth}    return {b}  # {a}\n"
                f"{depth}{a} = [{b} for {b} in {a}]   \n")

    lines = [ln for _ in range(400) for ln in snippet().split("\n") if ln.strip()]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_tokenizer(tmp_path / "lines.txt", tmp_path / "code", TokenizerSpec(vocab_size=400), num_threads=1)
    sp = load(tmp_path / "code.model")
    assert any(set(sp.id_to_piece(i)) == {"▁"} and len(sp.id_to_piece(i)) >= 4 for i in range(sp.get_piece_size()))
    texts = [snippet() for _ in range(50)] + ["  starts indented", "x" + " " * 9 + "y", "tail   ", "  "]
    enc = WordCachedEncoder(str(tmp_path / "code.model"))
    for _ in range(2):
        assert enc.encode_batch(texts) == [sp.encode(t) for t in texts]


def test_vocab_too_small_for_the_characters_says_so(tmp_path):
    from kiln_api.data_config import TokenizerSpec
    from kiln_trainer.data.tokenizer import train_tokenizer

    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(["甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥 天地玄黄宇宙洪荒"] * 40), encoding="utf-8")
    with pytest.raises(DataSpecError, match=r"vocab_size: 20 is too small for the \d+ characters"):
        train_tokenizer(lines, tmp_path / "tok", TokenizerSpec(vocab_size=20, character_coverage=1.0))


def test_encode_all_pool_equals_in_process(model: Path) -> None:
    import numpy as np
    from kiln_trainer.data.pack import encode_all

    rng = random.Random(12)
    texts = [tinycorpus.paragraph(rng, lang) for lang in ("en", "zh", "en") for _ in range(150)]
    serial = list(encode_all(texts, model, 1, "uint16", chunk=16))
    pooled = list(encode_all(iter(texts), model, 3, "uint16", chunk=16))  # a pool of 2, order kept
    assert len(serial) == len(pooled) == len(texts)
    assert all(np.array_equal(a, b) for a, b in zip(serial, pooled, strict=True))
    sp = load(model)
    assert serial[200].tolist() == sp.encode(texts[200]) + [EOS_ID] and serial[200].dtype == np.uint16


def test_encode_packed_equals_sentencepiece_with_eos(model: Path) -> None:
    """The packed path (word tokens cached as bytes of the shard dtype) gives sp.encode + EOS per text."""
    import numpy as np
    from kiln_trainer.data.pack import WordCachedEncoder

    sp = load(model)
    enc = WordCachedEncoder(str(model))
    rng = random.Random(3)
    texts = [tinycorpus.paragraph(rng, lang) for lang in ("en", "zh") for _ in range(30)]
    texts += ["", " ", "  leading", "trailing  ", "a  b   c", "龘" * 60 + " long", "\0 starts with NUL", "end  "]
    want = [sp.encode(t) + [EOS_ID] for t in texts]
    for dtype in ("<u2", "<u4", "<u2"):  # a dtype change must not reuse the other dtype's cached bytes
        flat, lengths = enc.encode_packed(texts, np.dtype(dtype), EOS_ID)
        assert flat.dtype == np.dtype(dtype)
        assert lengths.tolist() == [len(w) for w in want]
        assert flat.tolist() == [t for w in want for t in w]
