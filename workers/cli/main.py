"""``openai-pack``: the command line over actions, integrations, the simulator, workflows and workers.

Output contract for scripts: results are JSON on stdout; a failure is a JSON error on stderr with
exit code 2 for bad input or configuration and 1 for an API or transport failure. Commands raise
the pack's errors; ``main()`` is the one place that turns them into that output (``boundary``).

Module layout, imports pointing one way: ``main`` (this: the root app, actions, run, integrations,
simulate, docs) registers ``workflows`` (worker, workflow, runs) and ``serve`` (serve, beat); all of
them print through ``output`` and read options through ``inputs``, which import none of them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import SecretStr
from rich.table import Table

import actions
from actions import field_rows, render_action, render_reference
from actions.simulator.options import CONTROL_ROUTE_HELP, DEFAULT_PORT, Placement
from actions.simulator.options import HELP as SIM_HELP
from integration.auth import api_key_from_text
from integration.errors import ConfigError, InputError
from integration.model import Integration, Provider
from integration.redact import install_log_redaction
from integration.store import IntegrationStore, open_store, resolve
from workers.cli import boundary
from workers.cli.console import register as register_console_commands
from workers.cli.inputs import read_json_object
from workers.cli.output import console, emit
from workers.cli.serve import register as register_serve_commands
from workers.cli.spec import register as register_spec_commands
from workers.cli.usage import register as register_usage_commands
from workers.cli.workflows import register as register_workflow_commands

app = typer.Typer(help="OpenAI actions for workflow automation.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
actions_app = typer.Typer(help="List and describe actions.", no_args_is_help=True)
integrations_app = typer.Typer(help="Manage integrations (one per customer or account).", no_args_is_help=True)
app.add_typer(actions_app, name="actions")
app.add_typer(integrations_app, name="integrations")


def _usage_error(field: str, reason: str) -> NoReturn:
    raise InputError([{"field": field, "reason": reason}])


# ---------------------------------------------------------------- actions


@actions_app.command("list")
def actions_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    category: Annotated[str | None, typer.Option("--category", metavar="C",
                                                 help="Only this category (any case), e.g. 'Vector stores'.")] = None,
    search: Annotated[str | None, typer.Option("--search", metavar="WORD", help="Only actions whose name, title, "
                                               "category, path or description contains WORD (any case).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include deprecated actions (hidden by default).")] = False,
) -> None:
    """Every action: the pack's own and those of OPENAI_PACK_MANIFEST_PATH and installed extensions."""
    manifests = actions.registry()  # a broken extra manifest directory: a JSON error naming it, exit 2
    categories = sorted({m.category for m in manifests.values()}, key=str.lower)
    if category is not None and category.lower() not in {c.lower() for c in categories}:
        _usage_error("--category", f"{category!r} is not a category; the categories are: {', '.join(categories)}")
    word = (search or "").lower()
    chosen = [m for m in manifests.values()
              if (show_all or not m.deprecated)
              and (category is None or m.category.lower() == category.lower())
              and word in " ".join((m.name, m.title, m.category, m.http.path, m.description)).lower()]
    if as_json:
        emit([{"name": m.name, "title": m.title, "category": m.category, "method": m.http.method,
               "path": m.http.path, "idempotent": m.is_idempotent, "deprecated": bool(m.deprecated)}
              for m in chosen])
        return
    table = Table("action", "title", "category", "HTTP")
    for m in chosen:
        table.add_row(m.name, m.title + (" (deprecated)" if m.deprecated else ""), m.category,
                      f"{m.http.method} {m.http.path}")
    console.print(table)


@actions_app.command("show")
def actions_show(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest.")] = False,
) -> None:
    """An action's fields, limits and example."""
    manifest = actions.get(name)
    if as_json:
        emit(manifest.model_dump(mode="json"))
        return
    console.print(f"[bold]{manifest.title}[/bold] ({manifest.name}): {manifest.description}")
    console.print(f"{manifest.http.method} {manifest.http.path}")
    table = Table("field", "type", "required", "limits", "description", show_lines=False)
    for row in field_rows(manifest):
        table.add_row(row["name"], row["type"], row["required"], row["limits"], row["description"])
    console.print(table)
    console.print("Example input:")
    console.print_json(json.dumps(manifest.examples[0].input))


