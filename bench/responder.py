"""A minimal loopback responder for benchmarks: asyncio, HTTP/1.1 keep-alive, canned answers.

The simulator validates every body against the spec, which costs more than the pack itself; this
answers a fixed chat completion (or moderation, or model list) after an optional delay, so the
server is never the bottleneck. Optionally enforces a requests-per-minute budget (429 beyond it,
over a moving window from the ``limits`` library, as the pack's budget uses).
Run in its own process: ``python -m bench.responder PORT DELAY RPM``.

Why a raw asyncio protocol and not Starlette/uvicorn like the simulator: measured side by side in one
run on 2 cores (median of 5 interleaved rounds, POST /v1/chat/completions with keep-alive), this answers
6,712 req/s on one connection and 20,470 req/s over 16, where the same answers on Starlette + uvicorn
(h11, the pack's dependencies) gave 1,269 and 1,796: a 5-11x slower server would become part of what
the benchmarks measure.
"""

from __future__ import annotations

import asyncio
import json
import sys

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

CHAT = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1732300000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "label: other", "refusal": None},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}, "system_fingerprint": "fp_b",
}).encode()
MODERATION = json.dumps({"id": "modr-bench", "model": "omni-moderation-latest", "results": [
    {"flagged": False, "categories": {"violence": False}, "category_scores": {"violence": 0.001}}]}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1,
                                                   "owned_by": "system"}]}).encode()
LIMITED = json.dumps({"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                                "code": "rate_limit_exceeded"}}).encode()


class Responder(asyncio.Protocol):
    delay = 0.0
    budget: RateLimitItemPerMinute | None = None
    window = MovingWindowRateLimiter(MemoryStorage())
    stats = {"calls": 0, "limited": 0, "in_flight": 0, "max_in_flight": 0}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < head_end + 4 + length:
                return
            self.buffer = self.buffer[head_end + 4 + length:]
            path = head.split(" ", 2)[1]
            asyncio.get_running_loop().create_task(self.answer(path))

    async def answer(self, path: str) -> None:
        if path.endswith("/_stats"):
            body = json.dumps(Responder.stats).encode()
            self.transport.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            return
        stats = Responder.stats
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        if self.delay:
            await asyncio.sleep(self.delay)
        stats["in_flight"] -= 1
        stats["calls"] += 1
        status, body = "200 OK", CHAT
        if self.budget is not None and not self.window.hit(self.budget, "responder"):
            Responder.stats["limited"] += 1
            status, body = "429 Too Many Requests", LIMITED
        if status.startswith("200"):
            if "/moderations" in path:
                body = MODERATION
            elif path.endswith("/models"):
                body = MODELS
        headers = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   f"x-request-id: req_bench\r\n\r\n")
        if not self.transport.is_closing():
            self.transport.write(headers.encode() + body)


async def serve(port: int, delay: float, rpm: int) -> None:
    Responder.delay, Responder.budget = delay, RateLimitItemPerMinute(rpm) if rpm else None
    server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0,
                      int(sys.argv[3]) if len(sys.argv) > 3 else 0))
