"""Credentials: read from files (Kubernetes secrets), and kept out of everything printed.

Every secret a topology resolves is registered here; `scrub` replaces each one, and the
password of any `scheme://user:password@` URI, in text about to be logged or printed.
"""

from __future__ import annotations

import re
from pathlib import Path

MASK = "***"
FILE_SUFFIX = "_file"
# Option names whose values are credentials (librdkafka's sasl.password, ssl.key.password,
# sasl.oauthbearer.client.secret, ssl.key.pem, sasl.jaas.config; pymongo's password).
_SECRET_NAME = re.compile(r"password|secret|token|jaas|\.pem$|credential", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s]+)(?=@)", re.I)
_known: set[str] = set()


def register(value: str) -> None:
    """Never print `value` from now on."""
    if len(value) >= 3:  # shorter ones would mask ordinary words
        _known.add(value)


def is_secret(name: str) -> bool:
    """Whether an option of this name holds a credential."""
    return bool(_SECRET_NAME.search(name))


def register_uri(uri: str) -> None:
    """Register the password of a `scheme://user:password@host` URI."""
    for match in _URI_PASSWORD.finditer(uri):
        register(match["pw"])


def scrub(text: str) -> str:
    """`text` with every known secret and URI password masked."""
    text = _URI_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    for value in sorted(_known, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def read_file(path: str) -> str:
    """A secret kept in a file, without the newline editors and `kubectl` leave at its end."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from exc


def from_files(options: dict[str, object]) -> dict[str, object]:
    """`NAME_file: PATH` entries replaced by `NAME: <the file's content>`; secrets registered."""
    resolved: dict[str, object] = {}
    for name, value in options.items():
        if name.endswith(FILE_SUFFIX) and isinstance(value, str):
            name, value = name.removesuffix(FILE_SUFFIX), read_file(value)
            if name in options:
                raise ValueError(f"both {name} and {name}{FILE_SUFFIX} are set")
        if isinstance(value, str) and (is_secret(name) or name.endswith("uri")):
            register(value) if is_secret(name) else register_uri(value)
        resolved[name] = value
    return resolved
