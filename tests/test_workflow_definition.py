"""Workflow definitions and templates, without a broker: load errors, rendering, transitions, inputs."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from integration import errors
from integration.errors import InputError, error_from_dict
from tests.conftest import run_cli
from tests.fixtures import workflow_path, workflow_text
from workers.workflow import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_STEPS,
    MAX_VALUES,
    TemplateError,
    Transition,
    WorkflowError,
    YAMLLimitError,
    evaluate,
    load_workflow,
    load_workflow_dir,
    load_yaml,
    parse_workflow,
    render,
    workflow_from_dict,
)

TRIAGE = workflow_text("triage.yaml")


def _error(text: str, source: str = "wf.yaml") -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        parse_workflow(text, source)
    return caught.value


# ---------------------------------------------------------------- loading


def test_a_valid_workflow_loads_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "triage.yaml"
    path.write_text(TRIAGE)
    workflow = load_workflow(path)
    assert workflow.name == "ticket-triage" and workflow.start == "moderate" and workflow.source == str(path)
    assert [s.id for s in workflow.steps] == ["moderate", "summarise", "comments", "reject"]
    moderate = workflow.step("moderate")
    assert (moderate.integration, moderate.retries, moderate.timeout, moderate.redact) == ("acme", 2, 30.0,
                                                                                          ("results",))
    assert moderate.on is not None and moderate.on[0] == Transition("success", moderate.on[0].condition,
                                                                    {"verdict": "rejected"}, ("reject",))
    assert moderate.on[1].do == ("summarise",)  # deduplicated
    assert workflow.step("summarise").on is None and workflow.step("reject").on == ()
    assert workflow.step("comments").concurrency == 10 and workflow.step("summarise").concurrency == 5
    assert workflow.webhook is not None and workflow.webhook.signature == "hmac-sha256"
    assert workflow.webhook.max_body_bytes == 1024 * 1024


def test_json_files_load_too(tmp_path: Path) -> None:
    data = {"name": "j", "start": "b", "steps": [{"id": "a", "action": "list_models"},
                                                 {"id": "b", "action": "retrieve_model", "input": {"model": "x"}}]}
    path = tmp_path / "j.json"
    path.write_text(json.dumps(data))
    assert load_workflow(path).start == "b"
    path.write_text('{"name": "j",\n "steps": [}')
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    assert caught.value.line == 2 and "line 2" in str(caught.value) and caught.value.file == str(path)


def test_on_and_no_are_not_booleans_and_dates_stay_text() -> None:
    text = TRIAGE.replace("content: Summarise the ticket.", "content: 2024-01-01").replace(
        "priority: {type: string, enum: [low, normal, high], default: normal}",
        "priority: {type: string, enum: [yes, no], default: no}")
    workflow = parse_workflow(text)
    assert workflow.step("moderate").on is not None
    assert workflow.inputs["priority"]["default"] == "no"
    assert workflow.step("summarise").input["messages"][0]["content"] == "2024-01-01"


@pytest.mark.parametrize(("change", "step", "field", "words"), [
    (("action: create_moderation\n    integration", "action: create_moderations\n    integration"), "moderate",
     "action", "did you mean 'create_moderation'"),
    (("action: create_moderation\n    integration", "action: make_coffee\n    integration"), "moderate", "action",
     "openai-pack actions list"),
    (("id: reject", "id: summarise"), "summarise", "id", "used by more than one step"),
    (("do: [summarise, summarise]", "do: [sumarise]"), "moderate", "on[1].do", "did you mean 'summarise'"),
    (("concurrency: 10", "concurrency: 0"), "comments", "concurrency", "at least 1"),
    (("    input: {}\n", "    input: {}\n    concurrency: 3\n"), "reject", "concurrency", "with_items"),
    (('with_items: "{{ inputs.comments }}"', "with_items: inputs.comments"), "comments", "with_items", "template"),
    (("temperature: 0.2", "temperature: 5"), "summarise", "input.temperature", "at most 2"),
    (("temperature: 0.2", "temperature: hot"), "summarise", "input.temperature", "number"),
    (("{role: system, content: Summarise the ticket.}", "{role: robot, content: hi}"), "summarise",
     "input.messages[0].role", "must be one of"),
    (("    input: {}\n", "    input: {}\n    colour: red\n"), "reject", "colour", "not a known field"),
    (("    input: {}\n", "    input: {}\n    retry: 2\n"), "reject", "retry", "did you mean 'retries'"),
    (("integration: acme", 'integration: "{{ inputs.tenant }}"'), "moderate", "integration", "not a declared input"),
    (('input: "{{ inputs.ticket }}"', 'input: "{{ inputs.ticket "'), "moderate", "input.input", "syntax error"),
    (('input: "{{ inputs.ticket }}"', 'input: "{{ inputs.tikcet }}"'), "moderate", "input.input",
     "did you mean 'ticket'"),
    (('content: "{{ inputs.ticket }}"', 'content: "{{ steps.moderat.output }}"'), "summarise",
     "input.messages[1].content", "did you mean 'moderate'"),
    (('content: "{{ inputs.ticket }}"', 'content: "{{ item }}"'), "summarise", "input.messages[1].content",
     "with_items"),
    (('content: "{{ inputs.ticket }}"', 'content: "{{ CTX.ticket }}"'), "summarise", "input.messages[1].content",
     "Rewst's CTX"),
    (('if: "{{ steps.moderate.output.results[0].flagged }}"', "if: steps.moderate.output.results[0].flagged"),
     "moderate", "on[0].if", "always count as true"),
    (('flagged_at: "{{ run.id }}"', 'flagged_at: "{{ run.id | nofilter }}"'), "moderate", "on[1].publish.flagged_at",
     "syntax error"),
])
def test_load_errors_name_file_step_and_field(change: tuple[str, str], step: str, field: str, words: str) -> None:
    assert change[0] in TRIAGE
    error = _error(TRIAGE.replace(*change))
    assert (error.file, error.step, error.field) == ("wf.yaml", step, field)
    assert words in str(error) and words in error.reason
    assert str(error).startswith(f"wf.yaml: step {step!r}: {field}: ")


@pytest.mark.parametrize(("change", "field", "words"), [
    (("name: ticket-triage", "name: Ticket Triage"), "name", "pattern"),
    (("steps:\n  - id: moderate", "start: moderat\nsteps:\n  - id: moderate"), "start", "did you mean 'moderate'"),
    (("count: {type: integer, default: 2}", "count: {type: integer, default: two}"), "inputs.count",
     "whole number"),
    (('verdict: "{{ vars.verdict }}"', 'verdict: "{{ inputs.nope }}"'), "output.verdict", "not a declared input"),
    (("secret_env: TRIAGE_HOOK_SECRET", "secret_env: triage"), "webhook.secret_env", "pattern"),
])
def test_workflow_level_errors_name_the_field(change: tuple[str, str], field: str, words: str) -> None:
    error = _error(TRIAGE.replace(*change))
    assert (error.file, error.step, error.field) == ("wf.yaml", None, field)
    assert words in str(error)


def test_yaml_syntax_errors_give_the_line() -> None:
    error = _error("name: x\nsteps:\n  - id: [unclosed\n    action: list_models\n")
    assert error.file == "wf.yaml" and error.line is not None and f"line {error.line}" in str(error)
    twice = _error("name: x\nsteps:\n  - id: a\n    action: list_models\n    action: retrieve_model\n")
    assert twice.line == 5 and "'action' twice" in str(twice)


def test_a_missing_required_input_is_found_unless_templated() -> None:
    base = "name: x\nsteps:\n  - id: check\n    action: create_moderation\n"
    assert _error(base + "    input: {}\n").field == "input.input"
    assert parse_workflow(base + "    input: {input: '{{ run.id }}'}\n").step("check").input == {
        "input": "{{ run.id }}"}


def test_cycles_are_allowed() -> None:
    text = """
