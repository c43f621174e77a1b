"""The one settings object of the service (the integrators' contract).

Read from the TOML file named by ``HEMATOTOX_CONFIG``; any key can be overridden from the
environment with the ``HEMATOTOX_`` prefix and ``__`` between levels, e.g.
``HEMATOTOX_FHIR__DEADLINE_SECONDS=2``. Environment wins over the file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class ServiceSection(BaseModel):
    # The URL the EHR calls; JWT `aud` is checked against URLs built from it.
    public_base_url: str = "http://127.0.0.1:8080"
    # Development mode: hooks are answered without a trusted client and http FHIR servers are
    # allowed. Never on in production; the service logs a loud warning when it is.
    development_mode: bool = False
    # Facility time zone: the 3-day lab window is counted in local calendar days (spec §1.5).
    timezone: str = "UTC"
    # Browser origins allowed to call the service (e.g. "https://sandbox.cds-hooks.org"): an explicit
    # list, "*" is refused. Credentials (cookies) are never allowed; the EHR's JWT is a header.
    cors_origins: list[str] = Field(default_factory=list)
    # Larger request bodies are refused with 413 before they are read.
    max_body_bytes: int = Field(default=1_048_576, gt=0)

    @field_validator("cors_origins")
    @classmethod
    def _explicit_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if (
                origin == "*"
                or parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or "@" in parts.netloc
            ):
                raise ValueError(f"cors_origins: {origin!r} is not an origin like https://host[:port]")
        return [o.rstrip("/") for o in origins]


class TrustedClient(BaseModel):
    """One EHR (JWT issuer) allowed to call the service. Its keys come from `jwks_file` (re-read on an
    unknown `kid`) or `jwks_url` (fetched, cached, refetched on an unknown `kid`), and from a token's
    `jku` header only when that URL is in `jku_allowlist`."""

    issuer: str = Field(min_length=1)
    jwks_file: str | None = None
    jwks_url: str | None = None
    # `jku` header values accepted for this issuer (exact URLs).
    jku_allowlist: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if self.jwks_file and self.jwks_url:
            raise ValueError(f"trusted client {self.issuer!r}: give jwks_file or jwks_url, not both")
        if not (self.jwks_file or self.jwks_url or self.jku_allowlist):
            raise ValueError(f"trusted client {self.issuer!r} needs jwks_file, jwks_url or jku_allowlist")
        return self


class AuthSection(BaseModel):
    """How the EHR's JWT is checked (see cds_hooks/jwt_auth.py)."""

    # Clock skew allowed on exp / nbf / iat.
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    # A token whose exp is further in the future than this is refused: it bounds how long a `jti` must
    # be remembered. CDS Hooks clients sign short-lived tokens (the spec suggests 5 minutes).
    max_token_lifetime_seconds: int = Field(default=3600, gt=0)
    # Seen `jti`s are remembered in memory, per process, until their token expires. Size it above the
    # peak number of calls per max_token_lifetime_seconds.
    jti_cache_size: int = Field(default=100_000, gt=0)
    # A fetched JWKS (jwks_url / jku) is reused this long; an unknown `kid` refetches it (rotation),
    # at most once per jwks_min_refresh_seconds per URL or file.
    jwks_cache_seconds: float = Field(default=3600.0, gt=0)
    jwks_min_refresh_seconds: float = Field(default=30.0, ge=0)
    jwks_fetch_timeout_seconds: float = Field(default=3.0, gt=0)
    jwks_max_bytes: int = Field(default=256 * 1024, gt=0)


class FhirSection(BaseModel):
    allowed_servers: list[str] = Field(default_factory=list)
    # One overall budget for all fallback queries of one hook.
    deadline_seconds: float = 3.0
    connect_timeout_seconds: float = 1.0
    # A server that keeps returning `next` links is cut off after this many pages per query (the key
    # then fails: never partial labs). The HT lab searches are read to the end, so this is sized for
    # a long history: 30 pages of 50-100 results.
    max_pages: int = 30
    max_connections: int = 50


class ClinicalSection(BaseModel):
    # Lab results older than the 3-day window but inside this lookback are "stale" (spec §1.5).
    lookback_days: int = 30
    # Ferritin ULN used for the DESCAR-T "elevated ferritin" flag when the lab gives no
    # reference range. No default: the DESCAR-T threshold is unknown (spec §3.1, UNVERIFIED).
    ferritin_uln_ng_ml: float | None = None
    # Points at the exact cut-offs: the [SEED-M] inclusive wording (default), or the strict signs
    # recalled for the original 2021 table (UNVERIFIED, spec §1.3 item 4).
    inclusive_boundaries: bool = True
    # Preliminary results are not used unless a site decides otherwise (spec §5.1).
    accept_preliminary: bool = False
    # Factors into the canonical unit for units the spec leaves unusable by default, keyed
    # "analyte:unit", e.g. {"crp:nmol/L" = 0.0105}. UNVERIFIED factors: a governance decision.
    unit_factors: dict[str, float] = Field(default_factory=dict)
    # Extra local codes an EHR sends, merged into the shipped value sets.
    extra_loinc: dict[str, list[str]] = Field(default_factory=dict)
    extra_ld_rxnorm: dict[str, list[str]] = Field(default_factory=dict)
    # CAR-T product codes (keyed by product, e.g. "axicabtagene ciloleucel") and supportive drug codes
    # (keyed by drug, e.g. "filgrastim", "valacyclovir"; classes in data/valuesets.json "drug_classes").
    extra_cart_rxnorm: dict[str, list[str]] = Field(default_factory=dict)
    extra_drug_rxnorm: dict[str, list[str]] = Field(default_factory=dict)
    # SNOMED CT descendants of 73211009 |Diabetes mellitus| the EHR uses beyond the shipped list
    # (no terminology server here to expand the ECL `<< 73211009`).
    extra_diabetes_snomed: list[str] = Field(default_factory=list)


