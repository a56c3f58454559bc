"""The language of a text, by py3langid (its model ships in the package): for titles, descriptions and transcripts."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _language_identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str | None, float]:
    """ISO code and confidence of the text's language; (None, 0) for no text."""
    if not text.strip():
        return None, 0.0
    language, confidence = _language_identifier().classify(text)
    return language, float(confidence)
