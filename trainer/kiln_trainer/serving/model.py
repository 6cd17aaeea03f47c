"""Triton python-backend entry point; export copies this file into every model version folder.

Decoupled: each request gets its responses through its own response sender, so a request may be
streamed (one response per token, then an empty final flag) or answered once. All requests of one
`execute` call are generated together (`generate_batch`, left-padding prompts of different
lengths), so with Triton's dynamic batcher concurrent requests share forward passes. A bad request gets a Triton error response naming the
input; the other requests of the batch and the server carry on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils  # provided by the Triton python backend stub

from kiln_trainer.serving.generate import GenerationError, generate_batch
from kiln_trainer.serving.int8 import describe_weights
from kiln_trainer.serving.loader import load_version
from kiln_trainer.serving.service import Request, outputs, parse_request

INPUT_NAMES = ("TEXT", "INPUT_IDS", "MAX_NEW_TOKENS", "TEMPERATURE", "TOP_K", "TOP_P", "SEED", "STREAM", "NO_REPEAT_NGRAM",
               "MIN_NEW_TOKENS")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _response(tensors: dict[str, Any]) -> Any:
    return pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in tensors.items()])


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        self.served = load_version(folder)
        self.name = f"{args['model_name']}/{args['model_version']}"
        # One line per loaded version in the server log: which variant, and what is really resident.
        variant = self.served.manifest.get("variant") or self.served.manifest.get("dtype") or "float32"
        print(f"[kiln] {self.name}: {variant} version loaded, resident weights {describe_weights(self.served.model)}",
              flush=True)
        cfg = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(cfg):
            raise pb_utils.TritonModelException(f"{self.name}: config.pbtxt must set decoupled: true")

    def _parse(self, request: Any) -> Request:
        inputs = {}
        for name in INPUT_NAMES:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                inputs[name] = tensor.as_numpy()
        return parse_request(inputs, self.served)

    def execute(self, requests: list[Any]) -> None:
        senders, parsed, streaming = [], [], []
        for request in requests:
            sender = request.get_response_sender()
            try:
                req = self._parse(request)
            except (GenerationError, ValueError, UnicodeDecodeError) as e:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))), flags=FINAL)
                continue
            senders.append(sender)
            parsed.append(req)
            streaming.append(req.stream)
        if not parsed:
            return None
        sent_text = [""] * len(parsed)
        so_far: list[list[int]] = [[] for _ in parsed]

        def on_token(i: int, tok: int) -> None:
            if not streaming[i]:
                return
            so_far[i].append(tok)
            # Decode the whole continuation and send the new suffix: SentencePiece pieces carry
            # their leading space, which decoding a lone token would drop.
            text = self.served.decode(so_far[i])
            piece, sent_text[i] = text[len(sent_text[i]) :], text
            out = outputs(self.served, [tok])
            out["TEXT"][0, 0] = piece.encode("utf-8")
            senders[i].send(_response(out))

        try:
            results = generate_batch(
                self.served.model, [r.prompt_ids for r in parsed], [r.params for r in parsed], on_token
            )
        except Exception as e:  # noqa: BLE001 - a failure must answer every waiting client, not kill the stub
            for sender in senders:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"generation failed: {e}")), flags=FINAL)
            return None
        for i, (sender, tokens) in enumerate(zip(senders, results, strict=True)):
            if streaming[i]:
                sender.send(flags=FINAL)
            else:
                sender.send(_response(outputs(self.served, tokens)), flags=FINAL)
        return None

    def finalize(self) -> None:
        self.served = None  # type: ignore[assignment]
