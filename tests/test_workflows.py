"""Workflows end to end: a real redis-server, a real `openai-pack worker` process, the loopback simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, finished_record, run_cli, steps_by_id
from workers.workflow import parse_workflow

pytestmark = pytest.mark.timeout(180)


def _run(pack: Any, text: str, inputs: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
    workflow = parse_workflow(text, "test.yaml")
    engine = pack.engine()
    run_id, created = engine.start_run(workflow, inputs or {}, trigger={"type": "manual"})
    assert created
    return finished_record(engine, run_id, timeout)


SEQUENCE = """
name: sequence
inputs:
  text: {type: string, required: true}
  n: {type: integer, default: 1}
steps:
  - id: moderate
    action: create_moderation
    input: {input: "{{ inputs.text }}"}
  - id: summarise
    action: create_chat_completion
    input:
      model: gpt-4o-mini
      n: "{{ inputs.n }}"
      messages: [{role: user, content: "Summarise: {{ inputs.text }}"}]
output:
  flagged: "{{ steps.moderate.output.results[0].flagged }}"
  choices: "{{ steps.summarise.output.choices | length }}"
  summary: "{{ steps.summarise.output.choices[0].message.content }}"
"""


def test_steps_run_in_order_and_output_keeps_native_types(pack: Any, simulator: Any) -> None:
    record = _run(pack, SEQUENCE, {"text": "the printer is jammed", "n": "2"})
    assert record["status"] == "succeeded", record
    assert [s["id"] for s in record["steps"]] == ["moderate", "summarise"]
    steps = steps_by_id(record)
    assert steps["moderate"]["finished"] <= steps["summarise"]["started"]
    assert record["output"]["flagged"] is False
    assert record["output"]["choices"] == 2  # "2" coerced to an int, then a native int out of the template
    assert "printer" in record["output"]["summary"]
    assert simulator.calls_by_route() == {"POST /moderations": 1, "POST /chat/completions": 1}
    # per-step usage and totals
    assert steps["summarise"]["usage"]["total_tokens"] > 0
    assert record["totals"]["usage"]["total_tokens"] == sum(
        (s.get("usage") or {}).get("total_tokens", 0) for s in record["steps"])
    assert record["trigger"]["type"] == "manual"


BRANCHES = """
name: branches
inputs:
  text: {type: string, required: true}
steps:
  - id: moderate
    action: create_moderation
    input: {input: "{{ inputs.text }}"}
    on:
      - if: "{{ steps.moderate.output.results[0].flagged }}"
        publish: {verdict: rejected}
        do: reject
      - if: "{{ not steps.moderate.output.results[0].flagged }}"
        publish: {verdict: accepted, who: "{{ run.workflow }}"}
        do: [accept]
  - id: accept
    action: list_models
    input: {}
    on: []
  - id: reject
    action: retrieve_model
    input: {model: gpt-4o}
    on: []
output:
  verdict: "{{ vars.verdict }}"
  who: "{{ vars.who | default('nobody') }}"
"""


@pytest.mark.parametrize(("text", "verdict", "ran", "skipped"), [
    ("hello there", "accepted", "accept", "reject"),
    ("I will kill the server with violence", "rejected", "reject", "accept"),
])
def test_conditions_choose_the_branch_and_publish_variables(pack: Any, text: str, verdict: str, ran: str,
                                                            skipped: str) -> None:
    record = _run(pack, BRANCHES, {"text": text})
    assert record["status"] == "succeeded", record
    steps = steps_by_id(record)
    assert ran in steps and skipped not in steps
    assert record["output"]["verdict"] == verdict
    assert record["variables"]["verdict"] == verdict
    if verdict == "accepted":
        assert record["output"]["who"] == "branches"


FAILURE = """
name: failure-paths
steps:
  - id: missing
    action: retrieve_model
    input: {model: no-such-model}
    on:
      - when: failure
        publish: {reason: "{{ steps.missing.error.code }}"}
        do: [fallback]
      - when: always
        publish: {always_ran: true}
  - id: fallback
    action: retrieve_model
    input: {model: gpt-4o-mini}
    on: []
output:
  reason: "{{ vars.reason }}"
  always: "{{ vars.always_ran }}"
  model: "{{ steps.fallback.output.id }}"