name: loop
steps:
  - id: a
    action: list_models
    on: [{do: b}]
  - id: b
    action: list_models
    on: [{when: failure, do: a}]
"""
    assert parse_workflow(text).step("b").on == (Transition("failure", None, {}, ("a",)),)


def test_load_workflow_dir_skips_other_yaml_and_rejects_duplicate_names(tmp_path: Path) -> None:
    (tmp_path / "triage.yaml").write_text(TRIAGE)
    (tmp_path / "schedules.yaml").write_text("schedules: []\n")
    (tmp_path / "notes.txt").write_text("not yaml: [")
    assert list(load_workflow_dir(tmp_path)) == ["ticket-triage"]
    (tmp_path / "triage2.yml").write_text(TRIAGE)
    with pytest.raises(WorkflowError) as caught:
        load_workflow_dir(tmp_path)
    assert caught.value.field == "name" and caught.value.file == str(tmp_path / "triage2.yml")
    (tmp_path / "triage2.yml").write_text("name: [")
    with pytest.raises(WorkflowError, match="line"):
        load_workflow_dir(tmp_path)


# ---------------------------------------------------------------- loading limits (docs/workflows.md, "Limits")


def _one_step(extra: str = "") -> str:
    return f"name: x\n{extra}steps:\n  - {{id: a, action: list_models}}\n"


def test_a_yaml_bomb_is_refused_while_parsing() -> None:
    error = _error(workflow_text("billion-laughs.yaml"), "lol.yaml")
    assert error.file == "lol.yaml" and error.line is not None
    assert f"expands to more than {MAX_VALUES} values" in str(error) and "docs/workflows.md" in str(error)
    with pytest.raises(YAMLLimitError):  # the schedules file is read by the same bounded reader
        load_yaml(workflow_text("billion-laughs.yaml"))


def test_anchors_and_merge_keys_within_the_limits_still_work() -> None:
    workflow = load_workflow(workflow_path("anchors.yaml"))
    assert workflow.step("second").input == {"model": "gpt-4o-mini", "temperature": 0.2,
                                             "messages": [{"role": "user", "content": "second"}]}
    assert workflow.step("third").input == workflow.step("first").input


@pytest.mark.parametrize(("source", "text"), [
    ("deep.yaml", "name: deep\nsteps: " + "[" * 50_000 + "]" * 50_000 + "\n"),
    ("deep-block.yaml", "name: deep\nsteps:\n" + "".join(" " * i + "- \n" for i in range(2, 200))),
    ("deep.json", '{"name": "deep", "steps": ' + "[" * 50_000 + "]" * 50_000 + "}"),
    ("deep-below-recursion.json", '{"name": "deep", "steps": ' + "[" * 500 + "]" * 500 + "}"),
])
def test_deep_nesting_is_refused_without_a_recursion_error(source: str, text: str) -> None:
    error = _error(text, source)
    assert error.file == source and f"nests deeper than {MAX_DEPTH} levels" in str(error)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    def nested(levels: int) -> str:  # the document and `output` are two levels, the lists the rest
        return _one_step() + "output: {a: " + "[" * (levels - 2) + "]" * (levels - 2) + "}\n"

    for source in ("at-limit.yaml", "at-limit.json"):
        text = nested(MAX_DEPTH)
        if source.endswith(".json"):
            text = json.dumps(load_yaml(text))
        assert parse_workflow(text, source).output is not None
        assert f"nests deeper than {MAX_DEPTH}" in str(_error(nested(MAX_DEPTH + 1), "over.yaml"))


def test_a_large_json_document_is_refused_by_its_number_of_values() -> None:
    text = json.dumps({"name": "x", "steps": [{"id": "a", "action": "list_models"}],
                       "output": {"n": [0] * MAX_VALUES}}, separators=(",", ":"))
    assert len(text) < MAX_FILE_BYTES
    error = _error(text, "big.json")
    assert error.file == "big.json" and f"holds more than {MAX_VALUES} values" in str(error)


def test_files_over_the_size_limit_are_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(_one_step("description: " + "x" * MAX_FILE_BYTES + "\n"))
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    assert caught.value.file == str(path) and f"larger than {MAX_FILE_BYTES}" in str(caught.value)
    assert f"larger than {MAX_FILE_BYTES} characters" in str(_error(path.read_text(), "text.yaml"))
    with pytest.raises(WorkflowError, match="larger than"):
        load_workflow_dir(tmp_path)


def test_the_number_of_steps_is_capped() -> None:
    steps = "".join(f"  - {{id: s{i}, action: list_models}}\n" for i in range(MAX_STEPS + 1))
    error = _error(f"name: many\nsteps:\n{steps}", "many.yaml")
    assert error.field == "steps" and f"has {MAX_STEPS + 1} steps, more than {MAX_STEPS}" in str(error)


def test_cli_validate_answers_a_huge_or_hostile_file_with_the_error(tmp_path: Path) -> None:
    """D13: a 10 MB, 100k-step file and a YAML bomb get their error and exit code 2, no traceback."""
    big = tmp_path / "big.yaml"
    big.write_text("name: big\nsteps:\n" + "".join(
        f"  - {{id: s{i}, action: list_models, description: padded to ten megabytes {'x' * 50}}}\n"
        for i in range(100_000)))
    assert big.stat().st_size > 10_000_000
    for path, words in ((big, f"larger than {MAX_FILE_BYTES}"), (workflow_path("billion-laughs.yaml"), "expands")):
        result = run_cli(dict(os.environ), "workflow", "validate", str(path))
        assert result.returncode == 2, result.stderr
        assert words in result.stdout + result.stderr and "Traceback" not in result.stdout + result.stderr


# ---------------------------------------------------------------- errors as data


def test_workflow_error_shape_survives_pickle_and_dicts() -> None:
    error = WorkflowError("must be at most 2", file="t.yaml", step="summarise", field="input.temperature")
    assert str(error) == "t.yaml: step 'summarise': input.temperature: must be at most 2"
    assert str(WorkflowError("bad", file="t.yaml")) == "t.yaml: bad"
    data = error.to_dict()
    assert data["code"] == "workflow_invalid" and data["retryable"] is False
    assert isinstance(error, errors.WorkflowError) and error.exit_code == 2  # one error tree
    assert issubclass(TemplateError, errors.TemplateError) and TemplateError("x").exit_code == 2
    assert (data["file"], data["step"], data["field"]) == ("t.yaml", "summarise", "input.temperature")
    for rebuilt in (pickle.loads(pickle.dumps(error)), error_from_dict(json.loads(json.dumps(data)))):
        assert type(rebuilt) is WorkflowError and str(rebuilt) == str(error)
        assert (rebuilt.file, rebuilt.step, rebuilt.field, rebuilt.reason) == ("t.yaml", "summarise",
                                                                               "input.temperature", "must be at most 2")
    partial = pickle.loads(pickle.dumps(WorkflowError("bad", file="t.yaml")))
    assert partial.step is None and partial.field is None


def test_template_error_survives_pickle_and_dicts() -> None:
    with pytest.raises(TemplateError) as caught:
        render("{{ steps.moderate.output.result }}", {"steps": {"moderate": {"output": {}}}}, step="summarise")
    error = caught.value
    assert str(error) == "step 'summarise': template {{ steps.moderate.output.result }}: " \
                         "'dict object' has no attribute 'result'"
    assert error.to_dict()["code"] == "template_error" and error.retryable is False
    for rebuilt in (pickle.loads(pickle.dumps(error)), error_from_dict(error.to_dict())):
        assert type(rebuilt) is TemplateError and str(rebuilt) == str(error)
        assert (rebuilt.step, rebuilt.expression) == ("summarise", "{{ steps.moderate.output.result }}")


# ---------------------------------------------------------------- templates

CONTEXT: dict[str, Any] = {
    "inputs": {"ticket": "{{ 7*7 }} {% if 1 %}x{% endif %}", "n": 3, "tags": ["b", "a"], "obj": {"a": True}},
    "steps": {"list": {"output": {"data": ["x", "y"]}, "status": "succeeded"}},
    "vars": {"verdict": "clean"},
    "run": {"id": "run-1"},
}


def test_a_single_expression_keeps_its_native_type() -> None:
    assert render("{{ inputs.n }}", CONTEXT) == 3
    assert render("{{ steps.list.output.data }}", CONTEXT) == ["x", "y"]
    assert render(" {{ inputs.obj }}\n", CONTEXT) == {"a": True}
    assert render("{{ inputs.n > 2 }}", CONTEXT) is True
    assert render("{{- inputs.n -}}", CONTEXT) == 3
    assert render("{{ none }}", CONTEXT) is None
    assert render("{{ inputs.tags | sort }}", CONTEXT) == ["a", "b"]
    assert render("{{ inputs.tags | map('upper') }}", CONTEXT) == ["B", "A"]  # a generator becomes a list
    assert render("{{ {'n': inputs.n, 'l': [inputs.n]} }}", CONTEXT) == {"n": 3, "l": [3]}
    assert render("{{ '{\"k\": 1}' | fromjson }}", CONTEXT) == {"k": 1}
    assert type(render("{{ inputs.obj | tojson }}", CONTEXT)) is str
    assert render("{{ inputs.missing | default('x') }}", CONTEXT) == "x"


def test_other_templates_render_as_text_and_plain_strings_pass_through() -> None:
    assert render("n={{ inputs.n }}", CONTEXT) == "n=3"
    assert render("{{ inputs.n }}{{ inputs.n }}", CONTEXT) == "33"
    assert render("{% for t in inputs.tags %}{{ loop.index }}{{ t }}{% endfor %}", CONTEXT) == "1b2a"
    assert render("no template } here {", CONTEXT) == "no template } here {"
    assert render({"a": ["{{ inputs.n }}", "plain", 1, None], "b": {"c": "{{ run.id }}"}}, CONTEXT) == {
        "a": [3, "plain", 1, None], "b": {"c": "run-1"}}


def test_payloads_are_never_rendered_again() -> None:
    assert render("{{ inputs.ticket }}", CONTEXT) == "{{ 7*7 }} {% if 1 %}x{% endif %}"
    assert render("Ticket: {{ inputs.ticket }}", CONTEXT) == "Ticket: {{ 7*7 }} {% if 1 %}x{% endif %}"
    assert render({"messages": [{"content": "{{ inputs.ticket }}"}]}, CONTEXT) == {
        "messages": [{"content": "{{ 7*7 }} {% if 1 %}x{% endif %}"}]}


@pytest.mark.parametrize(("template", "reason", "words"), [
    ("{{ steps.list.output.missing }}", "undefined", "has no attribute 'missing'"),
    ("{{ nothing }}", "undefined", "'nothing' is undefined"),
    ("Hello {{ nothing }}", "undefined", "'nothing' is undefined"),
    ("{{ [inputs.n, steps.list.nope] }}", "undefined", "no attribute 'nope'"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox", "unsafe"),
    ("{{ ''.__class__ }}", "sandbox", "unsafe"),
    ("{{ inputs.__init__.__globals__ }}", "sandbox", "unsafe"),
    ("{{ inputs.tags.append(3) }}", "sandbox", "unsafe"),
    ("{{ 'x' * 100000000 }}", "limit", "more than 4000000"),
    ("{{ 10 ** 1000000 }}", "limit", "too large"),
    ("{{ 1 / 0 }}", "ZeroDivisionError", "division by zero"),
    ("{{ 'no json' | fromjson }}", "JSONDecodeError", "Expecting value"),
])
def test_template_errors_name_the_step_and_expression(template: str, reason: str, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render({"field": [template]}, CONTEXT, step="summarise")
    error = caught.value
    assert error.step == "summarise" and error.reason == reason and error.expression == template
    assert str(error).startswith(f"step 'summarise': template {template}: ") and words in str(error)
    assert CONTEXT["inputs"]["tags"] == ["b", "a"]


_BIG = "{% set s = 'x' * 1000000 %}"


@pytest.mark.parametrize("template", [
    "{{ 'a' | center(50000000) }}",
    "text {{ 'a' | center(50000000) }}",
    "{{ 'a'.center(50000000) }}",
    "{{ 'a'.ljust(50000000) }}",
    "{{ 'a'.zfill(50000000) }}",
    "{{ ('\t' * 1000).expandtabs(100000) }}",
    "{{ '%50000000s' | format('a') }}",
    "{{ '%*s' | format(50000000, 'a') }}",
    "{{ '%50000000s' % 'a' }}",
    "{{ '{:>50000000}'.format('a') }}",
    "{{ '{:>{w}}'.format('a', w=50000000) }}",
    "{{ ('{:>50000000}' | tojson).format(1) }}",
    "{{ ('x' * 1000000) | replace('x', 'yyyyyyyyyy') }}",
    "{{ ('x' * 3000000).replace('', 'ab') }}",
    "{{ 'aaaa'.translate({97: 'x' * 2000000}) }}",
    "{{ 'a\nb' | indent(50000000) }}",
    "{{ 'a b' | wordwrap(1, wrapstring='x' * 1000000) }}",
    "{{ [1] | batch(100000000, 0) | list }}",
    "{{ [('x' * 1000000)] * 10 }}",
    _BIG + "{{ [s, s, s, s, s] | join }}",
    _BIG + "{{ '-'.join([s, s, s, s, s]) }}",
    _BIG + "{{ [s, s, s, s, s] | tojson }}",
    _BIG + "{{ [s, s, s, s, s] | string }}",
    _BIG + "{{ [s, s, s, s, s] }}",
    _BIG + "{{ [s, s, s, s, s] }} as text",
    _BIG + "{{ s ~ s ~ s ~ s ~ s }}",
    _BIG + "{{ s + s + s + s + s }}",
    _BIG + "{% for i in range(5) %}{{ s }}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(l=['x']) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in inputs.tags %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}{% endfor %}"
    "{% endfor %}",
])
def test_templates_cannot_build_huge_values_or_loop_without_end(template: str) -> None:
    """D14: every operation that can multiply its input is capped before it runs; loops are counted."""
    with pytest.raises(TemplateError) as caught:
        render({"field": template}, CONTEXT, step="summarise")
    error = caught.value
    assert error.step == "summarise" and error.expression == template and error.reason == "limit"
    assert str(error).startswith(f"step 'summarise': template {template[:150]}")
    assert "exceeds a limit of the sandbox" in str(error)


def test_rendering_time_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recursive macro doubles its work at each level without a loop: the clock stops it."""
    from workers.workflow import templates

    monkeypatch.setattr(templates, "MAX_RENDER_SECONDS", 0.05)
    template = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    with pytest.raises(TemplateError) as caught:
        render(template, CONTEXT, step="slow")
    assert caught.value.reason == "limit" and caught.value.step == "slow"
    assert "rendering took longer than 0.05 s" in str(caught.value)


