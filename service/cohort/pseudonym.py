"""`--pseudonymize KEYFILE`: patient ids replaced by a keyed hash (HMAC-SHA256), stable per key.

A keyed hash, not a plain one: without the key, nobody can recompute the pseudonym of a known patient
id, and the program that holds the key can still link a row back to its patient.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

MIN_KEY_BYTES = 16


class KeyFileError(ValueError):
    """The key file cannot serve as a key (a clear CLI message, never a traceback)."""


def load_key(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise KeyFileError(f"--pseudonymize: cannot read the key file {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(
            f"--pseudonymize: the key file {path} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
            "(e.g. `head -c 32 /dev/urandom | base64 > KEYFILE`)"
        )
    return key


def pseudonym(key: bytes, patient_id: str) -> str:
    return hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()