"""


def test_failure_transition_runs_the_fallback(pack: Any) -> None:
    record = _run(pack, FAILURE)
    steps = steps_by_id(record)
    assert steps["missing"]["status"] == "failed"
    assert steps["missing"]["error"]["code"] == "not_found"
    assert steps["missing"]["attempts"] == 1  # a 404 is not retried
    assert record["status"] == "succeeded", record  # the failure was handled
    assert record["output"] == {"reason": "not_found", "always": True, "model": "gpt-4o-mini"}


def test_unhandled_failure_fails_the_run_with_the_step_named(pack: Any) -> None:
    text = FAILURE.replace("      - when: failure\n        publish: {reason: \"{{ steps.missing.error.code }}\"}\n"
                           "        do: [fallback]\n      - when: always\n        publish: {always_ran: true}\n",
                           "      - when: success\n        do: [fallback]\n")
    record = _run(pack, text)
    assert record["status"] == "failed"
    assert record["error"]["step"] == "missing"
    assert "fallback" not in steps_by_id(record)


TEMPLATE_ERROR = """
name: template-error
steps:
  - id: first
    action: list_models
    input: {}
  - id: second
    action: retrieve_model
    input: {model: "{{ steps.first.output.no_such_field }}"}
"""


def test_template_error_names_the_step_and_the_expression(pack: Any, simulator: Any) -> None:
    record = _run(pack, TEMPLATE_ERROR)
    assert record["status"] == "failed"
    error = steps_by_id(record)["second"]["error"]
    assert error["code"] == "template_error"
    assert "second" in error["message"] and "steps.first.output.no_such_field" in error["message"]
    assert simulator.calls_by_route() == {"GET /models": 1}  # nothing sent for the broken step


FANOUT = """
name: fanout
inputs:
  records: {type: array, items: {type: string}}
steps:
  - id: classify
    action: create_chat_completion
    with_items: "{{ inputs.records }}"
    concurrency: 5
    input:
      model: gpt-4o-mini
      messages: [{role: user, content: "{{ index }}:{{ item }}"}]
output:
  texts: "{{ steps.classify.output | map(attribute='choices') | map('first') | map(attribute='message') | map(attribute='content') | list }}"
"""


def test_with_items_200_keeps_order_and_the_concurrency_limit(pack: Any, simulator: Any) -> None:
    simulator.add_fault({"kind": "latency", "latency": 0.02, "times": -1})
    records = [f"record-{i}" for i in range(200)]
    record = _run(pack, FANOUT, {"records": records}, timeout=120)
    assert record["status"] == "succeeded", record.get("error")
    texts = record["output"]["texts"]
    assert len(texts) == 200
    assert all(f"{i}:record-{i}" in text for i, text in enumerate(texts))
    assert simulator.calls == 200
    assert 1 < simulator.max_in_flight <= 5, simulator.max_in_flight
    step = steps_by_id(record)["classify"]
    assert step["items"] == {"total": 200, "succeeded": 200, "failed": 0}
    assert step["usage"]["total_tokens"] > 0


def test_one_failed_item_is_reported_without_losing_the_others(pack: Any, simulator: Any) -> None:
    text = FANOUT.replace("  texts:", "  n:").replace(
        "\"{{ steps.classify.output | map(attribute='choices') | map('first') | map(attribute='message') "
        "| map(attribute='content') | list }}\"", "\"{{ steps.classify.output | length }}\"")
    text = text.replace("steps:\n  - id: classify", "steps:\n  - id: classify").replace(
        "      messages: [{role: user", "      messages: [{role: \"{{ 'bogus' if index == 3 else 'user' }}\"")
    record = _run(pack, text, {"records": [str(i) for i in range(8)]})
    step = steps_by_id(record)["classify"]
    assert step["status"] == "failed"
    assert step["items"] == {"total": 8, "succeeded": 7, "failed": 1}
    items = step["item_results"]
    assert [i["status"] for i in items].count("succeeded") == 7
    assert items[3]["status"] == "failed" and "messages[0].role" in json.dumps(items[3]["error"])
    assert simulator.calls == 7  # the bad item was refused before any request


def test_cli_workflow_validate_run_and_runs_commands(pack: Any, worker_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "sequence.yaml"
    path.write_text(SEQUENCE)
    ok = run_cli(worker_env, "workflow", "validate", str(path))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEQUENCE.replace("create_moderation", "create_moderations"))
    invalid = run_cli(worker_env, "workflow", "validate", str(bad))
    assert invalid.returncode == 2
    assert "moderate" in invalid.stderr and "create_moderation" in invalid.stderr

    done = run_cli(worker_env, "workflow", "run", str(path), "--input", '{"text": "disk full"}', "--wait", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "succeeded"
    listed = run_cli(worker_env, "runs", "list", "--json")
    assert record["id"] in {r["id"] for r in json.loads(listed.stdout)}
    shown = run_cli(worker_env, "runs", "show", record["id"])
    assert shown.returncode == 0 and "summarise" in shown.stdout and "tokens" in shown.stdout
    cancelled = run_cli(worker_env, "runs", "cancel", record["id"])
    assert json.loads(cancelled.stdout)["cancelled"] is False  # already finished


def test_examples_validate() -> None:
    from workers.workflow import load_workflow

    for path in sorted((REPO_ROOT / "docs" / "examples").glob("*.yaml")):
        if path.name != "schedules.yaml":
            assert load_workflow(path).name


def test_nightly_example_keeps_every_other_label_when_one_item_fails(pack: Any, simulator: Any) -> None:
    """issue 10 D4: the shipped example lost every label (null output, redacted records) for one failed item."""
    simulator.add_fault({"path": "/chat/completions", "kind": "status", "status": 400, "times": 1})
    text = (REPO_ROOT / "docs" / "examples" / "nightly-classification.yaml").read_text()
    record = _run(pack, text, {"records": [f"ticket {i}" for i in range(6)]})
    labels = record["output"]["labels"]
    assert len(labels) == 6 and labels.count(None) == 1, record["output"]
    assert all(label.startswith("Simulated reply to:") for label in labels if label is not None)
    assert int(record["output"]["classified"]) == 5
    items = steps_by_id(record)["classify"]["item_results"]
    failed = labels.index(None)
    assert items[failed]["error"]["code"] == "bad_request"
    # every paid answer stays readable in the record
    assert [i["output"]["choices"][0]["message"]["content"] for i in items if i["status"] == "succeeded"] == [
        label for label in labels if label is not None]


REDACTED_RUN = """
name: redacted
inputs:
  records: {type: array, items: {type: string}}