def test_templates_within_the_caps_still_work() -> None:
    assert render("{{ 'a' | center(5) }}|{{ '%3s' % 'b' }}|{{ '{:>3}'.format('c') }}", CONTEXT) == "  a  |  b|  c"
    assert len(render("{{ 'x' * 1000000 }}", CONTEXT)) == 1_000_000
    assert render("{{ inputs.tags | join('-') }}{% for i in range(3) %}{{ i }}{% endfor %}", CONTEXT) == "b-a012"
    assert render("{{ [inputs.tags] * 2 }}", CONTEXT) == [["b", "a"], ["b", "a"]]
    assert render("{% for t in [1, 2] %}{% for u in [3, 4] %}{{ t * u }}{% endfor %}{% endfor %}", CONTEXT) == "3468"


def test_dicts_and_lists_in_text_render_as_json() -> None:
    assert render("steps: {{ steps }}", CONTEXT) == 'steps: {"list": {"output": {"data": ["x", "y"]}, ' \
                                                   '"status": "succeeded"}}'
    assert render("{{ inputs.tags }} and {{ inputs.obj }}", CONTEXT) == '["b", "a"] and {"a": true}'
    assert render("{{ 'tags: ' ~ inputs.tags }}", CONTEXT) == 'tags: ["b", "a"]'
    assert json.loads(render("[{{ steps }}, {{ steps.list.output.data }}]", CONTEXT)) == [CONTEXT["steps"], ["x", "y"]]
    assert render("{{ steps }}", CONTEXT) == CONTEXT["steps"]  # one expression keeps its native value


