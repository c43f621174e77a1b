"""Cost of verifying the EHR's JWT, per request (cds_hooks/jwt_auth.py, keys from a local JWKS file).

    .venv/bin/python bench/jwt_verify.py [N]

Times N verifications of distinct tokens (fresh jti each, so every one is checked in full: header,
issuer, key lookup, signature, claims, replay cache) for ES384 (P-384) and RS384 (2048-bit RSA),
and prints microseconds per verification. Token signing happens before the clock starts.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from cds_hooks.jwt_auth import JwtVerifier, TrustedIssuer, VerifierConfig

ISSUER = "https://ehr.example.org"
AUD = "https://cds.example.org/cds-services/hematotox-order-sign"


def tokens(key, alg: str, n: int) -> list[str]:
    now = int(time.time())
    return [
        jwt.encode(
            {"alg": alg, "typ": "JWT", "kid": key.kid},
            {"iss": ISSUER, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
            key,
            algorithms=[alg],
        )
        for _ in range(n)
    ]


async def measure(verifier: JwtVerifier, batch: list[str]) -> list[float]:
    out = []
    for token in batch:
        t = time.perf_counter()
        await verifier.verify(token, [AUD])
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    es = ECKey.generate_key("P-384", parameters={"kid": "es384"})
    rs = RSAKey.generate_key(2048, parameters={"kid": "rs384"})
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "jwks.json"
        path.write_text(json.dumps({"keys": [es.as_dict(private=False), rs.as_dict(private=False)]}))
        verifier = JwtVerifier([TrustedIssuer(ISSUER, jwks_file=str(path))], VerifierConfig(jti_cache_size=4 * n + 100))
        print(f"{n} verifications each, keys from a local JWKS file")
        for alg, key in (("ES384", es), ("RS384", rs)):
            asyncio.run(measure(verifier, tokens(key, alg, 50)))  # warm-up
            times = asyncio.run(measure(verifier, tokens(key, alg, n)))
            mean = statistics.fmean(times) * 1e6
            median = statistics.median(times) * 1e6
            p99 = sorted(times)[int(0.99 * len(times))] * 1e6
            print(f"{alg}: mean {mean:.0f} µs/verification, median {median:.0f} µs, p99 {p99:.0f} µs")


if __name__ == "__main__":
    main()
