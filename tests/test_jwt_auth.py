"""Only trusted EHRs get answers: the JWT attack matrix on discovery, service calls and feedback,
plus key rotation, jku, and the secure-by-default / development-mode rules."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from joserfc import jws

from cds_hooks.jwt_auth import AuthError, JwtVerifier, TrustedIssuer, VerifierConfig, key_set_from_json
from service.web.app import create_app
from service.web.settings import Settings
from tests.cases import BY_NAME, hook_request
from tests.conftest import dev_settings
from tests.jwt_keys import BASE, ISSUER, Ehr, b64url, bearer, jwks, write_jwks

SIGN = "/cds-services/hematotox-order-sign"
DISCOVERY = "/cds-services"
FEEDBACK = SIGN + "/feedback"
JKU_OK = "https://ehr.example.org/.well-known/jwks.json"
EVIL_JKU = "https://evil.example.org/jwks.json"

ES = Ehr(alg="ES384", kid="es-1")
RS = Ehr(alg="RS384", kid="rs-1")
OTHER_KEY_SAME_KID = Ehr(alg="ES384", kid="es-1")  # right iss, right kid, but not the issuer's key
OTHER_KEY = Ehr(alg="ES384", kid="es-unknown")
STRANGER = Ehr(issuer="https://evil.example.org", alg="ES384", kid="es-1")


def secure_settings(tmp_path, **service):
    return dev_settings(
        service={"development_mode": False, "public_base_url": BASE, **service},
        trusted_clients=[
            {
                "issuer": ISSUER,
                "jwks_file": str(write_jwks(tmp_path / "ehr-jwks.json", ES, RS)),
                "jku_allowlist": [JKU_OK],
            }
        ],
        fhir={"allowed_servers": []},
        feedback={"sqlite_path": str(tmp_path / "feedback.sqlite3")},
    )


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    with TestClient(create_app(secure_settings(tmp_path_factory.mktemp("jwt"))), raise_server_exceptions=False) as c:
        yield c


def hook_body() -> dict:
    return hook_request("order-sign", "p", BY_NAME["T1"].observations("p"))


def feedback_body() -> dict:
    return {
        "feedback": [
            {
                "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
                "outcome": "overridden",
                "overrideReason": {"reason": {"system": "http://example.org", "code": "x"}},
                "outcomeTimestamp": "2024-03-10T10:00:00Z",
            }
        ]
    }


CALLS = {
    "discovery": ("GET", DISCOVERY, None),
    "service": ("POST", SIGN, hook_body),
    "feedback": ("POST", FEEDBACK, feedback_body),
}


def call(client: TestClient, which: str, headers: dict | None = None):
    method, path, body = CALLS[which]
    return client.request(method, path, headers=headers or {}, json=body() if body else None)


def assert_bare_401(r) -> None:
    assert r.status_code == 401, r.text
    assert r.content == b""  # no details: nothing to learn from a refusal
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["cache-control"] == "no-store"


# --------------------------------------------------------------------------- forged tokens
def alg_none(aud: str) -> str:
    return f"{b64url({'alg': 'none', 'typ': 'JWT', 'kid': ES.kid})}.{b64url(ES.claims(aud))}."


def hs256_with_public_key(aud: str) -> str:
    # The classic confusion attack: HMAC keyed with the issuer's *public* key (PEM), which the
    # attacker knows. A verifier that lets the token pick the algorithm would accept it.
    secret = ES.key.as_pem(private=False)
    signing_input = f"{b64url({'alg': 'HS256', 'typ': 'JWT', 'kid': ES.kid})}.{b64url(ES.claims(aud))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def tampered(aud: str) -> str:
    head, _, sig = ES.token(aud).split(".")
    claims = ES.claims(aud, exp=int(time.time()) + 3000, sub="Practitioner/admin")
    return f"{head}.{b64url(claims)}.{sig}"


def url(which: str) -> str:
    return BASE + CALLS[which][1]


# attack -> (token maker, the refusal reason the service logs for it)
ATTACKS = {
    "no header": (lambda aud: None, "no-bearer-token"),
    "empty bearer": (lambda aud: "", "no-bearer-token"),
    "basic auth": (lambda aud: "BASIC", "no-bearer-token"),
    "malformed token": (lambda aud: "not-a-jwt", "malformed"),
    "malformed three parts": (lambda aud: "a.b.c", "malformed"),
    "alg none": (alg_none, "alg"),
    "hs256 signed with the public key": (hs256_with_public_key, "alg"),
    "expired": (
        lambda aud: ES.token(aud, iat=int(time.time()) - 900, exp=int(time.time()) - 300),
        "claims:ExpiredTokenError",
    ),
    "not yet valid (nbf)": (lambda aud: ES.token(aud, nbf=int(time.time()) + 600), "claims:InvalidClaimError"),
    "issued in the future": (lambda aud: ES.token(aud, iat=int(time.time()) + 600), "claims:InvalidClaimError"),
    "wrong aud": (lambda aud: ES.token(BASE + "/cds-services/some-other-service"), "claims:InvalidClaimError"),
    "aud of a lookalike host": (
        lambda aud: ES.token(aud.replace("cds.example.org", "cds.example.org.evil.com")),
        "claims:InvalidClaimError",
    ),
    "no aud": (lambda aud: ES.token(aud, aud=None), "claims:MissingClaimError"),
    "no exp": (lambda aud: ES.token(aud, exp=None), "claims:MissingClaimError"),
    "no jti": (lambda aud: ES.token(aud, jti=None), "claims:MissingClaimError"),
    "exp too far away": (lambda aud: ES.token(aud, exp=int(time.time()) + 30 * 86400), "claims:lifetime"),
    "unknown iss": (lambda aud: STRANGER.token(aud), "iss"),
    "right iss but another key (same kid)": (lambda aud: OTHER_KEY_SAME_KID.token(aud), "signature"),
    "right iss but another key (unknown kid)": (lambda aud: OTHER_KEY.token(aud), "kid"),
    "no kid": (lambda aud: ES.token(aud, header={"kid": None}), "kid"),
    # A kid we do not hold and a jku we may not fetch from: nothing to verify with (never fetched,
    # see test_a_jku_off_the_allowlist_is_never_contacted).
    "unknown kid, jku not on the allowlist": (
        lambda aud: OTHER_KEY.token(aud, header={"jku": EVIL_JKU}),
        "jku",
    ),
    "tampered payload": (tampered, "signature"),
    "EC key named for a PS384 token": (lambda aud: RS.token(aud, header={"alg": "PS384", "kid": ES.kid}), "signature"),
}


def refusal_reasons(caplog) -> list[str]:
    return [
        r.event["reason"]
        for r in caplog.records
        if r.name == "hematotox.security" and getattr(r, "event", {}).get("status") == 401
    ]


@pytest.mark.parametrize("which", list(CALLS))
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_is_refused_with_bare_401(secure, caplog, attack, which):
    make, reason = ATTACKS[attack]
    token = make(url(which))
    headers = {}
    if token == "BASIC":
        headers = {"Authorization": "Basic dXNlcjpwYXNz"}
    elif token is not None:
        headers = {"Authorization": f"Bearer {token}".rstrip()}
    caplog.set_level("INFO", logger="hematotox.security")
    assert_bare_401(call(secure, which, headers))
    assert refusal_reasons(caplog) == [reason]  # refused for this attack, not by accident


def test_the_forged_tokens_are_what_they_claim(tmp_path):
    # Sanity of the matrix itself: the forged headers really carry the attack.
    def header(token: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))

    assert header(alg_none(AUD))["alg"] == "none" and alg_none(AUD).endswith(".")
    assert header(hs256_with_public_key(AUD))["alg"] == "HS256"
    assert "kid" not in header(ES.token(AUD, header={"kid": None}))
    trusting = JwtVerifier([TrustedIssuer(ISSUER, jwks_file=str(write_jwks(tmp_path / "k.json", ES)))])
    assert verify(trusting, ES.token(AUD)).issuer == ISSUER  # the same signer, untampered, passes


@pytest.mark.parametrize("which", list(CALLS))
def test_replayed_jti_is_refused(secure, caplog, which):
    token = ES.token(url(which))
    assert call(secure, which, bearer(token)).status_code == 200
    caplog.set_level("INFO", logger="hematotox.security")
    assert_bare_401(call(secure, which, bearer(token)))
    assert refusal_reasons(caplog) == ["replay"]


@pytest.mark.parametrize("ehr", [ES, RS], ids=["ES384", "RS384"])
@pytest.mark.parametrize("which", list(CALLS))
def test_valid_token_passes(secure, ehr, which):
    r = call(secure, which, bearer(ehr.token(url(which))))
    assert r.status_code == 200, r.text
    if which == "service":
        assert r.json()["cards"]


def test_aud_may_be_an_array_holding_the_called_url(secure):
    r = call(secure, "discovery", bearer(ES.token([BASE + "/other", url("discovery")])))
    assert r.status_code == 200


def test_feedback_accepts_its_service_url_as_aud(secure):
    assert call(secure, "feedback", bearer(ES.token(url("service")))).status_code == 200


def test_token_for_one_service_is_not_valid_for_discovery(secure):
    assert_bare_401(call(secure, "discovery", bearer(ES.token(url("service")))))


def test_small_clock_skew_is_tolerated(secure):
    now = int(time.time())
    token = ES.token(url("discovery"), iat=now + 10, nbf=now + 10, exp=now + 300)
    assert call(secure, "discovery", bearer(token)).status_code == 200


def test_aud_follows_public_base_url_with_a_path(tmp_path):
    settings = secure_settings(tmp_path, public_base_url="https://gw.example.org/cds/")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        ok = ES.token("https://gw.example.org/cds/cds-services")
        assert c.get(DISCOVERY, headers=bearer(ok)).status_code == 200
        assert_bare_401(c.get(DISCOVERY, headers=bearer(ES.token(BASE + "/cds-services"))))


def test_ops_endpoints_are_not_behind_the_jwt(secure):
    # The health checks of the deployment must not need a token (service/web/ops.py).
    assert secure.get("/healthz").status_code == 200


# --------------------------------------------------------------------------- secure by default
def test_no_trusted_client_and_no_development_mode_refuses_every_hook(tmp_path):
    settings = dev_settings(
        service={"development_mode": False, "public_base_url": BASE},
        feedback={"sqlite_path": str(tmp_path / "f.sqlite3")},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        for which in CALLS:
            assert_bare_401(call(c, which))
            assert_bare_401(call(c, which, bearer(ES.token(url(which)))))


def test_development_mode_without_trusted_clients_needs_no_token(client):
    assert client.get(DISCOVERY).status_code == 200


def test_development_mode_with_trusted_clients_verifies_a_token_that_is_sent(tmp_path):
    settings = secure_settings(tmp_path, development_mode=True)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get(DISCOVERY).status_code == 200  # no token: development convenience
        assert c.get(DISCOVERY, headers=bearer(ES.token(url("discovery")))).status_code == 200
        assert_bare_401(c.get(DISCOVERY, headers=bearer(STRANGER.token(url("discovery")))))
        assert_bare_401(c.get(DISCOVERY, headers=bearer(alg_none(url("discovery")))))


# --------------------------------------------------------------------------- the verifier itself
AUD = BASE + "/cds-services"


class JwksHost:
    """A JWKS URL served through httpx.MockTransport; counts fetches."""

    def __init__(self, *ehrs: Ehr) -> None:
        self.keys = jwks(*ehrs)
        self.fetches = 0
        self.status = 200

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        return httpx.Response(self.status, json=self.keys)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def verify(verifier: JwtVerifier, token: str, aud: str = AUD):
    return asyncio.run(verifier.verify(token, [aud]))


def test_jwks_url_is_fetched_once_and_cached():
    host = JwksHost(ES)
    v = JwtVerifier([TrustedIssuer(ISSUER, jwks_url="https://ehr.example.org/jwks")], http_client=host.client())
    for _ in range(3):
        assert verify(v, ES.token(AUD)).issuer == ISSUER
    assert host.fetches == 1


def test_unknown_kid_refetches_the_jwks_once_then_rate_limits():
    new_key = Ehr(alg="ES384", kid="es-2")
    host = JwksHost(ES)
    v = JwtVerifier(
        [TrustedIssuer(ISSUER, jwks_url="https://ehr.example.org/jwks")],
        VerifierConfig(min_refresh_seconds=0),
        http_client=host.client(),
    )
    verify(v, ES.token(AUD))
    host.keys = jwks(ES, new_key)  # the EHR rotates: a new key appears in its JWKS
    assert verify(v, new_key.token(AUD)).issuer == ISSUER
    assert host.fetches == 2

    limited = JwtVerifier(
        [TrustedIssuer(ISSUER, jwks_url="https://ehr.example.org/jwks")],
        VerifierConfig(min_refresh_seconds=3600),
        http_client=JwksHost(ES).client(),
    )
    verify(limited, ES.token(AUD))
    for _ in range(5):  # made-up kids cannot make us hammer the EHR's JWKS host
        with pytest.raises(AuthError):
            verify(limited, OTHER_KEY.token(AUD))


def test_jwks_file_is_reread_on_unknown_kid(tmp_path):
    path = write_jwks(tmp_path / "jwks.json", ES)
    v = JwtVerifier([TrustedIssuer(ISSUER, jwks_file=str(path))], VerifierConfig(min_refresh_seconds=0))
    new_key = Ehr(alg="RS384", kid="rs-2")
    with pytest.raises(AuthError):
        verify(v, new_key.token(AUD))
    write_jwks(path, ES, new_key)
    assert verify(v, new_key.token(AUD)).issuer == ISSUER


def test_allowlisted_jku_is_used():
    host = JwksHost(ES)
    v = JwtVerifier([TrustedIssuer(ISSUER, jku_allowlist=(JKU_OK,))], http_client=host.client())
    assert verify(v, ES.token(AUD, header={"jku": JKU_OK})).issuer == ISSUER
    with pytest.raises(AuthError, match="jku"):
        verify(v, ES.token(AUD, header={"jku": JKU_OK + "?x=1"}))
    with pytest.raises(AuthError, match="kid"):
        verify(v, ES.token(AUD))  # no jku and no configured JWKS: no key


def test_failed_jwks_fetch_is_a_refusal_not_an_error():
    host = JwksHost(ES)
    host.status = 500
    v = JwtVerifier([TrustedIssuer(ISSUER, jwks_url="https://ehr.example.org/jwks")], http_client=host.client())
    with pytest.raises(AuthError):
        verify(v, ES.token(AUD))


def test_symmetric_and_weak_keys_in_a_jwks_are_ignored(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "es-1", "k": "c2VjcmV0"}, ES.public_jwk()]}))
    v = JwtVerifier([TrustedIssuer(ISSUER, jwks_file=str(path))])
    assert verify(v, ES.token(AUD)).issuer == ISSUER


def test_http_jwks_url_is_refused_outside_development():
    with pytest.raises(ValueError, match="https"):
        JwtVerifier([TrustedIssuer(ISSUER, jwks_url="http://ehr.example.org/jwks")])
    JwtVerifier([TrustedIssuer(ISSUER, jwks_url="http://127.0.0.1:9/jwks")], VerifierConfig(allow_http_jwks=True))


def test_replay_cache_is_per_issuer_and_bounded():
    host = JwksHost(ES)
    v = JwtVerifier(
        [TrustedIssuer(ISSUER, jwks_url="https://ehr.example.org/jwks")],
        VerifierConfig(jti_cache_size=10),
        http_client=host.client(),
    )
    for _ in range(25):
        verify(v, ES.token(AUD))
    assert len(v._seen) <= 10


def test_odd_jwks_entries_are_skipped_not_fatal(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps(
            {
                "keys": [
                    {"kty": {"x": 1}},
                    {"kty": ["EC"]},
                    "junk",
                    {"kty": "EC", "kid": {}},
                    {"kty": "RSA", "kid": "rs-1", "n": "AQAB", "e": "AQAB"},  # 8-bit RSA
                    ES.public_jwk(),
                ]
            }
        )
    )
    v = JwtVerifier([TrustedIssuer(ISSUER, jwks_file=str(path))])
    assert verify(v, ES.token(AUD)).issuer == ISSUER
    path.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    with pytest.raises(ValueError):
        JwtVerifier([TrustedIssuer(ISSUER, jwks_file=str(path))])  # nothing usable: fail at start


def test_an_unexpected_error_in_verification_is_still_a_bare_401(secure, monkeypatch):
    async def broken(*_args, **_kwargs):
        raise RuntimeError("library surprise")

    monkeypatch.setattr(secure.app.state.jwt_verifier, "verify", broken)
    assert_bare_401(call(secure, "discovery", bearer(ES.token(url("discovery")))))


# --------------------------------------------------------------------------- jku: a hint, never trust
SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
# The sandbox's token shape (ES384, its kid, a jku on every token), signed with a key of our own.
SANDBOX = Ehr(issuer=SANDBOX_ISSUER, alg="ES384", kid=SANDBOX_KID)
SANDBOX_JWKS_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "jwks" / "sandbox.cds-hooks.org.json"


def test_a_sandbox_token_with_a_jku_is_accepted_with_only_a_jwks_file(tmp_path):
    settings = dev_settings(
        service={"development_mode": False, "public_base_url": BASE},
        trusted_clients=[{"issuer": SANDBOX_ISSUER, "jwks_file": str(write_jwks(tmp_path / "sandbox.json", SANDBOX))}],
        fhir={"allowed_servers": []},
        feedback={"sqlite_path": str(tmp_path / "feedback.sqlite3")},
    )
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        jku = router.get(SANDBOX_JKU).respond(200, json=jwks(SANDBOX))
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            for which in CALLS:
                token = SANDBOX.token(url(which), header={"jku": SANDBOX_JKU})
                r = call(c, which, bearer(token))
                assert r.status_code == 200, (which, r.text)
            assert call(c, "service", bearer(SANDBOX.token(url("service"), header={"jku": SANDBOX_JKU}))).json()[
                "cards"
            ]
    assert not jku.called  # not on any allowlist: the jku was never contacted


def test_the_shipped_sandbox_jwks_is_a_usable_public_key_set():
    data = json.loads(SANDBOX_JWKS_EXAMPLE.read_text())
    assert all("d" not in k for k in data["keys"])  # public keys only
    (key,) = key_set_from_json(data).keys
    assert key.kid == SANDBOX_KID and key.as_dict()["crv"] == "P-384"
    JwtVerifier([TrustedIssuer(SANDBOX_ISSUER, jwks_file=str(SANDBOX_JWKS_EXAMPLE))])  # loads as configuration


@pytest.mark.parametrize("which", list(CALLS))
def test_a_jku_off_the_allowlist_is_never_contacted(secure, caplog, which):
    caplog.set_level("INFO", logger="hematotox.security")
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        evil = router.route(host="evil.example.org").respond(200, json=jwks(OTHER_KEY))
        # Our kid, a stranger's jku: verified with the configured key, the jku ignored.
        assert call(secure, which, bearer(ES.token(url(which), header={"jku": EVIL_JKU}))).status_code == 200
        # A kid we do not hold and the stranger's jku (which holds that kid): still refused.
        assert_bare_401(call(secure, which, bearer(OTHER_KEY.token(url(which), header={"jku": EVIL_JKU}))))
    assert not evil.called
    assert refusal_reasons(caplog) == ["jku"]


class RecordingJwksHost(JwksHost):
    def __init__(self, *ehrs: Ehr) -> None:
        super().__init__(*ehrs)
        self.urls: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return super().handler(request)


def test_configured_jwks_url_wins_and_a_foreign_jku_is_not_fetched():
    host = RecordingJwksHost(ES)
    v = JwtVerifier(
        [TrustedIssuer(ISSUER, jwks_url="https://ehr.example.org/jwks")],
        VerifierConfig(min_refresh_seconds=0),
        http_client=host.client(),
    )
    assert verify(v, ES.token(AUD, header={"jku": EVIL_JKU})).issuer == ISSUER
    with pytest.raises(AuthError, match="jku"):
        verify(v, OTHER_KEY.token(AUD, header={"jku": EVIL_JKU}))
    assert EVIL_JKU not in host.urls and set(host.urls) == {"https://ehr.example.org/jwks"}


def test_a_kid_not_in_the_configured_keys_is_looked_up_at_an_allowlisted_jku(tmp_path):
    rotated = Ehr(alg="ES384", kid="es-rotated")
    host = RecordingJwksHost(rotated)
    v = JwtVerifier(
        [TrustedIssuer(ISSUER, jwks_file=str(write_jwks(tmp_path / "k.json", ES)), jku_allowlist=(JKU_OK,))],
        http_client=host.client(),
    )
    assert verify(v, ES.token(AUD, header={"jku": JKU_OK})).issuer == ISSUER
    assert host.urls == []  # the configured keys held the kid: nothing fetched
    assert verify(v, rotated.token(AUD, header={"jku": JKU_OK})).issuer == ISSUER
    assert host.urls == [JKU_OK]
    with pytest.raises(AuthError, match="kid"):
        verify(v, OTHER_KEY.token(AUD))  # no jku, kid unknown


def test_a_jku_that_is_not_a_string_is_refused(tmp_path):
    v = JwtVerifier([TrustedIssuer(ISSUER, jwks_file=str(write_jwks(tmp_path / "k.json", ES)))])
    header = {"alg": "ES384", "typ": "JWT", "kid": ES.kid, "jku": {"url": JKU_OK}}
    signing_input = f"{b64url(header)}.{b64url(ES.claims(AUD))}"
    signature = jws.JWSRegistry.algorithms["ES384"].sign(signing_input.encode(), ES.key)
    token = f"{signing_input}.{b64url(signature)}"  # joserfc will not sign a non-string jku itself
    with pytest.raises(AuthError, match="jku"):
        verify(v, token)


# --------------------------------------------------------------------------- diagnosable refusals
def refusal_events(caplog) -> list[dict]:
    return [r.event for r in caplog.records if r.name == "hematotox.security" and r.event.get("status") == 401]


def test_an_aud_refusal_logs_the_expected_and_the_received_audience(secure, caplog):
    caplog.set_level("INFO", logger="hematotox.security")
    called_localhost = "http://localhost:8080/cds-services"
    token = ES.token(called_localhost)
    assert_bare_401(call(secure, "discovery", bearer(token)))
    (event,) = refusal_events(caplog)
    assert event == {
        "status": 401,
        "reason": "claims:InvalidClaimError",
        "claim": "aud",
        "expected": [BASE + "/cds-services"],
        "received": [called_localhost],
        "path": "/cds-services",
    }
    logged = " ".join(r.getMessage() + json.dumps(r.event) for r in caplog.records)
    for part in token.split("."):
        assert part not in logged


@pytest.mark.parametrize(
    ("make", "claim", "reason"),
    [
        (
            lambda: ES.token(AUD, exp=int(time.time()) - 300, iat=int(time.time()) - 900),
            "exp",
            "claims:ExpiredTokenError",
        ),
        (lambda: ES.token(AUD, nbf=int(time.time()) + 600), "nbf", "claims:InvalidClaimError"),
        (lambda: ES.token(AUD, iat=int(time.time()) + 600), "iat", "claims:InvalidClaimError"),
        (lambda: ES.token(AUD, jti=None), "jti", "claims:MissingClaimError"),
        (lambda: ES.token(AUD, exp=int(time.time()) + 30 * 86400), "exp", "claims:lifetime"),
        (lambda: STRANGER.token(AUD), "iss", "iss"),
    ],
    ids=["expired", "nbf", "iat", "no jti", "lifetime", "iss"],
)
def test_a_claim_refusal_names_the_claim_and_nothing_of_its_value(secure, caplog, make, claim, reason):
    caplog.set_level("INFO", logger="hematotox.security")
    assert_bare_401(call(secure, "discovery", bearer(make())))
    (event,) = refusal_events(caplog)
    assert event == {"status": 401, "reason": reason, "claim": claim, "path": "/cds-services"}


def test_a_missing_aud_logs_what_was_expected_and_nothing_received(secure, caplog):
    caplog.set_level("INFO", logger="hematotox.security")
    assert_bare_401(call(secure, "discovery", bearer(ES.token(AUD, aud=None))))
    (event,) = refusal_events(caplog)
    assert event["claim"] == "aud" and event["expected"] == [AUD] and event["received"] == []


def test_logged_audiences_are_bounded(secure, caplog):
    caplog.set_level("INFO", logger="hematotox.security")
    many = [f"https://x{i}.example.org/" + "a" * 500 for i in range(20)]
    assert_bare_401(call(secure, "discovery", bearer(ES.token(many))))
    (event,) = refusal_events(caplog)
    assert len(event["received"]) == 5 and all(len(a) == 200 for a in event["received"])


def test_header_refusals_log_no_claim(secure, caplog):
    caplog.set_level("INFO", logger="hematotox.security")
    assert_bare_401(call(secure, "discovery", bearer(OTHER_KEY.token(AUD))))
    (event,) = refusal_events(caplog)
    assert event == {"status": 401, "reason": "kid", "path": "/cds-services"}


# --------------------------------------------------------------------------- who called
def hook_callers(caplog) -> list[str]:
    return [r.event["caller"] for r in caplog.records if r.name == "hematotox.hook" and r.msg == "hook"]


def test_every_hook_log_line_says_how_the_caller_was_authenticated(secure, tmp_path, caplog):
    caplog.set_level("INFO", logger="hematotox.hook")
    assert call(secure, "service", bearer(ES.token(url("service")))).status_code == 200
    not_ld = hook_request("order-sign", "p", None, orders=[])  # no LD order: the early answer logs too
    assert secure.post(SIGN, json=not_ld, headers=bearer(ES.token(url("service")))).status_code == 200
    assert hook_callers(caplog) == [ISSUER, ISSUER]
    caplog.clear()
    with TestClient(create_app(secure_settings(tmp_path, development_mode=True))) as dev:
        assert call(dev, "service").status_code == 200  # no token: development convenience
        assert call(dev, "service", bearer(ES.token(url("service")))).status_code == 200
    assert hook_callers(caplog) == ["none (development mode)", ISSUER]


# --------------------------------------------------------------------------- the README's snippets
def readme_toml(marker: str) -> dict:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:]]
    (block,) = [b for b in blocks if marker in b]
    return tomllib.loads(block)


def test_the_readme_sandbox_configuration_knows_the_sandbox_key_and_never_fetches_its_jku(tmp_path, caplog):
    config = readme_toml('issuer = "https://sandbox.cds-hooks.org"')
    (client,) = config["trusted_clients"]
    client["jwks_file"] = str(Path(__file__).resolve().parent.parent / client["jwks_file"])
    settings = Settings(**config, feedback={"sqlite_path": str(tmp_path / "f.sqlite3")})
    base = settings.service.public_base_url
    caplog.set_level("INFO", logger="hematotox.security")
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        jku = router.get(SANDBOX_JKU).respond(200, json=jwks(SANDBOX))
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            # The sandbox's kid and jku, signed with a key that is not the sandbox's: the kid is found
            # in the shipped public key set, so the signature decides (and fails), the jku is ignored.
            token = SANDBOX.token(base + DISCOVERY, header={"jku": SANDBOX_JKU})
            assert_bare_401(c.get(DISCOVERY, headers=bearer(token)))
    assert not jku.called
    assert refusal_reasons(caplog) == ["signature"]


def test_the_readme_jku_configuration_fetches_keys_from_the_allowlisted_jku(tmp_path):
    config = readme_toml("the exact URL(s) its tokens name")
    (client,) = config["trusted_clients"]
    (allowed,) = client["jku_allowlist"]
    settings = secure_settings(tmp_path)
    settings.trusted_clients[:] = Settings(trusted_clients=config["trusted_clients"]).trusted_clients
    with respx.mock(assert_all_mocked=True) as router:
        router.get(allowed).respond(200, json=jwks(ES))
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            assert (
                c.get(DISCOVERY, headers=bearer(ES.token(url("discovery"), header={"jku": allowed}))).status_code == 200
            )
            assert_bare_401(c.get(DISCOVERY, headers=bearer(ES.token(url("discovery"), header={"jku": EVIL_JKU}))))