steps:
  - id: single
    action: create_chat_completion
    redact: [choices.message.content]
    input:
      model: gpt-4o-mini
      messages: [{role: user, content: "{{ 'zqxj' | upper }}-{{ 6 * 7 }}-single"}]
    on: [{when: success, do: [items]}]
  - id: items
    action: create_chat_completion
    with_items: "{{ inputs.records }}"
    redact: [choices.message.content]
    input:
      model: gpt-4o-mini
      messages: [{role: user, content: "{{ 'zqxj' | upper }}-{{ 6 * 7 }}-item-{{ index }}"}]
"""


def test_redacted_field_is_absent_from_every_redis_key_after_the_run(pack: Any, simulator: Any,
                                                                    redis_server: str) -> None:
    """issue 10 D11: the ledger kept the full output (with the redacted field) for 7 days."""
    import redis

    record = _run(pack, REDACTED_RUN, {"records": ["a", "b", "c"]})
    assert record["status"] == "succeeded", record.get("error")
    assert simulator.calls == 4
    assert all("ZQXJ-42" in r["body"]["messages"][0]["content"] for r in simulator.requests)  # it was answered
    client = redis.Redis.from_url(redis_server)
    dump = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        value: Any = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1),
                      "set": client.smembers, "zset": lambda k: client.zrange(k, 0, -1)}.get(kind, lambda k: b"")(key)
        dump.append(f"{key!r} {value!r}")
    haystack = "\n".join(dump)
    assert f"ledger:{record['id']}:single:" in haystack and f"ledger:{record['id']}:items:2" in haystack
    assert "ZQXJ-42" not in haystack, haystack[max(0, haystack.find("ZQXJ-42") - 300):haystack.find("ZQXJ-42") + 50]


def test_embedded_worker_honours_the_workflows_concurrency(worker_env: dict[str, str], simulator: Any,
                                                           tmp_path: Path) -> None:
    """issue 10: the embedded default ran at most 8 calls at once whatever `concurrency:` said."""
    env = {k: v for k, v in worker_env.items() if k not in ("OPENAI_PACK_BROKER_URL", "OPENAI_PACK_STORE_URL")}
    env["OPENAI_PACK_HOME"] = worker_env["OPENAI_PACK_HOME"]  # the integrations; runs go to its SQLite file
    simulator.add_fault({"path": "/chat/completions", "kind": "latency", "latency": 0.6, "times": -1})
    path = tmp_path / "wide.yaml"
    path.write_text(FANOUT.replace("concurrency: 5", "concurrency: 20"))
    records = json.dumps({"records": [str(i) for i in range(40)]})
    done = run_cli(env, "workflow", "run", str(path), "--input", records, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert simulator.calls == 40
    assert 8 < simulator.max_in_flight <= 20, simulator.max_in_flight
