"""`kiln generate`: its decoding flags reach the Triton request, and optional inputs go out only when asked."""

from __future__ import annotations

from typing import Any

import pytest
from kiln_api.triton_client import GenerateRequest, _inputs
from kiln_operator.cli import main, stream


def _sent(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> GenerateRequest:
    seen: list[GenerateRequest] = []

    def fake_stream(url: str, model: str, req: GenerateRequest):  # noqa: ANN202
        seen.append(req)
        yield "好", [7]

    monkeypatch.setattr(stream, "stream_generate", fake_stream)
    assert main(["generate", "demo-llm", "明月几时有，", "--url", "localhost:1", *argv]) == 0
    return seen[0]


def test_decoding_flags_reach_the_request(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    req = _sent(monkeypatch, ["--max-new-tokens", "40", "--no-repeat-ngram", "3", "--min-new-tokens", "12"])
    assert (req.prompt, req.max_new_tokens, req.no_repeat_ngram, req.min_new_tokens) == ("明月几时有，", 40, 3, 12)
    assert capsys.readouterr().out == "好\n"
    plain = _sent(monkeypatch, [])
    assert (plain.no_repeat_ngram, plain.min_new_tokens) == (0, 0)


def _tensors(req: GenerateRequest) -> dict[str, Any]:
    return {t.name(): t for t in _inputs(req)}


def test_optional_inputs_are_sent_only_when_asked() -> None:
    # Versions exported before an input existed reject it, so a plain request must not carry it.
    plain = _tensors(GenerateRequest(prompt="x"))
    assert "MIN_NEW_TOKENS" not in plain and "NO_REPEAT_NGRAM" not in plain
    asked = _tensors(GenerateRequest(prompt="x", min_new_tokens=12, no_repeat_ngram=3))
    assert asked["MIN_NEW_TOKENS"].datatype() == "INT32" and asked["NO_REPEAT_NGRAM"].datatype() == "INT32"