def test_if_truthiness_of_text_and_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """As documented in docs/workflows.md: ``if`` reads the rendered text; ``not`` is Jinja's own truthiness."""
    context = {**CONTEXT, "inputs": {"flag": "false", "real": False}}
    for text in ("false", "False", " 0 ", "no", "None", "null", ""):
        assert evaluate("{{ inputs.flag }}", {**context, "inputs": {"flag": text}}) is False, text
    assert evaluate("{{ inputs.flag }}", context) is False
    assert evaluate("{{ not inputs.flag }}", context) is False  # "false" is a non-empty string inside Jinja
    assert evaluate("{{ not inputs.real }}", context) is True  # a declared boolean behaves as expected
    workflow = parse_workflow("name: x\ninputs:\n  flag: {type: boolean}\nsteps:\n  - {id: a, action: list_models}\n")
    assert workflow.coerce_inputs({"flag": "false"}) == {"flag": False}


def test_templates_are_compiled_once() -> None:
    from workers.workflow import templates as module

    before = module.compiled.cache_info().hits
    for index in range(200):
        assert render("{{ item }}-{{ index }}", {"item": "x", "index": index}) == f"x-{index}"
    assert module.compiled.cache_info().hits - before >= 199


def test_conditions() -> None:
    assert evaluate("{{ inputs.n == 3 }}", CONTEXT) is True
    assert evaluate("{{ inputs.tags | length > 5 }}", CONTEXT) is False
    assert evaluate("{{ steps.list.output.data }}", CONTEXT) is True
    for falsy in ("{{ 'false' }}", "{{ inputs.n == 4 }} ", "{{ 0 }}", "{{ '' }}", "{% if false %}yes{% endif %}"):
        assert evaluate(falsy, CONTEXT) is False, falsy
    with pytest.raises(TemplateError) as caught:
        evaluate("{{ steps.nope.output }}", CONTEXT, step="gate")
    assert caught.value.step == "gate"


