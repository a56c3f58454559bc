"""Secrets stay in the process: a config holds the names of the variables that carry them (`llm.openai.api_key_env`,
`download.proxy_env`), never their values, and any text that leaves (an error message, a traceback, a config error)
has the credentials of the URLs in it masked first."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@]+@")


def redact(text: str) -> str:
    """`http://user:password@host/` -> `http://***@host/`, wherever a URL carrying credentials appears in `text`."""
    return _CREDENTIALS.sub(r"\1***@", text)
