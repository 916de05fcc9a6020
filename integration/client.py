"""The one HTTP path to the API: auth, headers, the response-level retry loop, and status-to-error mapping.

Retry layers, deliberately:
1. Connect failures are retried by httpx's transport (``retries=``): nothing was sent, so it is safe.
2. 429 (not ``insufficient_quota``), 408 and 5xx are retried here up to ``max_retries`` times, honouring
   ``retry-after-ms`` then ``Retry-After`` (seconds or HTTP date), else capped exponential backoff with
   jitter. A wait longer than ``max_inline_wait`` is not slept: ``RateLimitedError(retry_after=…)`` is
   raised so a worker can re-queue the step instead of holding a thread.
3. A read timeout or a dropped connection on a paid (non-idempotent) call is never repeated: the request
   may have been processed, so ``NoAnswerError`` says "outcome unknown". Idempotent calls retry it.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from integration import errors
from integration.aio import BridgeTransport, pause
from integration.model import Integration
from integration.providers import auth_for, route
from integration.redact import install_log_redaction, scrub

__all__ = ["ApiResponse", "BodyReader", "Client", "client_for", "close_all_clients"]

log = logging.getLogger("integration.client")

USER_AGENT = "openai-actions-pack/0.1"
BACKOFF_INITIAL = 0.5
BACKOFF_CAP = 8.0
DEFAULT_MAX_INLINE_WAIT = 60.0


@dataclass
class ApiResponse:
    """A successful answer: the parsed body (or assembled SSE events) and what the run record needs."""

    status: int
    body: Any
    headers: dict[str, str]
    request_id: str | None
    attempts: int
    elapsed: float
    events: list[Any] = field(default_factory=list)


#: Reads a success answer that is not JSON (a file's bytes) as it arrives: (headers, chunks) -> the body to keep.
#: Called afresh on every attempt; it must clean up after itself if the chunks stop (the attempt may be retried).
BodyReader = Callable[[dict[str, str], Iterator[bytes]], Any]


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    """openai-python's order: retry-after-ms, then retry-after as seconds, then as an HTTP date."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)


def _should_retry(error: errors.ApiError) -> bool:
    """429 (but not insufficient_quota), 408 and 5xx: the server says "later", not "never"."""
    return error.retryable or error.status == 408


def backoff_delay(attempt: int) -> float:
    """0.5·2ⁿ seconds capped at 8, with up to 25 % jitter taken off so workers don't retry in step."""
    delay = min(BACKOFF_INITIAL * (2**attempt), BACKOFF_CAP)
    return delay * (1 - 0.25 * random.random())


def _error_from_response(response: httpx.Response, request_id: str | None) -> errors.ApiError:
    """Map an error answer to its class, with OpenAI's error body fields (scrubbed of secrets)."""
    message, error_type, error_code, param = None, None, None, None
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        body = payload["error"]
        message = body.get("message")
        error_type = body.get("type")
        error_code = body.get("code") if isinstance(body.get("code"), str) else None
        param = body.get("param") if isinstance(body.get("param"), str) else None
    if not message:
        message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    cls = errors.error_for_status(response.status_code, error_code)
    return cls(
        scrub(str(message))[:2000],
        status=response.status_code,
        request_id=request_id,
        error_type=error_type,
        error_code=error_code,
        param=param,
        retry_after=_parse_retry_after(response.headers),
    )


