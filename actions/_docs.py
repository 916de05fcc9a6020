"""The action reference, generated from the manifests so it can never drift from what runs."""

from __future__ import annotations

import json
from typing import Any

from actions._coerce import resolve_ref
from actions._manifest import ActionManifest

__all__ = ["field_rows", "render_action", "render_reference"]


def _type_text(schema: dict[str, Any], root: dict[str, Any]) -> str:
    schema = resolve_ref(schema, root)
    if "enum" in schema:
        return " | ".join(f"`{v}`" for v in schema["enum"] if v is not None) or "enum"
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        return " or ".join(dict.fromkeys(_type_text(b, root) for b in branches))
    kind = schema.get("type", "any")
    kinds = [kind] if isinstance(kind, str) else list(kind)
    words = []
    for k in kinds:
        if k == "array" and isinstance(schema.get("items"), dict):
            words.append(f"list of {_type_text(schema['items'], root)}")
        elif k == "object" and "title" in schema and schema is not root:
            words.append(schema["title"])
        else:
            words.append(k)
    return " or ".join(words)


def _limits(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minItems", "items ≥"), ("maxItems", "items ≤"),
                       ("maxLength", "length ≤")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "default" in schema:
        parts.append(f"server default {json.dumps(schema['default'])}")
    return ", ".join(parts)


def field_rows(manifest: ActionManifest) -> list[dict[str, str]]:
    """One row per input field: name, type, required, limits, description (CLI help uses it too)."""
    root = manifest.input
    required = set(root.get("required", []))
    rows = []
    for name, raw in manifest.properties.items():
        schema = resolve_ref(raw, root)
        notes = []
        if schema.get("x-options-from"):
            notes.append(f"choices from `{schema['x-options-from']}`")
        if schema.get("x-pack-only"):
            notes.append("pack option, not sent to the API")
        if name in manifest.file_fields:
            notes.append("a file: local path, `@path` or `data:…;base64,…` URL (sent as multipart)")
        if schema.get("deprecated"):
            notes.append("deprecated")
        rows.append({
            "name": name,
            "type": _type_text(schema, root),
            "required": "yes" if name in required else "",
            "limits": _limits(schema),
            "description": " ".join([schema.get("description", schema.get("title", "")).strip(), *notes]).strip(),
        })
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_action(manifest: ActionManifest) -> str:
    http = manifest.http
    lines = [f"## {manifest.title} (`{manifest.name}`)", "", manifest.description.strip(), ""]
    lines.append(f"- HTTP: `{http.method} {http.path}` (OpenAPI `{manifest.openapi.operationId}`)")
    repeatable = "yes" if manifest.is_idempotent else "no"
    lines.append(f"- Celery task: `openai.{manifest.name}`; safe to repeat: {repeatable}")
    if http.stream:
        lines.append(f"- `{http.stream.flag}: true` is consumed as server-sent events and returned assembled.")
    if http.key == "admin":
        lines.append("- Sends the integration's Admin API key (`admin_key`), not its API key.")
    if http.headers:
        lines.append("- Sends " + ", ".join(f"`{name}: {value}`" for name, value in http.headers.items()) + ".")
    if http.pagination:
        how = "the `after` cursor" if http.pagination.style == "cursor" else "the `page` token"
        lines.append(f"- A list: `fetch_all: true` walks every page by {how} and returns all items in order.")
    if http.answer == "empty":
        lines.append("- The API answers with no body: the output is `{\"id\", \"deleted\": true, \"status\"}` for a "
                     "DELETE, `{\"id\", \"ok\": true, \"status\"}` otherwise.")
    elif http.answer == "binary":
        lines.append("- The API answers with bytes: the output gives `content_type`, `bytes` and `sha256`, plus `path` "
                     "with `save_to` (a new file, never overwritten) or `base64` without it.")
    if manifest.deprecated:
        lines.append(f"- Deprecated upstream: {manifest.deprecated}")
    lines.append("")
    rows = field_rows(manifest)
    if rows:
        lines += ["| field | type | required | limits | description |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| `{r['name']}` | {_cell(r['type'])} | {r['required']} | {_cell(r['limits'])} | "
                  f"{_cell(r['description'])} |" for r in rows]
    else:
        lines.append("No input fields.")
    example = manifest.examples[0]
    lines += ["", f"Example ({example.title}):", "", "```json", json.dumps(example.input, indent=2), "```", ""]
    return "\n".join(lines)


def _anchor(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as hyphens."""
    return "".join(c for c in text.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def render_reference(manifests: dict[str, ActionManifest]) -> str:
    """The whole reference: a table of contents by category, then each category's index and its actions."""
    by_category: dict[str, list[ActionManifest]] = {}
    for m in sorted(manifests.values(), key=lambda m: (m.category.lower(), m.name)):
        by_category.setdefault(m.category, []).append(m)
    lines = ["# Action reference", "",
             "Generated from `manifests/*.json` by `openai-pack docs`. Every field also accepts its value "
             "as text (`\"0.7\"`, `\"true\"`, `'[\"a\"]'`); an empty string means \"not given\", and JSON list "
             "text given to a field that takes text or a list is read as the list. NaN, Infinity and text "
             "that is not valid Unicode are refused.", "",
             "Your own actions: put their manifests in a directory named by `OPENAI_PACK_MANIFEST_PATH` "
             "(or ship them in a package with an `openai_pack.manifests` entry point); `openai-pack docs` "
             "then documents them too. A field with `format: binary` is a file, sent as multipart: give a "
             "local path, `@path` or a `data:…;base64,…` URL.", "",
             "Answers: an action whose API call answers with no body returns a small result (`id`, `status`, and "
             "`deleted: true` for a DELETE or `ok: true` otherwise); one that answers with bytes (speech, file "
             "content) returns `content_type`, `bytes` and `sha256`, with `save_to` the `path` of a new file "
             "(written whole, never overwriting one) and without it the bytes as `base64`; `parse: jsonl` reads a "
             "JSONL file (a batch's output) into `records`. A `stream: true` answer is read as it arrives and "
             "returned assembled, in the shape of the answer without streaming.", "",
             f"{len(manifests)} actions in {len(by_category)} categories. Find one from the command line with "
             "`openai-pack actions list --search WORD` or `--category NAME`; deprecated actions are marked "
             "here and listed there only with `--all`.", "",
             "## Contents", ""]
    for category, members in by_category.items():
        lines.append(f"- [{category}](#{_anchor(category)}) ({len(members)})")
    lines.append("")
    for category, members in by_category.items():
        lines += [f"## {category}", "", "| action | title | HTTP |", "| --- | --- | --- |"]
        for m in members:
            mark = " (deprecated)" if m.deprecated else ""
            lines.append(f"| [`{m.name}`](#{_anchor(f'{m.title} ({m.name})')}) | {_cell(m.title)}{mark} | "
                         f"`{m.http.method} {m.http.path}` |")
        lines.append("")
        lines += ["#" + render_action(m) for m in members]  # each action one level below its category
    return "\n".join(lines)