@actions_app.command("options")
def actions_options(
    name: str,
    field: str,
    integration: Annotated[str | None, typer.Option(help="Integration to ask.")] = None,
) -> None:
    """The choices of a field filled from another action (e.g. model ids from list_models)."""
    manifest = actions.get(name)
    schema = manifest.properties.get(field)
    if schema is None:
        _usage_error(field, f"is not a field of {name}")
    source = schema.get("x-options-from")
    if not source:
        _usage_error(field, "has no dynamic choices (no x-options-from in its manifest)")
    listing = actions.run(source, {}, integration)
    emit(sorted(item.get("id") for item in listing.get("data", []) if isinstance(item, dict)))


@actions_app.command("docs", hidden=True)
def actions_docs() -> None:
    """Alias of ``openai-pack docs``."""
    docs()


# ---------------------------------------------------------------- run


def _read_input(raw: str | None) -> dict[str, Any]:
    """``--input`` as JSON text or ``@file``: strict UTF-8 and strict JSON (no NaN, bounded depth)."""
    return read_json_object(raw, "--input")


def _apply_sets(inputs: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _usage_error("--set", f"{item!r} is not field=value")
        if value.startswith("@"):
            value = actions.read_text_file(value[1:], key)
        inputs[key] = value  # a string, coerced by the field's schema like any workflow input
    return inputs


@app.command("run")
def run_action(
    name: str,
    input_: Annotated[str | None, typer.Option("--input", "-i", help="JSON object, or @file.json.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="field=value (value as text, or @file).")
    ] = None,
    integration: Annotated[str | None, typer.Option(help="Integration name (default: the default one).")] = None,
) -> None:
    """Run one action and print its output as JSON."""
    install_log_redaction()
    inputs = _apply_sets(_read_input(input_), set_ or [])
    output = actions.run(name, inputs, integration)
    emit(output)


# ---------------------------------------------------------------- integrations


def _store() -> IntegrationStore:
    return open_store()


def _read_key(key_env: str | None, key_stdin: bool) -> SecretStr | None:
    """The key as given: a CR, a control character or a second stdin line is refused, never trimmed."""
    if key_env and key_stdin:
        _usage_error("--key-env", "use either --key-env or --key-stdin, not both")
    if key_env:
        key = api_key_from_text(os.environ.get(key_env, ""), field=key_env)
        if key is None:
            raise ConfigError(f"environment variable {key_env} is empty or not set", field="api_key")
        return key
    if key_stdin:  # a pipe is read to the end, so a second line is seen; a terminal gives one line
        text = sys.stdin.readline() + ("" if sys.stdin.isatty() else sys.stdin.read())
        return api_key_from_text(text, field="--key-stdin", line_ending=True)
    return None


def _read_admin_key(variable: str | None) -> SecretStr | None:
    """The Admin API key from the named environment variable (never an argument: argv is visible to all)."""
    if not variable:
        return None
    key = api_key_from_text(os.environ.get(variable, ""), field=variable)
    if key is None:
        raise ConfigError(f"environment variable {variable} is empty or not set", field="admin_key")
    return key


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``KEY=VALUE`` options (repeatable) as a dict; a malformed one is named."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            _usage_error(option, f"{item!r} is not KEY=VALUE")
        pairs[key.strip()] = value.strip()
    return pairs


@integrations_app.command("add")
def integrations_add(
    name: str,
    key_env: Annotated[str | None, typer.Option(help="Read the API key from this environment variable.")] = None,
    key_stdin: Annotated[bool, typer.Option(help="Read the API key from the first line of stdin.")] = False,
    admin_key_env: Annotated[str | None, typer.Option(help=(
        "Read the Admin API key (sent by the /organization actions only) from this environment variable, "
        "e.g. OPENAI_ADMIN_KEY."))] = None,
    organization_id: Annotated[str | None, typer.Option("--org", help="OpenAI-Organization.")] = None,
    project_id: Annotated[str | None, typer.Option("--project", help="OpenAI-Project.")] = None,
    base_url: Annotated[str | None, typer.Option(help="API base URL, including /v1.")] = None,
    provider: Annotated[str, typer.Option(help="openai | azure | a preset: ollama, vllm, litellm, openrouter, "
                                               "groq, pienteger (see docs/providers.md).")] = "openai",
    endpoint: Annotated[str | None, typer.Option(help="Azure: https://RESOURCE.openai.azure.com (any host).")] = None,
    api_version: Annotated[str | None, typer.Option(help="Azure: dated api-version, e.g. 2024-10-21 "
                                                         "(leave out for the /openai/v1 path).")] = None,
    deployment: Annotated[list[str] | None, typer.Option(metavar="MODEL=DEPLOYMENT",
                                                         help="Azure: the deployment serving a model.")] = None,
    auth: Annotated[str | None, typer.Option(help="bearer | header | query | none | entra (Azure).")] = None,
    auth_name: Annotated[str | None, typer.Option(help="Header or query parameter name.")] = None,
    auth_prefix: Annotated[str, typer.Option(help="Text before the key in a custom header.")] = "",
    tenant_env: Annotated[str, typer.Option(help="Entra: variable holding the tenant id.")] = "AZURE_TENANT_ID",
    client_id_env: Annotated[str, typer.Option(help="Entra: variable holding the client id.")] = "AZURE_CLIENT_ID",
    client_secret_env: Annotated[str, typer.Option(help="Entra: variable holding the client secret.")
                                 ] = "AZURE_CLIENT_SECRET",
    authority_host: Annotated[str | None, typer.Option(help="Entra: authority for sovereign clouds "
                                                            "(default AZURE_AUTHORITY_HOST, else the public cloud).")
                              ] = None,
    entra_scope: Annotated[str | None, typer.Option(help="Entra: token scope (e.g. the .azure.us one).")] = None,
    header: Annotated[list[str] | None, typer.Option(metavar="NAME=VALUE",
                                                     help="An extra header on every request (repeatable).")] = None,
    label: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE",
                                                    help="A label steps can select on, e.g. customer=acme.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Read timeout in seconds.")] = None,
    max_retries: Annotated[int | None, typer.Option(help="Retries of 429/5xx answers.")] = None,
    legacy_edits: Annotated[bool, typer.Option(help="The server still serves POST /edits.")] = False,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute the account allows.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute the account allows.")] = None,
    daily_cap_usd: Annotated[float | None, typer.Option(help="Spend cap per UTC day, estimated USD.")] = None,
    monthly_cap_usd: Annotated[float | None, typer.Option(help="Spend cap per UTC month, estimated USD.")] = None,
    reconify_url: Annotated[str | None, typer.Option(help="This customer's Reconify endpoint.")] = None,
    reconify_keys_env: Annotated[str | None, typer.Option(help="Prefix of two variables holding this customer's "
                                                          "Reconify keys: PREFIX_APP_KEY and PREFIX_API_KEY.")] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default integration.")] = False,
    replace: Annotated[bool, typer.Option(help="Replace an existing integration of that name.")] = False,
) -> None:
    """Add an integration; the key comes from an environment variable or stdin, never an argument."""
    from integration.providers import PRESETS

    known = {p.value for p in Provider}
    if provider not in known:
        _usage_error("--provider", f"{provider!r} is not a provider; choose one of {', '.join(sorted(known))}")
    preset = PRESETS.get(Provider(provider), {})
    fields: dict[str, Any] = {
        "name": name, "api_key": _read_key(key_env, key_stdin), "admin_key": _read_admin_key(admin_key_env),
        "organization_id": organization_id,
        "project_id": project_id, "provider": provider, "legacy_edits": legacy_edits,
        "rate_limits": {"requests_per_minute": rpm, "tokens_per_minute": tpm}, "labels": _pairs(label, "--label"),
        "extra_headers": {**preset.get("extra_headers", {}), **_pairs(header, "--header")},
    }
    if auth is not None:
        fields["auth"] = {"placement": auth, "name": auth_name, "prefix": auth_prefix}
    elif auth_name or auth_prefix:
        fields["auth"] = {"placement": "header", "name": auth_name, "prefix": auth_prefix}
    elif "auth" in preset:
        fields["auth"] = preset["auth"]
    elif provider != Provider.azure:
        fields["auth"] = {"placement": "bearer"}
    azure_options = {"--endpoint": endpoint, "--api-version": api_version, "--deployment": deployment}
    if provider == Provider.azure:
        if not endpoint:
            _usage_error("--endpoint", "is required with --provider azure (https://RESOURCE.openai.azure.com)")
        if base_url:
            _usage_error("--base-url", "does not apply to --provider azure: give --endpoint")
        entra = None
        if auth == "entra":
            entra = {"tenant_id_env": tenant_env, "client_id_env": client_id_env,
                     "client_secret_env": client_secret_env, "authority_host": authority_host}
            if entra_scope:
                entra["scope"] = entra_scope
        fields["azure"] = {"endpoint": endpoint, "api_version": api_version,
                           "deployments": _pairs(deployment, "--deployment"), "entra": entra}
    else:
        given = [option for option, value in azure_options.items() if value]
        if given:
            _usage_error(given[0], "only applies to --provider azure")
        if auth == "entra":
            _usage_error("--auth", "entra only applies to --provider azure")
        if base_url or preset.get("base_url"):
            fields["base_url"] = base_url or preset["base_url"]
    if timeout is not None:
        fields["timeout"] = {"read": timeout}
    if max_retries is not None:
        fields["max_retries"] = max_retries
    fields["spend_caps"] = {"daily_usd": daily_cap_usd, "monthly_usd": monthly_cap_usd}
    if reconify_url or reconify_keys_env:
        prefix = reconify_keys_env or ""
        fields["reconify"] = {"url": reconify_url,
                              "app_key": os.environ.get(f"{prefix}_APP_KEY") if prefix else None,
                              "api_key": os.environ.get(f"{prefix}_API_KEY") if prefix else None}
    store = _store()
    store.add(Integration.build(**fields), make_default=default, replace=replace)
    emit({"added": name, "default": store.default_name() == name})


