"""The integration definition: everything needed to reach one OpenAI(-compatible) account.

An MSP keeps one per customer, so integrations are named values, frozen once built, and the
API key is a ``SecretStr`` that prints as ``**********`` everywhere. This module never reads the key:
``integration.auth`` checks it and fingerprints it.

What a server can do beyond the current OpenAI API (an endpoint OpenAI retired but a compatible
server still serves, say) is a named entry in ``features``; the action concerned reads its own flag
with ``integration.feature(name)``, so this model knows no action.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from integration.auth import api_key_from_text, checked_api_key, key_fingerprint
from integration.errors import ConfigError

__all__ = ["Auth", "AuthPlacement", "Integration", "RateLimits", "ReconifySink", "SpendCaps", "Timeouts",
           "config_error_from"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_INTEGRATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FEATURE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Fields older versions of the pack stored, and the feature flag each one became.
_FIELDS_NOW_FEATURES = {"legacy_edits": "legacy_edits"}


class AuthPlacement(StrEnum):
    """Where the key goes: OpenAI's bearer header, a proxy's own header, a query parameter, or nowhere."""

    bearer = "bearer"
    header = "header"
    query = "query"
    none = "none"


class Auth(BaseModel):
    """Key placement, after Airbyte's RequestOption and node-red's Service Host."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    placement: AuthPlacement = AuthPlacement.bearer
    name: str | None = Field(None, description="Header or query parameter name (header/query placements).")
    prefix: str = Field("", description="Text put before the key in a custom header, e.g. 'Token '.")

    @model_validator(mode="after")
    def _check_combination(self) -> Auth:
        if self.placement in (AuthPlacement.header, AuthPlacement.query) and not self.name:
            raise ValueError(f"auth.name is required when auth.placement is '{self.placement.value}'")
        if self.placement == AuthPlacement.header and self.name and not _HEADER_NAME.match(self.name):
            raise ValueError(f"auth.name {self.name!r} is not a valid HTTP header name")
        if self.placement in (AuthPlacement.bearer, AuthPlacement.none) and self.name:
            raise ValueError(f"auth.name is only used with the header or query placements, "
                             f"not '{self.placement.value}'")
        if self.prefix and self.placement != AuthPlacement.header:
            raise ValueError("auth.prefix is only used with the header placement")
        return self