# ---------------------------------------------------------------- transitions


def _context(flagged: bool | None) -> dict[str, Any]:
    steps = {} if flagged is None else {"moderate": {"output": {"results": [{"flagged": flagged}]}}}
    return {"steps": steps, "vars": {"earlier": 1}, "inputs": {}, "run": {"id": "r1"}}


def test_transitions_follow_when_if_and_publish() -> None:
    workflow = parse_workflow(TRIAGE)
    assert workflow.next_steps("moderate", "succeeded", _context(False)) == (
        ["summarise"], {"verdict": "clean", "flagged_at": "r1", "again": "clean", "seen": True})
    assert workflow.next_steps("moderate", "succeeded", _context(True)) == (
        ["reject"], {"verdict": "rejected", "seen": True})
    assert workflow.next_steps("moderate", "failed", _context(None)) == (["reject"], {"seen": True})
    assert workflow.next_steps("moderate", "cancelled", _context(None)) == ([], {"seen": True})  # only `always`


def test_without_on_success_goes_to_the_next_step_and_on_empty_ends() -> None:
    workflow = parse_workflow(TRIAGE)
    assert workflow.next_steps("summarise", "succeeded", _context(None)) == (["comments"], {})
    assert workflow.next_steps("summarise", "failed", _context(None)) == ([], {})
    assert workflow.next_steps("comments", "succeeded", _context(None)) == (["reject"], {})
    assert workflow.next_steps("reject", "succeeded", _context(None)) == ([], {})
    last = parse_workflow("name: x\nsteps:\n  - id: a\n    action: list_models\n")
    assert last.next_steps("a", "succeeded", {}) == ([], {})


