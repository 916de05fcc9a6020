"""The generic executor: a manifest's HTTP binding plus prepared inputs becomes one API call.

Nothing here knows a particular action; anything an action needs beyond its binding lives in
its handler (``actions/<name>.py``), which receives a ``Call`` and uses the same ``send``.

How inputs become a request (path, query, headers, JSON or multipart body) is ``actions/_request.py``;
walking every page of a list (``fetch_all``) is ``actions/_pages.py``.

Answers are a JSON object (``answer: json``), a streamed one rebuilt into that shape (``http.stream``,
``actions/_streaming.py``), nothing (``answer: empty``) or bytes (``answer: binary``); the last two become
a small JSON result in ``actions/_outputs.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actions._coerce import coerce_inputs
from actions._inputs import check_value, parse_json_text
from actions._manifest import ActionManifest
from actions._outputs import BinarySink, binary_output, discard, empty_result, prepare_save_to
from actions._pages import MAX_PAGES, fetch_pages
from actions._request import Request, build_request, check_credentials
from actions._streaming import assemble
from actions._validate import problems_for
from integration.client import DEFAULT_MAX_INLINE_WAIT, ApiResponse, BodyReader, client_for
from integration.errors import InputError, ResponseShapeError
from integration.model import Integration

__all__ = ["ActionResult", "Call", "CallOptions", "prepare_inputs"]

#: ``response_format`` values the audio endpoints answer as plain text instead of JSON.
TEXT_FORMATS = ("text", "srt", "vtt")


@dataclass(frozen=True)
class CallOptions:
    """How one execution may behave; workers tighten these (short inline waits, hooks for budgets)."""

    max_inline_wait: float = DEFAULT_MAX_INLINE_WAIT
    max_retries: int | None = None
    #: Most pages one ``fetch_all`` asks for (a bound on the loop whatever the server says).
    max_pages: int = MAX_PAGES
    before_request: Callable[[Call], None] | None = None
    after_response: Callable[[Call, ApiResponse], None] | None = None


@dataclass
class ActionResult:
    """What one execution produced: the output plus what a run record needs (no inputs, no secrets)."""

    action: str
    integration: str
    output: dict[str, Any]
    usage: dict[str, int]
    attempts: int
    request_ids: list[str]
    elapsed: float

    def record(self) -> dict[str, Any]:
        return {"action": self.action, "integration": self.integration, "usage": self.usage,
                "attempts": self.attempts, "request_ids": self.request_ids,
                "elapsed": round(self.elapsed, 6)}


def prepare_inputs(manifest: ActionManifest, raw: Any) -> dict[str, Any]:
    """Coerce then validate; raise one InputError listing every problem, before anything is sent."""
    if isinstance(raw, str):
        raw = parse_json_text(raw, "", action=manifest.name) if raw.strip() else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError([{"field": "", "reason": "must be an object of field values"}], action=manifest.name)
    check_value(raw, action=manifest.name)  # NaN, lone surrogates, absurd depth: refused, naming the field
    for old, name in manifest.aliases.items():  # the seed's names keep working
        if old in raw:
            if name in raw:
                raise InputError([{"field": old, "reason": f"is the old name of {name!r}: give one of them, not both"}],
                                 action=manifest.name)
            raw = {(name if k == old else k): v for k, v in raw.items()}
    inputs = coerce_inputs(raw, manifest.input)
    problems = _choice_problems(inputs, manifest.input) or problems_for(inputs, manifest.input)
    if problems:
        raise InputError(problems, action=manifest.name)
    return inputs


def _choice_problems(inputs: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, str]]:
    """A body whose fields come in exclusive groups (``oneOf`` of ``required`` lists: ``file_ids`` or ``files``),
    explained in those words; a generic validator would only say "matches none of the allowed forms"."""
    groups = [branch.get("required") for branch in schema.get("oneOf") or []]
    if not groups or not all(isinstance(group, list) and set(branch) == {"required"}
                             for group, branch in zip(groups, schema["oneOf"], strict=True)):
        return []
    given = [group for group in groups if all(name in inputs for name in group)]
    choices = " or ".join(", ".join(group) for group in groups)
    if not given:
        return [{"field": groups[0][0], "reason": f"is required: give {choices}"}]
    if len(given) > 1:
        return [{"field": given[1][0], "reason": f"cannot be given with {', '.join(given[0])}: give only one of "
                                                 f"{choices}"}]
    return []


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    for key, value in usage.items():
        if isinstance(value, int) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


@dataclass
class Call:
    """One action execution as a handler sees it: validated inputs and a ``send`` through the client."""

    manifest: ActionManifest
    inputs: dict[str, Any]
    integration: Integration
    options: CallOptions = field(default_factory=CallOptions)
    usage: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    request_ids: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | list[tuple[str, str]] | None = None,
        files: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        admin: bool | None = None,
        idempotent: bool | None = None,
        assemble_stream: str | None = None,
        body_reader: BodyReader | None = None,
    ) -> ApiResponse:
        """Send through the integration's client; with ``assemble_stream`` the SSE answer is rebuilt, with
        ``body_reader`` a success answer's bytes go to it as they arrive.

        ``admin`` (default: the manifest's ``http.key``) sends the Admin API key instead of the API key;
        without one the call is refused before anything is sent.
        """
        admin = self.manifest.http.key == "admin" if admin is None else admin
        if admin:
            check_credentials(self.manifest, self.integration)
        if self.options.before_request:
            self.options.before_request(self)
        response = client_for(self.integration).request(
            method, path, json_body=json_body, params=params, files=files, data=data, headers=headers,
            admin=admin, idempotent=self.manifest.is_idempotent if idempotent is None else idempotent,
            sse=assemble_stream is not None, body_reader=body_reader, max_retries=self.options.max_retries,
            max_inline_wait=self.options.max_inline_wait, action=self.manifest.name,
        )
        if assemble_stream is not None and response.events:
            response.body = assemble(assemble_stream, response.events)
        self.attempts += response.attempts
        if response.request_id:
            self.request_ids.append(response.request_id)
        if isinstance(response.body, dict):
            _add_usage(self.usage, response.body.get("usage"))
        if self.options.after_response:
            try:
                self.options.after_response(self, response)
            except BaseException:
                discard(response.body)  # a saved answer's temporary file must not outlive the call
                raise
        return response

    def send_request(self, request: Request) -> ApiResponse:
        """Send one request built by ``actions._request.build_request``."""
        stream = self.manifest.http.stream
        return self.send(request.method, request.path, json_body=request.json_body, params=request.params,
                         files=request.files, headers=request.headers or None, admin=request.admin,
                         assemble_stream=stream.assemble if request.streaming and stream else None)

    def default(self) -> dict[str, Any]:
        """Carry out the manifest's binding as written: path, query and header fields, the rest as the body;
        with ``fetch_all`` on a paginated action, every page merged."""
        request = build_request(self.manifest, self.inputs)
        if self.manifest.http.answer == "binary":
            return self.save_binary(request.method, request.path, json_body=request.json_body, params=request.params,
                                    files=request.files, headers=request.headers or None, admin=request.admin)
        pagination = self.manifest.http.pagination
        if pagination is not None and self.inputs.get("fetch_all") is True:
            return fetch_pages(pagination, request, self.send_request, self.answer_of,
                               max_items=self.inputs.get("max_items"), max_pages=self.options.max_pages)
        response = self.send_request(request)
        return self.answer_of(response)

    def answer_of(self, response: ApiResponse) -> dict[str, Any]:
        """The step's output: the JSON object, or for ``answer: empty`` the small result of ``_outputs``."""
        if self.manifest.http.answer == "empty":
            path_values = {name: self.inputs[name] for name in self.manifest.http.path_params if name in self.inputs}
            return empty_result(self.manifest.http.method, path_values, response.status, response.body)
        return self.expect_object(response)

    def save_binary(self, method: str, path: str, **request: Any) -> dict[str, Any]:
        """A binary answer streamed to disk, then saved to ``save_to`` or returned as base64 (``_outputs``).

        ``save_to`` is checked before the call, so a file that would be overwritten costs nothing."""
        save_to, parse = self.inputs.get("save_to"), self.inputs.get("parse")
        target = prepare_save_to(save_to, self.manifest.name) if isinstance(save_to, str) else None
        response = self.send(method, path, body_reader=BinarySink(target.directory if target else None), **request)
        path_values = [str(self.inputs[name]) for name in self.manifest.http.path_params if name in self.inputs]
        stem = path_values[-1] if path_values else f"{self.manifest.name}-{int(time.time())}"
        return binary_output(response.body, target, parse if isinstance(parse, str) else None, self.manifest.name,
                             stem)

    def expect_object(self, response: ApiResponse) -> dict[str, Any]:
        """The body as a JSON object, or a typed error saying the API answered something else.

        A plain-text answer (audio transcribed or translated with ``response_format`` text, srt or vtt)
        becomes ``{"text": ...}``, the shape of the JSON formats, so templates read ``.text`` either way; text
        the step did not ask for is still an error."""
        if isinstance(response.body, str) and self.inputs.get("response_format") in TEXT_FORMATS:
            return {"text": response.body}
        if not isinstance(response.body, dict):
            raise ResponseShapeError(f"{self.manifest.name}: the API answered with "
                                     f"{type(response.body).__name__}, not a JSON object",
                                     status=response.status, request_id=response.request_id)
        return response.body

    def result(self, output: dict[str, Any]) -> ActionResult:
        return ActionResult(self.manifest.name, self.integration.name, output, self.usage, self.attempts,
                            self.request_ids, time.monotonic() - self.started)
