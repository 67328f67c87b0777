"""Names of settings that carry secrets, which aimod never accepts as settings.

Kept free of heavy imports: the command line checks its arguments with these
before anything else is loaded.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ENV_NAME", "find_secrets", "is_secret_name"]

_SECRET_WORDS = frozenset({"authorization", "bearer", "password", "secret", "token"})
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
# Upper case only: a lower-case value is more likely a pasted key than a name.
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def is_secret_name(name: object) -> bool:
    """Return True when a setting's name says that it carries a secret.

    Matches api_key, apiKey, OPENAI_API_KEY, access_token, Authorization and
    the like, but not max_tokens or api_key_env (the name of a variable).
    """
    spaced = _CAMEL_BOUNDARY.sub(r"\1_\2", str(name)).lower()
    words = re.findall(r"[a-z0-9]+", spaced)
    if not words or words[-1] == "env":
        return False
    return (
        words == ["key"]
        or "apikey" in "".join(words)
        or any(word in _SECRET_WORDS for word in words)
    )


def find_secrets(node: Any, path: str = "") -> list[str]:
    """Return the dotted paths of keys in a nested config that name secrets."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{path}.{key}" if path else str(key)
            if is_secret_name(key):
                found.append(dotted)
            found.extend(find_secrets(value, dotted))
    elif isinstance(node, list):
        for number, value in enumerate(node):
            found.extend(find_secrets(value, f"{path}[{number}]"))
    return found
