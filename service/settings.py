"""The one settings object of the service (the integrators' contract).

Read from the TOML file named by ``HEMATOTOX_CONFIG``; any key can be overridden from the
environment with the ``HEMATOTOX_`` prefix and ``__`` between levels, e.g.
``HEMATOTOX_FHIR__DEADLINE_SECONDS=2``. Environment wins over the file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field
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
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 1_048_576


class TrustedClient(BaseModel):
    issuer: str
    jwks_file: str | None = None
    jwks_url: str | None = None
    # `jku` header values accepted for this issuer (exact URLs).
    jku_allowlist: list[str] = Field(default_factory=list)


class FhirSection(BaseModel):
    allowed_servers: list[str] = Field(default_factory=list)
    # One overall budget for all fallback queries of one hook.
    deadline_seconds: float = 3.0
    connect_timeout_seconds: float = 1.0
    # A server that keeps returning `next` links is cut off after this many pages per query.
    max_pages: int = 10
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


class FeedbackSection(BaseModel):
    # SQLite by default; a PostgreSQL URL switches the store to PostgreSQL.
    database_url: str | None = None
    sqlite_path: str = "var/feedback.sqlite3"


class CacheSection(BaseModel):
    # order-select results reused at order-sign for the same patient and LD orders.
    ttl_seconds: float = 300.0
    max_entries: int = 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HEMATOTOX_", env_nested_delimiter="__", extra="ignore"
    )

    service: ServiceSection = Field(default_factory=ServiceSection)
    trusted_clients: list[TrustedClient] = Field(default_factory=list)
    fhir: FhirSection = Field(default_factory=FhirSection)
    clinical: ClinicalSection = Field(default_factory=ClinicalSection)
    feedback: FeedbackSection = Field(default_factory=FeedbackSection)
    cache: CacheSection = Field(default_factory=CacheSection)

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