class Timeouts(BaseModel):
    """Seconds; read is long because a big completion can take minutes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect: Annotated[float, Field(gt=0, le=300)] = 10.0
    read: Annotated[float, Field(gt=0, le=3600)] = 600.0
    write: Annotated[float, Field(gt=0, le=3600)] = 60.0
    pool: Annotated[float, Field(gt=0, le=3600)] = 30.0


class RateLimits(BaseModel):
    """The budget an account allows; all workers share it (enforced by the workers layer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_minute: Annotated[int, Field(gt=0)] | None = None
    tokens_per_minute: Annotated[int, Field(gt=0)] | None = None


class SpendCaps(BaseModel):
    """Most this account may spend, in estimated USD, per UTC day and month (enforced by the workers layer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    daily_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    monthly_usd: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


class ReconifySink(BaseModel):
    """This integration's own Reconify application (overrides ``OPENAI_PACK_RECONIFY_URL`` and the keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = None
    app_key: SecretStr | None = Field(None, json_schema_extra={"writeOnly": True})
    api_key: SecretStr | None = Field(None, json_schema_extra={"writeOnly": True})

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.match(r"^https?://[^/\s?#]+(/[^\s#]*)?$", value.strip()):
            raise ValueError("must be an http(s) URL, e.g. https://track.reconify.com/...")
        return value.strip()

    @field_validator("app_key", "api_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        return checked_api_key(value)

    def public_dict(self) -> dict[str, Any]:
        return {"url": self.url, "has_app_key": self.app_key is not None, "has_api_key": self.api_key is not None}


class Integration(BaseModel):
    """One OpenAI account (or compatible server) and how to talk to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "default"
    api_key: SecretStr | None = Field(None, json_schema_extra={"writeOnly": True})
    admin_key: SecretStr | None = Field(None, json_schema_extra={"writeOnly": True}, description=(
        "An Admin API key, sent instead of api_key by the /organization actions only (usage, costs, projects, "
        "users, audit logs). Sealed and redacted like api_key."))
    organization_id: str | None = Field(None, description="Sent as OpenAI-Organization.")
    project_id: str | None = Field(None, description="Sent as OpenAI-Project.")
    base_url: str = DEFAULT_BASE_URL
    auth: Auth = Auth()
    timeout: Timeouts = Timeouts()
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    extra_headers: dict[str, str] = Field(default_factory=dict)
    features: dict[str, bool] = Field(default_factory=dict, description=(
        "What this server does beyond the current OpenAI API, by name; each action documents the "
        "flag it reads (e.g. legacy_edits: the server still serves POST /edits)."))
    rate_limits: RateLimits = RateLimits()
    spend_caps: SpendCaps = SpendCaps()
    reconify: ReconifySink | None = None

    _fingerprint: tuple[SecretStr, str] | None = PrivateAttr(None)
    _admin_fingerprint: tuple[SecretStr, str] | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _old_fields_become_features(cls, data: Any) -> Any:
        """A stored entry or caller from before ``features`` existed keeps its meaning."""
        if not isinstance(data, dict) or not _FIELDS_NOW_FEATURES.keys() & data.keys():
            return data
        data = dict(data)
        features = dict(data.get("features") or {})
        for old, flag in _FIELDS_NOW_FEATURES.items():
            if old in data:
                value = data.pop(old)
                if value:
                    features.setdefault(flag, bool(value))
        data["features"] = features
        return data

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _INTEGRATION_NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be an http(s) URL without query or fragment, e.g. https://api.openai.com/v1")
        return value

    @field_validator("api_key", "admin_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        """Blank means no key; a control character, space or non-ASCII character is refused."""
        return checked_api_key(value)

    @field_validator("features")
    @classmethod
    def _check_features(cls, value: dict[str, bool]) -> dict[str, bool]:
        for flag in value:
            if not _FEATURE_NAME.match(flag):
                raise ValueError(f"{flag!r} is not a feature name (lower-case letters, digits and '_')")
        return {flag: value[flag] for flag in sorted(value)}

    @field_validator("organization_id", "project_id")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("extra_headers")
    @classmethod
    def _check_extra_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header in value:
            if not _HEADER_NAME.match(header):
                raise ValueError(f"{header!r} is not a valid HTTP header name")
            if header.lower() in {"authorization", "openai-organization", "openai-project", "content-length"}:
                raise ValueError(f"{header!r} is set by the pack itself; use the matching integration field")
        return value

    @model_validator(mode="after")
    def _key_matches_placement(self) -> Integration:
        if self.auth.placement != AuthPlacement.none and self.api_key is None:
            raise ValueError(f"api_key is required when auth.placement is '{self.auth.placement.value}' "
                             "(use placement 'none' for a local server without auth)")
        return self

    @classmethod
    def build(cls, **fields: Any) -> Integration:
        """Construct, turning pydantic's errors into one ConfigError that names the field."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise config_error_from(exc) from None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, name: str = "default") -> Integration | None:
        """The default integration from the variables the official SDK reads, or None if no key is set.

        ``OPENAI_ADMIN_KEY`` (the name OpenAI's own examples use) is its Admin API key.
        """
        env = os.environ if environ is None else environ
        key = api_key_from_text(env.get("OPENAI_API_KEY", ""), field="OPENAI_API_KEY")
        if key is None:
            return None
        admin_key = api_key_from_text(env.get("OPENAI_ADMIN_KEY", ""), field="OPENAI_ADMIN_KEY")
        fields: dict[str, Any] = {"name": name, "api_key": key, "admin_key": admin_key,
                                  "organization_id": env.get("OPENAI_ORG_ID") or None,
                                  "project_id": env.get("OPENAI_PROJECT_ID") or None}
        if env.get("OPENAI_BASE_URL"):
            fields["base_url"] = env["OPENAI_BASE_URL"]
        return cls.build(**fields)

    def feature(self, name: str) -> bool:
        """Whether this server offers the named extra (False unless the integration says so)."""
        return self.features.get(name, False)

    @property
    def key_fingerprint(self) -> str | None:
        """A per-process keyed digest of the key, computed once: tells keys apart without reading them."""
        secret = self.api_key
        if secret is None:
            return None
        cached = self._fingerprint
        if cached is None or cached[0] is not secret:  # a model_copy(update=...) may have swapped the key
            cached = (secret, key_fingerprint(secret) or "")
            self._fingerprint = cached
        return cached[1]

    @property
    def admin_key_fingerprint(self) -> str | None:
        """The Admin API key's keyed digest (see ``key_fingerprint``)."""
        secret = self.admin_key
        if secret is None:
            return None
        cached = self._admin_fingerprint
        if cached is None or cached[0] is not secret:
            cached = (secret, key_fingerprint(secret) or "")
            self._admin_fingerprint = cached
        return cached[1]

    def public_dict(self) -> dict[str, Any]:
        """What may be shown or stored in clear: everything but the keys, plus whether each is set."""
        data = self.model_dump(mode="json", exclude={"api_key", "admin_key", "reconify"})
        data["has_api_key"] = self.api_key is not None
        data["has_admin_key"] = self.admin_key is not None
        if self.reconify is not None:
            data["reconify"] = self.reconify.public_dict()
        return data


def config_error_from(exc: ValidationError) -> ConfigError:
    """One readable ConfigError from a pydantic ValidationError (input values are never echoed)."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or None
        reason = err["msg"].removeprefix("Value error, ")
        problems.append({"field": field or "integration", "reason": reason})
    first = problems[0]
    where = "integration" if first["field"] == "integration" else f"integration {first['field']}"
    return ConfigError(f"{where}: {first['reason']}", field=first["field"], problems=problems)
