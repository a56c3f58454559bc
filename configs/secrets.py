"""What may leave the process. Secrets do not: a config holds the names of the variables that carry them
(`llm.openai.api_key_env`, `download.proxy_env`), never their values, and any text that leaves (an error message, a
traceback, a config error) has the credentials of the URLs in it masked first. Servers listen on 127.0.0.1 unless
the user asks otherwise, and then say so."""

from __future__ import annotations

import ipaddress
import re

_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@]+@")


def redact(text: str) -> str:
    """`http://user:password@host/` -> `http://***@host/`, wherever a URL carrying credentials appears in `text`."""
    return _CREDENTIALS.sub(r"\1***@", text)


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` can be reached from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: whatever it resolves to, it is not known to be loopback
        return False


def exposure_warning(service: str, host: str) -> str | None:
    """What to tell the user when `service` listens beyond this machine (every server binds 127.0.0.1 by default)."""
    if is_loopback(host):
        return None
    return f"warning: {service} listens on {host}, so other machines can reach it; it has no authentication of its own"
