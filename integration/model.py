"""The integration definition: everything needed to reach one OpenAI(-compatible) account.

An MSP keeps one per customer, so integrations are named values, frozen once built, and the
API key is a ``SecretStr`` that prints as ``**********`` everywhere. This module never reads the key:
``integration.auth`` checks it and fingerprints it.

What a server can do beyond the current OpenAI API (an endpoint OpenAI retired but a compatible
server still serves, say) is a named entry in ``features``; the action concerned reads its own flag
with ``integration.feature(name)``, so this model knows no action.

``provider`` says whose URL scheme applies: OpenAI's (any compatible server, presets included) or Azure
OpenAI's (``azure``: endpoint, dated ``api_version`` or the v1 path, deployments, ``api-key`` header or
Entra ID). ``integration.providers`` turns that into URLs; this module only checks the fields.
``labels`` are free-form tags (a customer id) a workflow step can select an integration by.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
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

__all__ = ["AZURE_KEY_HEADER", "Auth", "AuthPlacement", "AzureSettings", "EntraSettings", "Integration", "Provider",
           "RateLimits", "ReconifySink", "SpendCaps", "Timeouts", "config_error_from"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: The header Azure OpenAI reads a key from.
AZURE_KEY_HEADER = "api-key"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
#: Azure deployment names: letters, digits, '-', '_' and '.' (periods included: 'gpt-4.1-mini').
_DEPLOYMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HTTP_URL = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
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
    #: Azure only: a Microsoft Entra ID token from client credentials (``azure.entra``), as a bearer header.
    entra = "entra"


class Provider(StrEnum):
    """Whose URL scheme applies. Presets only change defaults (base URL, auth, headers) of the OpenAI scheme."""

    openai = "openai"
    azure = "azure"
    ollama = "ollama"
    vllm = "vllm"
    litellm = "litellm"
    openrouter = "openrouter"
    groq = "groq"
    pienteger = "pienteger"


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
        if self.placement in (AuthPlacement.bearer, AuthPlacement.none, AuthPlacement.entra) and self.name:
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


def _http_url(value: str, example: str) -> str:
    value = value.strip().rstrip("/")
    if not _HTTP_URL.match(value):
        raise ValueError(f"must be an http(s) URL without query or fragment, e.g. {example}")
    return value


class EntraSettings(BaseModel):
    """Client credentials for Microsoft Entra ID: the names of the variables holding them, never the values.

    The worker reads them when it needs a token, so the client secret is never stored by the pack.
    ``authority_host`` is for sovereign clouds (``https://login.microsoftonline.us``) and tests; unset, it
    is ``AZURE_AUTHORITY_HOST`` or the public cloud's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id_env: str = "AZURE_TENANT_ID"
    client_id_env: str = "AZURE_CLIENT_ID"
    client_secret_env: str = "AZURE_CLIENT_SECRET"
    authority_host: str | None = None
    scope: str = DEFAULT_ENTRA_SCOPE

    @field_validator("tenant_id_env", "client_id_env", "client_secret_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("authority_host")
    @classmethod
    def _check_authority(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else _http_url(value, DEFAULT_AUTHORITY_HOST)


class AzureSettings(BaseModel):
    """Azure OpenAI: the resource endpoint, the URL mode and the deployments.

    With ``api_version`` (dated mode) requests go to ``{endpoint}/openai/deployments/{deployment}/...`` or
    ``{endpoint}/openai/...`` with ``?api-version=``; without it (v1 mode) to ``{endpoint}/openai/v1/...``
    with the deployment as the model. ``deployments`` maps a model name to the deployment serving it;
    a model not in the map is taken as a deployment name itself.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = Field(description="https://RESOURCE.openai.azure.com (any host: .azure.us, .azure.cn, a gateway).")
    api_version: str | None = None
    deployments: dict[str, str] = Field(default_factory=dict)
    entra: EntraSettings | None = None

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        value = _http_url(value, "https://my-resource.openai.azure.com")
        for suffix in ("/openai/v1", "/openai"):  # the pack adds the path itself
            value = value.removesuffix(suffix)
        return value

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not _API_VERSION.match(value):
            raise ValueError(f"{value!r} is not an api-version such as 2024-10-21 or 2025-04-01-preview "
                             "(leave it out for the v1 path)")
        return value

    @field_validator("deployments")
    @classmethod
    def _check_deployments(cls, value: dict[str, str]) -> dict[str, str]:
        for model, deployment in value.items():
            if not model.strip():
                raise ValueError("a model name in deployments is empty")
            if not _DEPLOYMENT.match(deployment):
                raise ValueError(f"deployment {deployment!r} (for {model!r}) must be 1-64 letters, digits, "
                                 "'-', '_' or '.'")
        return value

    def deployment_for(self, model: str) -> str:
        """The deployment serving ``model``: the map's entry, else the model name itself."""
        return self.deployments.get(model, model)


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
    provider: Provider = Provider.openai
    azure: AzureSettings | None = None
    labels: dict[str, str] = Field(default_factory=dict, description=(
        "Free-form tags (customer=acme) that a workflow step's integration selection can match."))
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
        return _http_url(value, DEFAULT_BASE_URL)

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for label, text in value.items():
            if not _FEATURE_NAME.match(label):
                raise ValueError(f"label {label!r} is not a label name (lower-case letters, digits and '_')")
            if not _LABEL.match(text):
                raise ValueError(f"label {label}'s value must be 1-128 letters, digits or _.:/-")
        return {label: value[label] for label in sorted(value)}

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

    @model_validator(mode="before")
    @classmethod
    def _azure_defaults(cls, data: Any) -> Any:
        """An Azure integration's base URL is its endpoint, and a key goes in the ``api-key`` header."""
        azure_given = isinstance(data, dict) and isinstance(data.get("azure"), dict | AzureSettings)
        if not azure_given or data.get("provider") != Provider.azure:
            return data
        data = dict(data)
        azure = data["azure"]
        endpoint = azure.endpoint if isinstance(azure, AzureSettings) else azure.get("endpoint")
        if isinstance(endpoint, str) and "base_url" not in data:
            data["base_url"] = endpoint.strip().rstrip("/") + "/openai"
        if data.get("auth") is None:
            entra = azure.entra if isinstance(azure, AzureSettings) else azure.get("entra")
            data["auth"] = {"placement": "entra"} if entra is not None else {"placement": "header",
                                                                             "name": AZURE_KEY_HEADER}
        return data

    @model_validator(mode="after")
    def _provider_fields_agree(self) -> Integration:
        if self.provider == Provider.azure and self.azure is None:
            raise ValueError("azure (endpoint, api_version, deployments) is required when provider is 'azure'")
        if self.provider != Provider.azure and self.azure is not None:
            raise ValueError(f"azure settings only apply to provider 'azure', not '{self.provider.value}'")
        entra = self.auth.placement == AuthPlacement.entra
        if entra and (self.azure is None or self.azure.entra is None):
            raise ValueError("auth.placement 'entra' needs provider 'azure' with azure.entra settings")
        if not entra and self.azure is not None and self.azure.entra is not None:
            raise ValueError("azure.entra is set, so auth.placement must be 'entra'")
        if entra and self.api_key is not None:
            raise ValueError("an Entra ID integration sends a token, never a key: leave api_key out")
        return self

    @model_validator(mode="after")
    def _key_matches_placement(self) -> Integration:
        if self.auth.placement not in (AuthPlacement.none, AuthPlacement.entra) and self.api_key is None:
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
    def from_env(cls, environ: Mapping[str, str] | None = None, name: str = "default") -> Integration | None:
        """The default integration from the variables the official SDKs read, or None if no key is set.

        ``OPENAI_API_KEY`` wins; else ``AZURE_OPENAI_ENDPOINT`` with ``AZURE_OPENAI_API_KEY`` (or a ready
        ``AZURE_OPENAI_AD_TOKEN``, sent as a bearer token) and ``OPENAI_API_VERSION`` (dated mode; unset: v1).
        ``OPENAI_ADMIN_KEY`` (the name OpenAI's own examples use) is the OpenAI integration's Admin API key.
        """
        env = os.environ if environ is None else environ
        key = api_key_from_text(env.get("OPENAI_API_KEY", ""), field="OPENAI_API_KEY")
        if key is None:
            return cls._azure_from_env(env, name)
        admin_key = api_key_from_text(env.get("OPENAI_ADMIN_KEY", ""), field="OPENAI_ADMIN_KEY")
        fields: dict[str, Any] = {"name": name, "api_key": key, "admin_key": admin_key,
                                  "organization_id": env.get("OPENAI_ORG_ID") or None,
                                  "project_id": env.get("OPENAI_PROJECT_ID") or None}
        if env.get("OPENAI_BASE_URL"):
            fields["base_url"] = env["OPENAI_BASE_URL"]
        return cls.build(**fields)

    @classmethod
    def _azure_from_env(cls, env: Mapping[str, str], name: str) -> Integration | None:
        endpoint = env.get("AZURE_OPENAI_ENDPOINT", "").strip()
        if not endpoint:
            return None
        key = api_key_from_text(env.get("AZURE_OPENAI_API_KEY", ""), field="AZURE_OPENAI_API_KEY")
        token = api_key_from_text(env.get("AZURE_OPENAI_AD_TOKEN", ""), field="AZURE_OPENAI_AD_TOKEN")
        if key is None and token is None:
            return None
        if key is not None and token is not None:
            raise ConfigError("AZURE_OPENAI_API_KEY and AZURE_OPENAI_AD_TOKEN are both set: keep one (the "
                              "api-key header and a bearer token are never both sent)", field="AZURE_OPENAI_AD_TOKEN")
        auth = {"placement": "header", "name": AZURE_KEY_HEADER} if key is not None else {"placement": "bearer"}
        return cls.build(name=name, provider="azure", api_key=key or token, auth=auth,
                         azure={"endpoint": endpoint, "api_version": env.get("OPENAI_API_VERSION") or None})

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