def test_later_transitions_override_publish_and_targets_are_deduplicated() -> None:
    text = """
name: x
steps:
  - id: a
    action: list_models
    on:
      - {publish: {v: first, w: "{{ vars.earlier }}"}, do: [b, c]}
      - {when: always, publish: {x: "{{ vars.v }}", v: second}, do: [c, b, a]}
      - {when: failure, publish: {v: never}, do: [d]}
  - {id: b, action: list_models}
  - {id: c, action: list_models}
  - {id: d, action: list_models}
"""
    targets, published = parse_workflow(text).next_steps("a", "succeeded", _context(None))
    assert targets == ["b", "c", "a"] and published == {"v": "second", "w": 1, "x": "first"}  # in order


def test_condition_errors_name_the_step() -> None:
    workflow = parse_workflow(TRIAGE)
    with pytest.raises(TemplateError) as caught:
        workflow.next_steps("moderate", "succeeded", _context(None))  # the step has no output in the context
    assert caught.value.step == "moderate" and "steps.moderate.output" in str(caught.value)
    with pytest.raises(WorkflowError):
        workflow.next_steps("nope", "succeeded", _context(None))


# ---------------------------------------------------------------- inputs


def test_inputs_are_coerced_and_defaults_filled() -> None:
    workflow = parse_workflow(TRIAGE)
    assert workflow.coerce_inputs({"ticket": "t", "count": "3", "comments": '["a"]', "priority": "high"}) == {
        "ticket": "t", "count": 3, "comments": ["a"], "priority": "high"}
    assert workflow.coerce_inputs('{"ticket": "t"}') == {"ticket": "t", "priority": "normal", "count": 2,
                                                         "comments": []}
    assert workflow.coerce_inputs({"ticket": "t", "count": ""})["count"] == 2  # "" means not given
    first = workflow.coerce_inputs({"ticket": "t"})
    first["comments"].append("changed")
    assert workflow.coerce_inputs({"ticket": "t"})["comments"] == []  # defaults are copied


