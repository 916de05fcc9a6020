"""``make demo``: the pack's main job on the embedded default, with no API key and no server to start.

Starts the loopback OpenAI simulator in-process and runs every action's first example through
``actions.run`` (the same path the CLI and the workers take), printing what each returned.
"""

from __future__ import annotations

import json
import sys

import actions
from actions._simulator import Simulator
from integration.model import Integration


def _summary(output: dict) -> str:
    if output.get("object") == "list":
        return f"{len(output.get('data') or [])} item(s)"
    choices = output.get("choices") or []
    if choices:
        first = choices[0]
        text = (first.get("message") or {}).get("content") or first.get("text") or ""
        return text[:70]
    if "results" in output:
        return "flagged" if any(r.get("flagged") for r in output["results"]) else "not flagged"
    if "data" in output:
        return f"{len(output['data'])} image(s)"
    return output.get("id", "")


def main() -> int:
    with Simulator(port=0) as sim:
        integration = Integration(name="simulator", base_url=sim.url, auth={"placement": "none"})
        print(f"OpenAI API simulator (not the real API) at {sim.url}")
        for name, manifest in actions.registry().items():
            example = manifest.examples[0]
            result = actions.execute(name, example.input, integration)
            usage = result.usage.get("total_tokens", "-")
            print(f"{name:24} {example.title[:38]:38} tokens={usage!s:>4}  {_summary(result.output)}")
        print(json.dumps({"calls_received_by_simulator": sim.calls}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