def iter_sse(lines: Iterator[str]) -> Iterator[Any]:
    """Parse server-sent events into JSON payloads, stopping at ``data: [DONE]``."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                data = []
                if text.strip() == "[DONE]":
                    return
                yield json.loads(text)
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data and "\n".join(data).strip() != "[DONE]":
        yield json.loads("\n".join(data))


class Client:
    """One integration's connection pool plus the request loop; thread-safe, reused across calls."""

    def __init__(self, integration: Integration, transport: httpx.BaseTransport | None = None) -> None:
        install_log_redaction()
        self.integration = integration
        timeout = integration.timeout
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **integration.extra_headers}
        if integration.organization_id:
            headers["OpenAI-Organization"] = integration.organization_id
        if integration.project_id:
            headers["OpenAI-Project"] = integration.project_id
        self._urls: dict[str, httpx.URL] = {}  # request URL text → the absolute URL (``_absolute``)
        #: The Admin API key in the same placement, for /organization actions (``request(admin=True)``).
        self._admin_auth = auth_for(integration, admin=True)
        self._http = httpx.Client(
            base_url=integration.base_url + "/",
            auth=auth_for(integration),
            headers=headers,
            timeout=httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.write,
                                  pool=timeout.pool),
            # Blocking in a thread; on the event loop when called from a bridged greenlet (integration.aio).
            transport=transport or BridgeTransport(retries=integration.max_retries),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        files: Any = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        admin: bool = False,
        idempotent: bool,
        sse: bool = False,
        body_reader: BodyReader | None = None,
        max_retries: int | None = None,
        max_inline_wait: float = DEFAULT_MAX_INLINE_WAIT,
        sleep: Callable[[float], None] = pause,
        action: str | None = None,
    ) -> ApiResponse:
        """Send one logical request, retrying only what is safe; raise a typed error otherwise.

        ``admin`` sends the integration's Admin API key in place of its API key (the caller checks there is one).
        The provider decides the URL (Azure's deployments and api-version, a compatible server's base
        URL) before anything is sent, and may refuse the request there (``integration.providers``).
        ``headers`` are added to this request only (constant headers, the generic request's extra headers).
        """
        retries = self.integration.max_retries if max_retries is None else max_retries
        routed = route(self.integration, method, path, json_body=json_body, files=files, action=action)
        url, json_body, files = routed.url, routed.json_body, routed.files
        if routed.params:
            params = {**(params or {}), **routed.params}
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = self._send_once(method, url, json_body, params, files, data, sse, headers, admin,
                                         body_reader)
            except errors.NoAnswerError as exc:
                exc.retryable = idempotent
                exc.details.update(idempotent=idempotent, attempts=attempt)
                if not idempotent or attempt > retries:
                    raise
                sleep(backoff_delay(attempt - 1))
                continue
            if isinstance(result, ApiResponse):
                result.attempts = attempt
                result.elapsed = time.monotonic() - started
                return result
            error = result
            if not _should_retry(error):
                raise error
            if attempt > retries:
                error.details["attempts"] = attempt
                raise error
            wait = error.retry_after if error.retry_after is not None else backoff_delay(attempt - 1)
            if wait > max_inline_wait:
                error.details["attempts"] = attempt
                raise error
            log.info("retrying %s %s after %s (%.2fs, attempt %d)", method, path, error.code, wait, attempt)
            sleep(wait)

    def _send_once(
        self, method: str, url: str, json_body: Any, params: dict[str, Any] | None, files: Any,
        data: dict[str, Any] | None, sse: bool, headers: dict[str, str] | None = None, admin: bool = False,
        body_reader: BodyReader | None = None,
    ) -> ApiResponse | errors.ApiError:
        """One HTTP exchange; transport failures become typed errors without the URL or headers."""
        request = self._http.build_request(method, self._absolute(url), json=json_body if files is None else None,
                                           params=params, files=files, data=data, headers=headers)
        try:
            auth = self._admin_auth if admin else httpx.USE_CLIENT_DEFAULT
            response = self._http.send(request, stream=True, auth=auth)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise errors.ConnectError(f"could not connect to the API at {self._where()}: "
                                      f"{type(exc).__name__}") from None
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            raise self._no_answer(f"no answer within the timeout ({type(exc).__name__})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise self._no_answer(f"the connection dropped before an answer ({type(exc).__name__})") from None
        try:
            return self._read(response, sse, body_reader)
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            raise self._no_answer(f"the answer stopped arriving ({type(exc).__name__})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise self._no_answer(f"the connection dropped mid-answer ({type(exc).__name__})") from None
        finally:
            response.close()

    def _absolute(self, url: str) -> httpx.URL:
        """``url`` joined to the base URL as httpx joins a relative one (appended to the base path), parsed once:
        httpx parses and joins the text on every request otherwise (~30 µs of ~45 in ``build_request``)."""
        found = self._urls.get(url)
        if found is None:
            parsed = httpx.URL(url)
            if parsed.is_relative_url:
                base = self._http.base_url
                parsed = base.copy_with(raw_path=base.raw_path + parsed.raw_path.lstrip(b"/"))
            if len(self._urls) >= 1024:  # paths with ids in them: keep the table bounded
                self._urls.clear()
            found = self._urls[url] = parsed
        return found

    def _read(self, response: httpx.Response, sse: bool,
              body_reader: BodyReader | None = None) -> ApiResponse | errors.ApiError:
        request_id = response.headers.get("x-request-id")
        if response.status_code >= 400 or response.status_code < 200:
            response.read()
            return _error_from_response(response, request_id)
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith(("x-", "openai-"))}
        is_sse = sse and response.headers.get("content-type", "").startswith("text/event-stream")
        try:
            if is_sse:
                events = list(iter_sse(response.iter_lines()))
                return ApiResponse(response.status_code, None, headers, request_id, 1, 0.0, events)
            if body_reader is not None:  # bytes (a file's content): streamed to the reader, never held here
                answer_headers = {k.lower(): v for k, v in response.headers.items()}
                body = body_reader(answer_headers, response.iter_bytes())
                return ApiResponse(response.status_code, body, headers, request_id, 1, 0.0)
            content = response.read()
            if content and response.headers.get("content-type", "").startswith("text/plain"):
                body = content.decode(response.encoding or "utf-8")  # e.g. a transcript asked for as text, srt, vtt
            else:
                body = json.loads(content) if content else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return errors.ResponseShapeError(
                f"the API answered {response.status_code} with a body that is not JSON",
                status=response.status_code, request_id=request_id)
        return ApiResponse(response.status_code, body, headers, request_id, 1, 0.0)

    def _no_answer(self, what: str) -> errors.NoAnswerError:
        return errors.NoAnswerError(f"sent to {self._where()}, but {what}; the outcome is unknown",
                                   idempotent=False)

    def _where(self) -> str:
        return self.integration.base_url


_clients: dict[tuple[str, str], Client] = {}
_clients_lock = threading.Lock()


_recent: dict[int, tuple[Integration, tuple[str, str]]] = {}


def client_for(integration: Integration) -> Client:
    """A pooled Client per distinct integration value (pooling is what keeps per-call overhead low)."""
    seen = _recent.get(id(integration))
    if seen is not None and seen[0] is integration:  # the same (immutable) object: skip re-hashing it
        key = seen[1]
    else:
        key = (integration.name, _client_key(integration))
        if len(_recent) > 256:
            _recent.clear()
        _recent[id(integration)] = (integration, key)
    client = _clients.get(key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = Client(integration)
            _clients[key] = client
        return client


def _client_key(integration: Integration) -> str:
    """Everything that shapes the client: the public fields and the keys' fingerprints (never the keys)."""
    public = json.dumps(integration.public_dict(), sort_keys=True)
    return public + "\x00" + (integration.key_fingerprint or "") + "\x00" + (integration.admin_key_fingerprint or "")


def close_all_clients() -> None:
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_download_client: httpx.Client | None = None


def download(url: str, *, timeout: float = 60.0, max_bytes: int = MAX_DOWNLOAD_BYTES) -> tuple[bytes, str]:
    """Fetch a file the API pointed at (an image URL) without sending the key: it is another host."""
    global _download_client
    if not url.startswith(("https://", "http://")):
        raise errors.ResponseShapeError(f"the API returned a file URL that is not http(s): {url[:80]!r}")
    with _clients_lock:
        if _download_client is None:
            _download_client = httpx.Client(timeout=timeout, follow_redirects=True,
                                             headers={"User-Agent": USER_AGENT})
    try:
        with _download_client.stream("GET", url) as response:
            if response.status_code != 200:
                raise errors.UpstreamError(f"downloading the file failed with HTTP {response.status_code}",
                                           status=response.status_code)
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise errors.ResponseShapeError(f"the file is larger than {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks), response.headers.get("content-type", "")
    except httpx.TransportError as exc:
        raise errors.ConnectError(f"downloading the file failed: {type(exc).__name__}") from None