@pytest.mark.parametrize(("raw", "field", "words"), [
    ({}, "ticket", "is required"),
    (None, "ticket", "is required"),
    ({"ticket": "t", "tickets": 1}, "tickets", "did you mean 'ticket'"),
    ({"ticket": "t", "count": "x"}, "count", "whole number"),
    ({"ticket": "t", "priority": "urgent"}, "priority", "one of"),
    ("{not json", "", "not valid JSON"),
    ([1, 2], "", "must be an object"),
])
def test_bad_inputs_are_refused_naming_the_field(raw: Any, field: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_workflow(TRIAGE).coerce_inputs(raw)
    assert caught.value.field == field and words in str(caught.value)
    assert str(caught.value).startswith("workflow ticket-triage: ")


# ---------------------------------------------------------------- storing definitions


def test_to_dict_round_trips_through_json() -> None:
    workflow = parse_workflow(TRIAGE, "triage.yaml")
    stored = json.loads(json.dumps(workflow.to_dict()))
    again = workflow_from_dict(stored)
    assert again == workflow and again.source == "triage.yaml"
    assert again.to_dict() == stored
    assert again.next_steps("moderate", "succeeded", _context(False))[0] == ["summarise"]


def test_stored_definitions_load_even_if_an_action_is_gone() -> None:
    stored = parse_workflow(TRIAGE).to_dict()
    stored["steps"][3]["action"] = "retired_action"
    assert workflow_from_dict(stored).step("reject").action == "retired_action"


def test_yaml_int_keys_become_json_keys() -> None:
    text = """
name: bias
steps:
  - id: ask
    action: create_chat_completion
    input: {model: gpt-4o-mini, messages: [{role: user, content: hi}], logit_bias: {50256: -100}}
"""
    workflow = parse_workflow(text)
    assert workflow.step("ask").input["logit_bias"] == {"50256": -100}
    assert json.loads(json.dumps(workflow.to_dict())) == workflow.to_dict()


@pytest.mark.parametrize(("raw", "words"), [
    ('{"ticket": NaN}', "NaN"),
    ({"ticket": float("inf")}, "finite"),
    ({"ticket": "\ud800"}, "lone surrogate"),
    ("[" * 100_000, "deeper"),
    (b"\xff\xfe", "UTF-8"),
])
def test_workflow_inputs_refuse_what_json_cannot_carry(raw: Any, words: str) -> None:
    """Run inputs (CLI, webhook, Python) are refused with the field named, never crash later in a record."""
    workflow = parse_workflow("name: t\ninputs:\n  ticket: {type: string}\nsteps:\n  - id: a\n    action: list_models\n")
    with pytest.raises(InputError) as caught:
        workflow.coerce_inputs(raw)
    assert words in str(caught.value)