class DrugChoice(BaseModel):
    rxnorm: str
    display: str
    dose: str


class RecommendationsSection(BaseModel):
    # Item ids of clinical-spec §4 a site switches off, e.g. ["R5", "R11"].
    disabled: list[str] = Field(default_factory=list)
    # Show HT-high items with one-click orders for an indeterminate score ("possible HT-high").
    # Our extrapolation (spec §1.6): off by default, the items are then listed as pending.
    treat_indeterminate_as_high: bool = False
    # The blood-count schedule ordered for HT-high (spec R12: no source gives one).
    monitoring_schedule: str | None = None
    # Preferred products: keys "gcsf" and "antiviral".
    drugs: dict[str, DrugChoice] = Field(default_factory=dict)
    # m-EASIX with CRP in mg/L instead of mg/dL (the mg/dL convention is UNVERIFIED).
    m_easix_crp_mg_per_l: bool = False


class FollowUpSection(BaseModel):
    """The `hematotox-follow-up` service (patient-view during a course, clinical-spec §9.6)."""

    # F2: the current run of ANC < 0.5 that counts as "prolonged" (sure days) [DESIGN, configurable].
    prolonged_run_days: int = Field(default=7, ge=1, le=60)
    # F5: a CBC with differential is due when the latest ANC is older than this many days
    # [EXTRAPOLATION]: HT-high days 0–30 / days 31–90; otherwise days 0–30 (no reminder after).
    cbc_interval_high_early_days: int = Field(default=3, ge=1, le=100)
    cbc_interval_high_late_days: int = Field(default=8, ge=1, le=100)
    cbc_interval_low_early_days: int = Field(default=7, ge=1, le=100)
    # One-click drafts only for drugs the site names (keys "fluoroquinolone", "azole", "gcsf"); a
    # `[recommendations.drugs]` entry of the same key counts too. Without one, the item is text.
    drugs: dict[str, DrugChoice] = Field(default_factory=dict)
    # Sites that record the CAR-T infusion as a Procedure name its codes as "system|code" (none
    # shipped); the discovery prefetch then asks for those Procedures as well.
    infusion_procedure_codes: list[str] = Field(default_factory=list)
    # How many CAR-T administrations the first-stage search asks for, newest first (the last 100
    # days are picked in our code: prefetch templates cannot do date arithmetic).
    infusion_count: int = Field(default=10, ge=1, le=100)

    @field_validator("drugs")
    @classmethod
    def _known_drug_keys(cls, drugs: dict[str, DrugChoice]) -> dict[str, DrugChoice]:
        if unknown := sorted(set(drugs) - {"fluoroquinolone", "azole", "gcsf"}):
            raise ValueError(f"follow_up.drugs: unknown keys {unknown} (fluoroquinolone, azole, gcsf)")
        return drugs

    @field_validator("infusion_procedure_codes")
    @classmethod
    def _system_and_code(cls, codes: list[str]) -> list[str]:
        for c in codes:
            system, sep, code = c.partition("|")
            if not (sep and system and code) or "," in c:
                raise ValueError(f"follow_up.infusion_procedure_codes: {c!r} is not 'system|code'")
        return codes


class FeedbackSection(BaseModel):
    # SQLite by default; a PostgreSQL URL switches the store to PostgreSQL
    # ("postgresql://user:password@host:5432/db"; the asyncpg driver is used).
    database_url: str | None = None
    # SQLite file (WAL mode), relative to the working directory unless absolute.
    sqlite_path: str = "var/feedback.sqlite3"


class CacheSection(BaseModel):
    # order-select results reused at order-sign for the same patient and LD orders.
    ttl_seconds: float = 300.0
    max_entries: int = 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEMATOTOX_", env_nested_delimiter="__", extra="ignore")

    service: ServiceSection = Field(default_factory=ServiceSection)
    trusted_clients: list[TrustedClient] = Field(default_factory=list)
    auth: AuthSection = Field(default_factory=AuthSection)
    fhir: FhirSection = Field(default_factory=FhirSection)
    clinical: ClinicalSection = Field(default_factory=ClinicalSection)
    feedback: FeedbackSection = Field(default_factory=FeedbackSection)
    cache: CacheSection = Field(default_factory=CacheSection)
    recommendations: RecommendationsSection = Field(default_factory=RecommendationsSection)
    follow_up: FollowUpSection = Field(default_factory=FollowUpSection)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get("HEMATOTOX_CONFIG")
        if path:
            if not Path(path).is_file():
                raise FileNotFoundError(f"HEMATOTOX_CONFIG names no file: {path}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    return Settings()
