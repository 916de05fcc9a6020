"""Workflow files and templates, without a broker: load errors, rendering, transitions, inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.errors import InputError
from workers.workflow import TemplateError, Workflow, WorkflowError, evaluate, load_workflow, parse_workflow, render

BASE = """
name: triage
inputs:
  ticket: {type: string, required: true}
  count: {type: integer, default: 2}
  tags: {type: array, items: {type: string}, default: []}
steps:
  - id: moderate
    action: create_moderation
    input: {input: "{{ inputs.ticket }}"}
    on:
      - if: "{{ steps.moderate.output.flagged }}"
        publish: {verdict: rejected}
        do: reject
      - when: success
        if: "{{ not steps.moderate.output.flagged }}"
        publish: {verdict: ok, again: "{{ vars.verdict }}"}
        do: [summarise]
      - when: failure
        do: [reject]
      - when: always
        publish: {seen: true}
  - id: summarise
    action: create_chat_completion
    input:
      model: gpt-4o-mini
      temperature: 0.2
      messages: [{role: user, content: "{{ inputs.ticket }}"}]
  - id: reject
    action: list_models
    input: {}
output:
  summary: "{{ steps.summarise.output }}"
"""


def _error(text: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(text, "wf.yaml")
    return caught.value


def test_a_valid_workflow_loads(tmp_path: Path) -> None:
    path = tmp_path / "triage.yaml"
    path.write_text(BASE)
    workflow = load_workflow(path)
    assert workflow.name == "triage" and workflow.start == "moderate"
    assert [s.id for s in workflow.steps] == ["moderate", "summarise", "reject"]
    assert workflow.step("moderate").on is not None and workflow.step("summarise").on is None
    assert Workflow.from_dict(workflow.to_dict()).steps == workflow.steps


@pytest.mark.parametrize(("change", "step", "field", "words"), [
    (("create_moderation", "create_moderations"), "moderate", "action", "did you mean 'create_moderation'"),
    (("id: reject", "id: summarise"), "summarise", "id", "used twice"),
    (("do: [summarise]", "do: [sumarise]"), "moderate", "on[1].do", "unknown step"),
    (("temperature: 0.2", "temperature: 5"), "summarise", "input.temperature", "at most 2"),
    (("temperature: 0.2", "temperature: hot"), "summarise", "input.temperature", "number"),
    (('input: {input: "{{ inputs.ticket }}"}', 'input: {input: "{{ inputs.ticket "}'), "moderate", "input.input",
     "syntax"),
    (("    input: {}\n", "    input: {}\n    concurrency: 3\n"), "reject", "concurrency", "with_items"),
    (("    input: {}\n", "    input: {}\n    colour: red\n"), "reject", None, "unknown key"),
])
def test_load_errors_name_file_step_and_field(change: tuple[str, str], step: str, field: str | None,
                                              words: str) -> None:
    error = _error(BASE.replace(*change))
    assert error.file == "wf.yaml" and error.step == step
    if field:
        assert error.field == field
    assert words in str(error)


def test_yaml_syntax_error_has_a_line() -> None:
    error = _error("name: x\nsteps:\n  - id: [unclosed\n")
    assert "line" in str(error) and error.file == "wf.yaml"


def test_on_is_a_key_not_a_boolean() -> None:
    assert parse_workflow(BASE).step("moderate").on is not None


CONTEXT = {"inputs": {"ticket": "{{ 7*7 }}", "n": 3, "tags": [1, 2], "obj": {"a": True}},
           "steps": {"list": {"output": {"data": ["x", "y"]}}}, "vars": {}}


def test_render_keeps_native_types_and_never_renders_payloads() -> None:
    assert render("{{ inputs.n }}", CONTEXT) == 3
    assert render("{{ steps.list.output.data }}", CONTEXT) == ["x", "y"]
    assert render(" {{ inputs.obj }} ", CONTEXT) == {"a": True}
    assert render("{{ inputs.n > 2 }}", CONTEXT) is True
    assert render("n={{ inputs.n }}", CONTEXT) == "n=3"
    assert render({"a": ["{{ inputs.n }}", "plain"]}, CONTEXT) == {"a": [3, "plain"]}
    assert render("{{ inputs.ticket }}", CONTEXT) == "{{ 7*7 }}"
    assert render("{{ '{\"k\": 1}' | fromjson }}", CONTEXT) == {"k": 1}


@pytest.mark.parametrize(("template", "reason"), [
    ("{{ steps.list.output.missing }}", "undefined"),
    ("{{ nothing }}", "undefined"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox"),
    ("{{ inputs.tags.append(3) }}", "sandbox"),
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_template_errors_name_the_step_and_expression(template: str, reason: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(template, CONTEXT, step="summarise")
    assert caught.value.step == "summarise" and caught.value.reason == reason
    assert "step 'summarise'" in str(caught.value) and template.strip() in str(caught.value)
    assert CONTEXT["inputs"]["tags"] == [1, 2]


def test_conditions() -> None:
    assert evaluate("{{ inputs.n == 3 }}", CONTEXT) is True
    assert evaluate("{{ 'false' }}", CONTEXT) is False
    assert evaluate("{{ inputs.tags | length > 5 }}", CONTEXT) is False


def test_transitions() -> None:
    workflow = parse_workflow(BASE)
    clean = {"steps": {"moderate": {"output": {"flagged": False}}}, "vars": {}, "inputs": {}}
    flagged = {"steps": {"moderate": {"output": {"flagged": True}}}, "vars": {}, "inputs": {}}
    assert workflow.next_steps("moderate", "succeeded", clean) == (["summarise"], {"verdict": "ok", "again": "ok",
                                                                                   "seen": True})
    assert workflow.next_steps("moderate", "succeeded", flagged) == (["reject"], {"verdict": "rejected",
                                                                                  "seen": True})
    assert workflow.next_steps("moderate", "failed", clean) == (["reject"], {"seen": True})
    assert workflow.next_steps("summarise", "succeeded", clean) == (["reject"], {})  # default: next in list
    assert workflow.next_steps("summarise", "failed", clean) == ([], {})
    assert workflow.next_steps("reject", "succeeded", clean) == ([], {})


def test_inputs_are_coerced_defaulted_and_checked() -> None:
    workflow = parse_workflow(BASE)
    assert workflow.coerce_inputs({"ticket": "t", "count": "5", "tags": '["a"]'}) == {
        "ticket": "t", "count": 5, "tags": ["a"]}
    assert workflow.coerce_inputs('{"ticket": "t"}') == {"ticket": "t", "count": 2, "tags": []}
    for bad, field in (({}, "ticket"), ({"ticket": "t", "extra": 1}, "extra"), ({"ticket": "t", "count": "x"},
                                                                                "count")):
        with pytest.raises(InputError) as caught:
            workflow.coerce_inputs(bad)
        assert caught.value.problems[0]["field"] == field or field in str(caught.value)
