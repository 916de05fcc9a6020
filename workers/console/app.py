"""The console's Starlette app: pages over runs, workflows, actions and integrations.

``create_console_app`` returns an app meant to be mounted at ``/console`` (``openai-pack serve``
mounts it there when ``OPENAI_PACK_CONSOLE_TOKEN`` is set; ``openai-pack console`` serves it alone).
Pages are rendered on the server with Jinja2 (autoescaped); the one script, ``static/console.js``,
refreshes the live parts by fetching the same page with ``?fragment=1`` and submits nothing by
itself. The Content-Security-Policy allows only the console's own script and styles, so text
from a run (a model's answer) can never run as code even if escaping were missed somewhere.

Every answer passes through ``scrub``: a key the integration store knows is masked on any page.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import actions
from integration.errors import InputError, PackError
from integration.redact import register_secret, scrub
from integration.store import open_store, register_store_secrets
from workers.console import views
from workers.console.auth import COOKIE, SESSION_SECONDS, ConsoleAuth
from workers.console.forms import MAX_UPLOAD_BYTES, fields_for, inputs_from_form

__all__ = ["MOUNT", "create_console_app"]

log = logging.getLogger("openai_pack.console")

#: Where the console lives in ``serve`` and in ``openai-pack console``.
MOUNT = "/console"
#: Wrong tokens accepted from one address a minute at /login (then 429).
FAILED_LOGINS_PER_MINUTE = 20
#: How long the model choices of an integration are reused before ``list_models`` is asked again.
MODEL_CHOICES_SECONDS = 300
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make browsers send Origin: null
    "Cache-Control": "no-store",
}
_STATIC = Path(__file__).resolve().parent / "static"
#: What a run id looks like (``workers.state.runs.new_run_id``); anything else is a 404 without a store read.
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

Handler = Callable[[Request], Awaitable[Response]]


class Console:
    """The request handlers over one run store, one integration store and a workflows directory."""

    def __init__(self, auth: ConsoleAuth, *, workflows_dir: Path | None, engine: Any = None,
                 base: str = MOUNT) -> None:
        self.auth = auth
        self.workflows_dir = workflows_dir
        self._engine = engine
        self.base = base.rstrip("/")
        self.templates = Environment(loader=PackageLoader("workers.console", "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))
        self.templates.filters["pretty"] = views.pretty
        self.templates.filters["usd"] = views.usd
        self.templates.filters["seconds"] = lambda v: "" if v is None else f"{v:.3f}s"
        self._failed_logins = MovingWindowRateLimiter(MemoryStorage())
        self._model_choices: dict[str, tuple[float, list[str]]] = {}

    # parts -------------------------------------------------------------------------------------
    @property
    def engine(self) -> Any:
        if self._engine is None:
            from workers.app import engine

            self._engine = engine()
        return self._engine

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A rendered page with the security headers; every known secret masked in the HTML itself."""
        session = request.cookies.get(COOKIE, "")
        context.setdefault("csrf", self.auth.csrf_for(session) if session else "")
        html = self.templates.get_template(template).render(base=self.base, request=request, **context)
        return HTMLResponse(scrub(html), status_code=status, headers=_SECURITY_HEADERS)

    def refusal(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.page(request, "error.html", status=status, message=message, signed_in=False)

    # the gate ------------------------------------------------------------------------------------
    def guarded(self, handler: Handler) -> Handler:
        """Host check, then the token (cookie or bearer), then for a cookie POST the CSRF proof."""

        async def gate(request: Request) -> Response:
            if not self.auth.host_allowed(request.headers.get("host")):
                return self.refusal(request, 421, "This console answers only on loopback names (localhost, "
                                    "127.0.0.1, [::1]).")
            scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
            by_bearer = scheme.lower() == "bearer" and self.auth.token_matches(bearer.strip())
            session = request.cookies.get(COOKIE)
            if not by_bearer and not self.auth.session_valid(session):
                if request.method == "GET" and not request.query_params.get("fragment"):
                    return self.page(request, "login.html", status=401, next=request.url.path, error="",
                                     signed_in=False)
                return self.refusal(request, 401, "Sign in first: the console token is required.")
            if request.method == "POST":
                form = await request.form(max_part_size=MAX_UPLOAD_BYTES + 1024 * 1024)
                if not by_bearer and (
                        not self.auth.origin_allowed(request.headers.get("origin"), request.headers.get("host"))
                        or not self.auth.csrf_valid(session or "", _text(form.get("csrf")))):
                    return self.refusal(request, 403, "This form did not come from a console page (CSRF check "
                                        "failed); reload the page and submit it again.")
                request.state.form = form
            return await handler(request)

        return gate

    # sign in -------------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        if not self.auth.host_allowed(request.headers.get("host")):
            return self.refusal(request, 421, "This console answers only on loopback names.")
        given: str | None = request.query_params.get("token")
        target = request.query_params.get("next", "")
        if request.method == "POST":
            if not self.auth.origin_allowed(request.headers.get("origin"), request.headers.get("host")):
                return self.refusal(request, 403, "The sign-in form did not come from this console.")
            form = await request.form()
            given, target = str(form.get("token") or ""), str(form.get("next") or "")
        if given is None:
            return self.page(request, "login.html", next=target, error="", signed_in=False)
        address = request.client.host if request.client else "unknown"
        if not self.auth.token_matches(given):
            if not self._failed_logins.hit(RateLimitItemPerMinute(FAILED_LOGINS_PER_MINUTE), "login", address):
                return self.refusal(request, 429, "Too many wrong tokens from this address; wait a minute.")
            log.warning("console: wrong token from %s", address)
            return self.page(request, "login.html", status=401, next=target, error="That token is not the "
                             "console token (OPENAI_PACK_CONSOLE_TOKEN).", signed_in=False)
        if not target.startswith(self.base + "/") or target.startswith("//") or "\\" in target:
            target = self.base + "/"
        response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(COOKIE, self.auth.new_session(), max_age=SESSION_SECONDS, path=self.base or "/",
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    async def logout(self, _: Request) -> Response:
        response = RedirectResponse(self.base + "/login", status_code=303)
        response.delete_cookie(COOKIE, path=self.base or "/")
        return response

    # runs ----------------------------------------------------------------------------------------
    async def runs(self, request: Request) -> Response:
        filters = views.RunFilters.from_query(request.query_params)
        try:
            rows, names = await run_in_threadpool(views.run_rows, self.engine.store, filters)
        except PackError as exc:
            return self.refusal(request, 503, f"The run store cannot be read: {exc.message}")
        template = "runs_rows.html" if request.query_params.get("fragment") else "runs.html"
        query = urlencode({k: v for k, v in vars(filters).items() if v} | {"fragment": "1"})
        return self.page(request, template, rows=rows, names=names, filters=filters, statuses=views.STATUSES,
                         triggers=views.TRIGGERS, since_choices=list(views.SINCE_CHOICES), live_query=query,
                         signed_in=True, section="runs")

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not _RUN_ID.fullmatch(run_id):
            return self.refusal(request, 404, "No run with that id in the run store.")
        record = await run_in_threadpool(views.run_page, self.engine.store, run_id)
        if record is None:
            return self.refusal(request, 404, "No run with that id in the run store.")
        template = "run_body.html" if request.query_params.get("fragment") else "run.html"
        return self.page(request, template, run=record, signed_in=True, section="runs",
                         notice=request.query_params.get("notice", ""))

    async def cancel(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not _RUN_ID.fullmatch(run_id):
            return self.refusal(request, 404, "No run with that id in the run store.")
        if await run_in_threadpool(self.engine.store.status, run_id) is None:
            return self.refusal(request, 404, "No run with that id in the run store.")
        cancelled = await run_in_threadpool(self.engine.cancel, run_id)
        notice = "cancelled" if cancelled else "already-finished"
        return RedirectResponse(f"{self.base}/runs/{run_id}?notice={notice}", status_code=303)

    async def run_workflow(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not _RUN_ID.fullmatch(run_id):
            return self.refusal(request, 404, "No run with that id in the run store.")
        definition = await run_in_threadpool(self.engine.store.definition, run_id)
        if not definition:
            return self.refusal(request, 404, "No run with that id in the run store.")
        return self.page(request, "workflow.html", graph=views.graph(definition), name=definition.get("name"),
                         source=f"as run {run_id} started", error={}, signed_in=True, section="workflows")

    # workflows -----------------------------------------------------------------------------------
    async def workflows(self, request: Request) -> Response:
        files = await run_in_threadpool(views.load_workflow_files, self.workflows_dir)
        return self.page(request, "workflows.html", files=files, directory=self.workflows_dir, signed_in=True,
                         section="workflows")

    async def workflow(self, request: Request) -> Response:
        name = request.path_params["name"]
        files = await run_in_threadpool(views.load_workflow_files, self.workflows_dir)
        chosen = next((f for f in files if f.name == name), None)
        if chosen is None:
            return self.refusal(request, 404, "No workflow of that name in the console's workflows directory.")
        definition = chosen.workflow.to_dict() if chosen.workflow is not None else chosen.raw
        graph = views.graph(definition) if definition else None
        return self.page(request, "workflow.html", graph=graph, name=chosen.name, source=str(chosen.path),
                         error=chosen.error, signed_in=True, section="workflows")

    # actions ---------------------------------------------------------------------------------------
    async def action_list(self, request: Request) -> Response:
        registry = await run_in_threadpool(actions.registry)
        word = request.query_params.get("q", "")[:200].lower()
        category = request.query_params.get("category", "")
        categories = sorted({m.category for m in registry.values()}, key=str.lower)
        chosen = [m for m in registry.values() if not m.deprecated
                  and (not category or m.category == category)
                  and word in " ".join((m.name, m.title, m.category, m.description)).lower()]
        return self.page(request, "actions.html", manifests=chosen, categories=categories, q=word,
                         category=category, total=len(registry), signed_in=True, section="actions")

    def _models(self, integration_name: str | None) -> list[str]:
        """Model ids from ``list_models`` on this integration (quickly, cached); none when it cannot answer."""
        key = integration_name or ""
        cached = self._model_choices.get(key)
        if cached and time.monotonic() - cached[0] < MODEL_CHOICES_SECONDS:
            return cached[1]
        try:
            from integration.store import resolve

            integration = resolve(integration_name)
            quick = integration.model_copy(update={"max_retries": 0, "timeout": integration.timeout.model_copy(
                update={"read": 3.0, "connect": 2.0})})
            listing = actions.run("list_models", {}, quick)
            models = sorted(str(m.get("id")) for m in listing.get("data") or [] if isinstance(m, dict))
        except Exception:  # no integration, or it does not answer: the form still works with free text
            models = []
        self._model_choices[key] = (time.monotonic(), models)
        return models

    async def _integration_names(self) -> tuple[list[str], str | None]:
        def read() -> tuple[list[str], str | None]:
            store = open_store()
            return store.names(), store.default_name()

        try:
            return await run_in_threadpool(read)
        except PackError:
            return [], None

    async def action(self, request: Request) -> Response:
        try:
            manifest = actions.get(request.path_params["name"])
        except InputError:
            return self.refusal(request, 404, "No action of that name.")
        names, default = await self._integration_names()
        form = getattr(request.state, "form", None)
        chosen = _text(form.get("integration")) if form else None
        chosen = chosen if chosen in names else (default or "")
        needs_models = any(schema.get("x-options-from") for schema in manifest.properties.values()
                           if isinstance(schema, dict))
        models = await run_in_threadpool(self._models, chosen or None) if needs_models and names else []
        fields = fields_for(manifest, models)
        values: dict[str, str] = {}  # defaults are placeholders: left empty, the API's own default applies
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        status = 200
        if form is not None:
            values = {f.name: str(form.get(f.name) or "") for f in fields if f.kind != "file"}
            try:
                inputs = await inputs_from_form(form, fields)
                outcome = await run_in_threadpool(actions.execute, manifest.name, inputs, chosen or None)
                result = {"output": outcome.output, "usage": getattr(outcome, "usage", None),
                          "attempts": getattr(outcome, "attempts", None)}
            except PackError as exc:
                error = exc.to_dict()
                status = 422 if isinstance(exc, InputError) else 200
        problems = {p.get("field"): p.get("reason") for p in (error or {}).get("problems", []) if isinstance(p, dict)}
        if error and not problems and error.get("field"):
            problems = {error["field"]: error.get("message")}
        return self.page(request, "action.html", status=status, manifest=manifest, fields=fields, values=values,
                         filled=[name for name, value in values.items() if value],
                         integrations=names, chosen=chosen, result=result, error=error, problems=problems,
                         signed_in=True, section="actions")

    # integrations ---------------------------------------------------------------------------------
    async def integrations(self, request: Request) -> Response:
        from workers.state.budget import PAUSE_PREFIX

        store = self.engine.store

        def paused(name: str) -> str | None:
            raw = store.kv.get(PAUSE_PREFIX + name)
            if raw is None or float(raw) <= time.time():
                return None
            return f"{float(raw) - time.time():.0f}s"

        def read() -> list[dict[str, Any]]:
            register_store_secrets()
            return views.integration_rows(open_store(), store, paused)

        try:
            rows = await run_in_threadpool(read)
            error = ""
        except PackError as exc:
            rows, error = [], exc.message
        return self.page(request, "integrations.html", rows=rows, error=error, signed_in=True,
                         section="integrations")


def _text(value: Any) -> str | None:
    """A form value that must be text (an upload in its place counts as missing)."""
    return value if isinstance(value, str) else None


def create_console_app(token: str, *, workflows_dir: str | Path | None = None, engine: Any = None,
                       loopback_only: bool = True, base: str = MOUNT) -> Starlette:
    """The console as an ASGI app to mount at ``base``; ``token`` is the one credential."""
    register_secret(token)  # the token itself is a secret: never in a log line or a page
    try:
        register_store_secrets()
    except PackError as exc:  # an unreadable store is shown on the integrations page, not fatal here
        log.warning("console: the integration store cannot be read yet: %s", exc.code)
    console = Console(ConsoleAuth(token, loopback_only=loopback_only),
                      workflows_dir=Path(workflows_dir) if workflows_dir else None, engine=engine, base=base)
    g = console.guarded

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("console: internal error on %s: %s", request.url.path, type(exc).__name__)
        return console.refusal(request, 500, "Internal error; the console's log names its type.")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = int(getattr(exc, "status_code", 500))
        return console.refusal(request, status, {404: "No such page.", 405: "That method is not allowed here."}
                               .get(status, "The request was refused."))

    app = Starlette(exception_handlers={HTTPException: http_error, Exception: internal_error}, routes=[
        Route("/", g(console.runs), methods=["GET"]),
        Route("/login", console.login, methods=["GET", "POST"]),
        Route("/logout", g(console.logout), methods=["POST"]),
        Route("/runs/{run_id}", g(console.run), methods=["GET"]),
        Route("/runs/{run_id}/cancel", g(console.cancel), methods=["POST"]),
        Route("/runs/{run_id}/workflow", g(console.run_workflow), methods=["GET"]),
        Route("/workflows", g(console.workflows), methods=["GET"]),
        Route("/workflows/{name}", g(console.workflow), methods=["GET"]),
        Route("/actions", g(console.action_list), methods=["GET"]),
        Route("/actions/{name}", g(console.action), methods=["GET", "POST"]),
        Route("/integrations", g(console.integrations), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=_STATIC), name="static"),
    ])
    app.state.console = console
    return app
