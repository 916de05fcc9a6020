"""Similarity in templates: ``cosine(a, b)`` and ``top_k(candidates, vector, k)``, so a workflow can route by
embeddings without code (the ticket goes to the team that solved the most similar one).

Vectors are lists of numbers as ``create_embedding`` returns them (``encoding_format: float``). A
candidate is a vector, or a mapping holding one under ``by`` (default ``embedding``, the key of the
API's ``data`` items). Mismatched lengths or non-numbers are errors naming what is wrong, which the
template layer turns into a ``template_error`` of the step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["cosine", "top_k"]

#: Bounds that keep one template's similarity work small next to the sandbox's own limits.
MAX_DIMENSIONS = 16_384
MAX_CANDIDATES = 100_000


def _vector(value: Any, what: str) -> list[float]:
    if isinstance(value, Mapping):
        value = value.get("embedding")
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{what} must be a non-empty list of numbers (an embedding), got {type(value).__name__}")
    if len(value) > MAX_DIMENSIONS:
        raise ValueError(f"{what} has {len(value)} numbers, more than {MAX_DIMENSIONS}")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value):
        raise ValueError(f"{what} must hold only finite numbers")
    return [float(x) for x in value]


def _cosine(a: list[float], b: list[float], what: str) -> float:
    if len(a) != len(b):
        raise ValueError(f"{what}: the vectors have different lengths ({len(a)} and {len(b)}); embed both with the "
                         "same model and dimensions")
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return 0.0 if norms == 0 else sum(x * y for x, y in zip(a, b, strict=True)) / norms


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two embeddings, from -1 to 1 (1: same direction)."""
    return round(_cosine(_vector(a, "cosine: the first vector"), _vector(b, "cosine: the second vector"), "cosine"), 6)


def top_k(candidates: Any, vector: Any, k: int = 3, by: str = "embedding") -> list[dict[str, Any]]:
    """The ``k`` candidates most similar to ``vector``, best first (ties keep the candidates' order).

    Each result is ``{"index": position in candidates, "score": cosine}``, plus the candidate's other
    fields when it is a mapping (its vector left out, so results stay small).
    """
    if isinstance(candidates, str | bytes) or not isinstance(candidates, Sequence):
        raise ValueError(f"top_k: candidates must be a list, got {type(candidates).__name__}")
    if len(candidates) > MAX_CANDIDATES:
        raise ValueError(f"top_k: {len(candidates)} candidates, more than {MAX_CANDIDATES}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k: k must be a whole number of at least 1, got {k!r}")
    target = _vector(vector, "top_k: the vector")
    scored = []
    for index, candidate in enumerate(candidates):
        raw = candidate.get(by) if isinstance(candidate, Mapping) else candidate
        score = _cosine(_vector(raw, f"top_k: candidate {index}"), target, f"top_k: candidate {index}")
        extra = {key: value for key, value in candidate.items() if key != by} if isinstance(candidate, Mapping) else {}
        scored.append({**extra, "index": index, "score": round(score, 6)})
    scored.sort(key=lambda entry: -entry["score"])  # stable: ties keep their order
    return scored[:k]