@integrations_app.command("list")
def integrations_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The stored integrations (keys are never shown)."""
    store = _store()
    items, default_name = store.list(), store.default_name()
    if as_json:
        emit([{**i.public_dict(), "default": i.name == default_name} for i in items])
        return
    table = Table("name", "default", "provider", "base_url", "auth", "organization", "labels", "key")
    for i in items:
        table.add_row(i.name, "yes" if i.name == default_name else "", i.provider.value, i.base_url,
                      i.auth.placement.value, i.organization_id or "",
                      ", ".join(f"{k}={v}" for k, v in i.labels.items()), "set" if i.api_key else "none")
    console.print(table)


@integrations_app.command("remove")
def integrations_remove(name: str) -> None:
    """Forget an integration."""
    _store().remove(name)
    emit({"removed": name})


@integrations_app.command("check")
def integrations_check(name: Annotated[str | None, typer.Argument(help="Default: the default one.")] = None) -> None:
    """Check the connection and say which actions the endpoint answers: one free probe per group of actions
    (a list, or a body the API refuses with 400), never a paid call. A refused key fails the check."""
    from workers.cli.probe import probe

    emit(probe(resolve(name)))


@integrations_app.command("rotate-key")
def integrations_rotate_key() -> None:
    """Re-encrypt every stored key with the first key of OPENAI_PACK_FERNET_KEYS."""
    count = _store().rotate()
    emit({"rotated": count})


# ---------------------------------------------------------------- simulator and docs


@app.command("simulate", epilog="\n\n".join(f"{route}: {text}" for route, text in CONTROL_ROUTE_HELP)
             + "\n\nSee docs/simulator.md.")
def simulate(
    port: Annotated[int, typer.Option(help=SIM_HELP["port"])] = DEFAULT_PORT,
    latency: Annotated[float, typer.Option(help=SIM_HELP["latency"])] = 0.0,
    api_key_env: Annotated[str | None, typer.Option(metavar="NAME", help=SIM_HELP["api_key_env"])] = None,
    auth: Annotated[Placement, typer.Option(help=SIM_HELP["auth"])] = "bearer",
    auth_name: Annotated[str | None, typer.Option(help=SIM_HELP["auth_name"])] = None,
    auth_prefix: Annotated[str, typer.Option(help=SIM_HELP["auth_prefix"])] = "",
    rate_limit_rpm: Annotated[int | None, typer.Option(help=SIM_HELP["rate_limit_rpm"])] = None,
    no_legacy_edits: Annotated[bool, typer.Option("--no-legacy-edits", help=SIM_HELP["no_legacy_edits"])] = False,
) -> None:
    """Serve the loopback OpenAI API simulator (not the real API) until Ctrl-C."""
    from actions.simulator import serve

    serve(port, latency=latency, api_key_env=api_key_env, auth=auth, auth_name=auth_name, auth_prefix=auth_prefix,
          rate_limit_rpm=rate_limit_rpm, legacy_edits=not no_legacy_edits)


@app.command("docs")
def docs(
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
) -> None:
    """The action reference in Markdown, generated from the manifests."""
    text = render_action(actions.get(action)) if action else render_reference(actions.registry())
    if output:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            _usage_error("--output", f"cannot write {str(output)!r}: {exc.strerror or exc}")
    else:
        sys.stdout.write(text)


register_workflow_commands(app)
register_serve_commands(app)
register_spec_commands(app)
register_console_commands(app)
register_usage_commands(app)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point, and the CLI's one error boundary (see ``workers.cli.boundary``)."""
    boundary.run(app, argv)


if __name__ == "__main__":
    main()
