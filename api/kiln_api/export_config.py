"""Configuration of the `export` step: checkpoint -> Triton model repository version.

The operator writes this as a YAML/JSON file for the export Job; `kiln-trainer export --config FILE`
reads it. Every field is validated in `__post_init__` and errors name the field.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, fields
from typing import Any

from kiln_api.s3layout import StorageURI, StorageURIError
from kiln_api.specfields import SpecError

# Triton model names become folder names and URL path segments.
_MODEL_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,62}$")
CHECKPOINT_CHOICES = ("latest", "best")
DTYPES = ("float32", "bfloat16")


ExportConfigError = SpecError
"""The old name of kiln_api's one error type (an export configuration that cannot be used)."""


@dataclass(frozen=True)
class ExportConfig:
    """What to export, from where, to where."""

    checkpoints_uri: str
    """The run's checkpoint folder, `<root>/runs/<run>/checkpoints` (s3:// or file://)."""

    model_repository: str
    """Root of the Triton model repository, usually `<root>/models` (s3:// or file://)."""

    model_name: str
    """Triton model name: the folder under the repository (letters, digits, `_ . -`)."""

    checkpoint: str = "latest"
    """Which committed checkpoint: `latest` (the `latest` pointer) or `best` (lowest val loss)."""

    version: int | str = "auto"
    """Model version to write: a positive integer, or `auto` for one more than the highest present."""

    dtype: str = "float32"
    """Dtype of the served weights: `float32` or `bfloat16`."""

    int8: bool = False
    """Publish the weight-only INT8 variant as the version (same model name; its manifest says int8)."""

    max_ppl_increase: float = 0.02
    """With `int8`: the export fails (QuantizationRejected, nothing published) unless the INT8
    perplexity is at most (1 + this) x the full-precision one."""

    reference_prompts: tuple[str, ...] = ("Once upon a time",)
    """Prompts whose greedy continuations are stored in the manifest for the rollout gate."""

    reference_max_new_tokens: int = 16
    """Length of each stored greedy reference continuation."""

    dataset_uri: str | None = None
    """The prepared dataset the run trained on (`<root>/datasets/<data-hash>`): its tokenizer.model,
    data_hash and `val` split (perplexity) are used unless the fields below override them."""

    tokenizer_uri: str | None = None
    """URI of the SentencePiece `tokenizer.model`; default: the dataset's, else one in the checkpoint."""

    eval_text_uri: str | None = None
    """UTF-8 text for the perplexity check; default: the dataset's `val` split, else the prompts."""

    eval_max_tokens: int = 16384
    """At most this many evaluation tokens are scored (bounds export time on CPU)."""

    hf_export: bool = True
    """Also write a Hugging Face Llama-style `hf/` folder (config.json + model.safetensors) if possible."""

    run: str = ""
    """Run name recorded in the manifest; default: taken from the checkpoints URI."""

    def __post_init__(self) -> None:
        for name in ("checkpoints_uri", "model_repository"):
            _check_uri(name, getattr(self, name))
        for name in ("dataset_uri", "tokenizer_uri", "eval_text_uri"):
            value = getattr(self, name)
            if value is not None:
                _check_uri(name, value)
        if not isinstance(self.model_name, str) or not _MODEL_NAME.match(self.model_name):
            raise ExportConfigError(
                f"model_name: {self.model_name!r} must be 1-63 characters of letters, digits, '_', '.', '-'"
            )
        if self.checkpoint not in CHECKPOINT_CHOICES:
            raise ExportConfigError(f"checkpoint: {self.checkpoint!r} must be one of {list(CHECKPOINT_CHOICES)}")
        if self.version != "auto" and (
            isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1
        ):
            raise ExportConfigError(f"version: {self.version!r} must be a positive integer or 'auto'")
        if self.dtype not in DTYPES:
            raise ExportConfigError(f"dtype: {self.dtype!r} must be one of {list(DTYPES)}")
        if not isinstance(self.int8, bool):
            raise ExportConfigError(f"int8: {self.int8!r} must be true or false")
        if isinstance(self.max_ppl_increase, bool) or not isinstance(self.max_ppl_increase, int | float) or not (
            0 <= self.max_ppl_increase <= 10
        ):
            raise ExportConfigError(f"max_ppl_increase: {self.max_ppl_increase!r} must be a number in [0, 10]")
        if not self.reference_prompts or not all(isinstance(p, str) and p for p in self.reference_prompts):
            raise ExportConfigError("reference_prompts: must be a non-empty list of non-empty strings")
        if (
            isinstance(self.reference_max_new_tokens, bool)
            or not isinstance(self.reference_max_new_tokens, int)
            or not 1 <= self.reference_max_new_tokens <= 4096
        ):
            raise ExportConfigError(
                f"reference_max_new_tokens: {self.reference_max_new_tokens!r} must be an integer in [1, 4096]"
            )

        if isinstance(self.eval_max_tokens, bool) or not isinstance(self.eval_max_tokens, int) or self.eval_max_tokens < 2:
            raise ExportConfigError(f"eval_max_tokens: {self.eval_max_tokens!r} must be an integer >= 2")

    @property
    def variant(self) -> str:
        """What the published version holds: `int8`, else `dtype`; a property of the version, not the name."""
        return "int8" if self.int8 else self.dtype

    @property
    def run_name(self) -> str:
        """`run`, or the folder above `checkpoints` in the checkpoints URI."""
        if self.run:
            return self.run
        parts = self.checkpoints_uri.rstrip("/").split("/")
        return parts[-2] if len(parts) >= 2 and parts[-1] == "checkpoints" else parts[-1]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportConfig:
        """Build from parsed YAML/JSON; unknown keys are errors (a typo must not be ignored)."""
        if not isinstance(data, dict):
            raise ExportConfigError(f"export config: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExportConfigError(f"{unknown[0]}: unknown export config field (known: {sorted(known)})")
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING]
        if missing:
            raise ExportConfigError(f"{missing[0]}: required export config field is missing")
        values = dict(data)
        if "reference_prompts" in values:
            prompts = values["reference_prompts"]
            if not isinstance(prompts, list | tuple):
                raise ExportConfigError("reference_prompts: must be a list of strings")
            values["reference_prompts"] = tuple(prompts)
        return cls(**values)



def _check_uri(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ExportConfigError(f"{name}: expected a URI string, got {type(value).__name__}")
    try:
        StorageURI.parse(value, field=name)
    except StorageURIError as e:
        raise ExportConfigError(str(e)) from e
