"""Test EHRs: key pairs, their JWKS files and the tokens they sign (like a CDS client would)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey

ISSUER = "https://ehr.example.org"
BASE = "https://cds.example.org"


class Ehr:
    """One signing key of an issuer. `token(aud)` signs a fresh JWT (new jti) as the spec describes."""

    def __init__(self, issuer: str = ISSUER, alg: str = "ES384", kid: str = "ehr-key-1") -> None:
        self.issuer = issuer
        self.alg = alg
        self.kid = kid
        if alg.startswith("ES"):
            curve = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]
            self.key: Key = ECKey.generate_key(curve, parameters={"kid": kid})
        else:
            self.key = RSAKey.generate_key(2048, parameters={"kid": kid})

    def public_jwk(self) -> dict:
        return {**self.key.as_dict(private=False), "use": "sig", "alg": self.alg}

    def claims(self, audience: str | list[str], **overrides: Any) -> dict:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": audience, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, audience: str | list[str], *, header: dict | None = None, **claims: Any) -> str:
        head = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **(header or {})}
        head = {k: v for k, v in head.items() if v is not None}
        return jwt.encode(head, self.claims(audience, **claims), self.key, algorithms=[head["alg"]])


def jwks(*ehrs: Ehr) -> dict:
    return {"keys": [e.public_jwk() for e in ehrs]}


def write_jwks(path: Path, *ehrs: Ehr) -> Path:
    path.write_text(json.dumps(jwks(*ehrs)))
    return path


def b64url(data: bytes | dict) -> str:
    if isinstance(data, dict):
        data = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}
