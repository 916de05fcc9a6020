"""The simulator's routes, one per manifest: method and path from its ``http`` binding.

Nothing here names an action: a new manifest is served as soon as the registry has it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from actions import ActionManifest

__all__ = ["Match", "Route", "RouteTable"]

_PARAM = re.compile(r"\{([^{}/]+)\}")


@dataclass(frozen=True)
class Route:
    """One bound operation: ``GET /models/{model}`` → retrieveModel, with the manifest that binds it."""

    method: str
    template: str
    manifest: ActionManifest
    pattern: re.Pattern[str]

    @property
    def operation_id(self) -> str:
        return self.manifest.openapi.operationId

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"


@dataclass(frozen=True)
class Match:
    """What a request path found: the route (None on a wrong method), its path parameters, the methods the path
    allows (for 405's ``Allow``) and the label it is counted under."""

    route: Route | None
    params: dict[str, str]
    allowed: tuple[str, ...]
    label: str


def _compile(template: str) -> re.Pattern[str]:
    parts, last = [], 0
    for found in _PARAM.finditer(template):
        parts.append(re.escape(template[last:found.start()]))
        parts.append(f"(?P<{found.group(1)}>[^/]+)")
        last = found.end()
    parts.append(re.escape(template[last:]))
    return re.compile("".join(parts) + r"\Z")


class RouteTable:
    """Method + path → route, built from manifests (the registry's, unless a test passes its own)."""

    def __init__(self, manifests: dict[str, ActionManifest] | Any) -> None:
        self.routes: list[Route] = []
        seen: dict[tuple[str, str], str] = {}
        for manifest in manifests.values():
            key = (manifest.http.method, manifest.http.path)
            if key in seen:  # two actions on one endpoint (e.g. a variant): the first answers for both
                continue
            seen[key] = manifest.name
            self.routes.append(Route(manifest.http.method, manifest.http.path, manifest,
                                     _compile(manifest.http.path)))
        # literal paths before templated ones, so /models/list could never be read as /models/{model}
        self.routes.sort(key=lambda route: (route.template.count("{"), route.template))

    def match(self, method: str, path: str) -> Match | None:
        """The route for a request; None when no manifest binds the path at all (404)."""
        allowed: list[str] = []
        template, found_params = "", {}
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if not template:
                template, found_params = route.template, found.groupdict()
            if route.template != template:
                continue
            allowed.append(route.method)
            if route.method == method:
                return Match(route, found.groupdict(), tuple(allowed), route.label)
        if not template:
            return None
        return Match(None, found_params, tuple(sorted(allowed)), f"{method} {template}")

    def label(self, method: str, path: str) -> str:
        """How a request is counted: the bound template (``GET /models/{model}``) or the literal path."""
        match = self.match(method, path)
        return match.label if match else f"{method} {path}"
