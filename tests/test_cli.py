"""The CLI's contract: results as JSON on stdout, every failure one JSON error on stderr, exit code by class.

Most tests call ``workers.cli.main.main(argv)`` in this process (the same function the console
script runs); a few run ``python -m workers.cli`` as a user would, for what only a real process
shows: bytes that are not UTF-8 in an argument, tracebacks, the standalone ``serve`` entry point.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from actions import MAX_DEPTH
from integration.errors import ConfigError, InputError, PackError, ServerError
from tests.conftest import REPO_ROOT, run_cli
from workers.cli import boundary
from workers.cli.inputs import read_json_object
from workers.cli.main import main
from workers.cli.output import json_text

EXAMPLE = REPO_ROOT / "docs" / "examples" / "ticket-triage.yaml"
DEEP = "[" * 100_000 + "]" * 100_000

Result = tuple[int, str, str]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``openai-pack ARGS`` in this process: (exit code, stdout, stderr)."""

    def invoke(*args: str) -> Result:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out, err

    return invoke


def _error(stderr: str) -> dict[str, Any]:
    """The one JSON error a failure prints on stderr."""
    assert "Traceback" not in stderr
    return json.loads(stderr)["error"]


# ---------------------------------------------------------------- workflow run --input (issue 10, D7)


def test_workflow_run_input_from_a_missing_file_is_a_field_named_error(cli: Callable[..., Result],
                                                                      tmp_path: Path) -> None:
    code, out, err = cli("workflow", "run", str(EXAMPLE), "--input", f"@{tmp_path / 'missing.json'}")
    assert code == 2 and out == ""
    error = _error(err)
    assert error["field"] == "--input" and "missing.json" in error["message"]


@pytest.mark.parametrize("where", ["inline", "file"])
def test_workflow_run_input_nested_100000_deep_is_refused(cli: Callable[..., Result], tmp_path: Path,
                                                          where: str) -> None:
    document = '{"ticket": ' + DEEP + "}"
    if where == "file":
        (tmp_path / "deep.json").write_text(document)
        document = f"@{tmp_path / 'deep.json'}"
    code, _, err = cli("workflow", "run", str(EXAMPLE), "--input", document)
    assert code == 2
    error = _error(err)
    assert error["field"].startswith("--input") and "deeper" in error["message"]


def test_workflow_run_input_file_that_is_not_utf8_is_refused(cli: Callable[..., Result], tmp_path: Path) -> None:
    latin1 = tmp_path / "ticket.json"
    latin1.write_bytes('{"ticket": "caf\u00e9"}'.encode("latin-1"))
    code, _, err = cli("workflow", "run", str(EXAMPLE), "--input", f"@{latin1}")
    assert code == 2
    error = _error(err)
    assert error["field"] == "--input" and "not UTF-8" in error["message"] and "0xe9" in error["message"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_workflow_run_input_nan_and_infinity_are_refused_naming_the_field(cli: Callable[..., Result],
                                                                          constant: str) -> None:
    text = f'{{"subject": "s", "body": "b", "customer": {{"tags": [1, {constant}]}}}}'
    code, _, err = cli("workflow", "run", str(EXAMPLE), "--input", text)
    assert code == 2
    error = _error(err)
    assert error["field"] == "--input" and constant.lstrip("-") in error["message"]


@pytest.mark.parametrize(("text", "field"), [('{"subject": "s", "body": "\\ud800"}', "body"),
                                             ('{"subject": "s", "body": "\udcff"}', "body"),
                                             ('{"subject": "s", "body": "b", "\\udfff": 1}', "\\udfff")],
                         ids=["escaped", "undecodable-argv-byte", "in-a-key"])
def test_workflow_run_input_lone_surrogates_are_refused_not_replaced(cli: Callable[..., Result], text: str,
                                                                      field: str) -> None:
    """Paths inside ``--input`` are the workflow's input names, as in every other input error."""
    code, _, err = cli("workflow", "run", str(EXAMPLE), "--input", text)
    assert code == 2
    error = _error(err)
    assert error["field"] == field and "lone surrogate" in error["message"]


@pytest.mark.parametrize(("text", "reason"), [("[1, 2]", "JSON object"), ('{"a": 1', "not valid JSON"),
                                              ("1" * 5000, "not valid JSON")])
def test_workflow_run_input_that_is_not_a_json_object_is_refused(cli: Callable[..., Result], text: str,
                                                                 reason: str) -> None:
    code, _, err = cli("workflow", "run", str(EXAMPLE), "--input", text)
    assert code == 2 and reason in _error(err)["message"]


def test_input_nesting_limit_is_exact() -> None:
    def nested(depth: int) -> str:  # ``depth`` containers in all, the object included
        return '{"a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    assert read_json_object(nested(MAX_DEPTH), "--input")
    with pytest.raises(InputError, match="deeper than"):
        read_json_object(nested(MAX_DEPTH + 1), "--input")
    assert read_json_object(' {"ticket": {"subject": "caf\u00e9 \U0001f600", "n": 1.5}}', "--input") == {
        "ticket": {"subject": "caf\u00e9 \U0001f600", "n": 1.5}}


def test_a_real_process_refuses_deep_and_undecodable_input_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text(DEEP)
    for argument, field in ((f"@{tmp_path / 'deep.json'}".encode(), "--input"), (b'{"body": "\xff\xfe"}', "body")):
        result = subprocess.run([sys.executable, "-m", "workers.cli", "workflow", "run", str(EXAMPLE), "--input",
                                 argument], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 2, result.stderr
        assert _error(result.stderr)["field"] == field


# ---------------------------------------------------------------- workflow validate A B C D E (issue 10)


def test_workflow_validate_reports_every_broken_file(cli: Callable[..., Result], tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    broken = {
        "unknown-action.yaml": text.replace("action: create_chat_completion", "action: create_chat_completions", 1),
        "not-yaml.yaml": "steps: [\n",
        "no-steps.yaml": "name: empty\n",
    }
    for name, content in broken.items():
        (tmp_path / name).write_text(content)
    files = [str(tmp_path / "unknown-action.yaml"), str(EXAMPLE), str(tmp_path / "not-yaml.yaml"),
             str(tmp_path / "missing.yaml"), str(tmp_path / "no-steps.yaml")]
    code, out, err = cli("workflow", "validate", *files)
    assert code == 2
    assert f"ok {EXAMPLE}" in out and out.count("ok ") == 1
    error = _error(err)
    assert error["code"] == "workflow_invalid" and error["message"].startswith("4 of 5 workflow files")
    assert [e["file"] for e in error["errors"]] == [files[0], files[2], files[3], files[4]]
    assert "create_chat_completions" in error["errors"][0]["message"]


def test_workflow_validate_of_one_broken_file_prints_its_own_error(cli: Callable[..., Result],
                                                                  tmp_path: Path) -> None:
    code, out, err = cli("workflow", "validate", str(tmp_path / "missing.yaml"))
    assert code == 2 and out == ""
    assert _error(err)["file"] == str(tmp_path / "missing.yaml")


def test_workflow_validate_of_good_files_exits_0(cli: Callable[..., Result]) -> None:
    code, out, err = cli("workflow", "validate", str(EXAMPLE), str(EXAMPLE))
    assert (code, err) == (0, "") and out.count("ok ") == 2


# ---------------------------------------------------------------- the error boundary


def _app_raising(error: BaseException) -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def fail() -> None:
        raise error

    @app.command()
    def succeed() -> None:
        print("done")

    return app


def _through_boundary(app: typer.Typer, args: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    with pytest.raises(SystemExit) as exited:
        boundary.run(app, args)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


class _InputLookalike(PackError):
    """A code string that says "input", a class that says "failure": the class wins."""

    code = "invalid_input"
    exit_code = 1


@pytest.mark.parametrize(("error", "expected"), [
    (InputError([{"field": "x", "reason": "is bad"}]), 2),
    (ConfigError("no key", field="api_key"), 2),
    (ServerError("upstream broke", status=503), 1),
    (_InputLookalike("looks like input"), 1),
])
def test_the_exit_code_is_the_error_class(capsys: pytest.CaptureFixture[str], error: PackError,
                                          expected: int) -> None:
    code, out, err = _through_boundary(_app_raising(error), ["fail"], capsys)
    assert (code, out) == (expected, "")
    assert _error(err)["type"] == type(error).__name__


def test_an_unexpected_exception_is_a_json_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _through_boundary(_app_raising(RecursionError("maximum recursion depth exceeded")), ["fail"],
                                     capsys)
    assert code == 1
    assert _error(err) == {"type": "RecursionError", "code": "internal_error", "category": "internal",
                           "message": "maximum recursion depth exceeded"}


def test_success_and_usage_errors_keep_click_behaviour(capsys: pytest.CaptureFixture[str]) -> None:
    app = _app_raising(RuntimeError("unused"))
    assert _through_boundary(app, ["succeed"], capsys)[:2] == (0, "done\n")
    code, _, err = _through_boundary(app, ["succeed", "--no-such-option"], capsys)
    assert code == 2 and "--no-such-option" in err


def test_errors_from_pack_commands_go_through_the_boundary(cli: Callable[..., Result], tmp_path: Path) -> None:
    assert _error(cli("actions", "show", "no_such_action")[2])["field"] == "action"
    assert cli("runs", "show", "no-such-run")[0] == 2
    code, _, err = cli("docs", "--output", str(tmp_path / "missing-dir" / "actions.md"))
    assert code == 2 and _error(err)["field"] == "--output"


def test_json_output_with_a_lone_surrogate_is_escaped_not_a_crash() -> None:
    text = json_text({"echo": "a\ud800b"})
    text.encode("utf-8")
    assert json.loads(text) == {"echo": "a\ud800b"}
    assert json_text({"plain": "caf\u00e9"}) == '{\n  "plain": "caf\u00e9"\n}'


def test_standalone_serve_reports_through_the_same_boundary() -> None:
    result = subprocess.run([sys.executable, "-m", "workers.cli.serve", "serve", "--workflows", "docs/examples",
                             "--rate-per-minute", "0"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2
    assert _error(result.stderr)["field"] == "--rate-per-minute"


# ---------------------------------------------------------------- a run that fails


FAILING = """
name: refused-at-run-time
inputs:
  role: {type: string, required: true}
steps:
  - id: ask
    action: create_chat_completion
    input:
      model: gpt-4o-mini
      messages: [{role: "{{ inputs.role }}", content: hi}]
"""


def test_a_run_that_fails_exits_1_with_its_record_and_an_error(pack: Any, worker_env: dict[str, str],
                                                              simulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "failing.yaml"
    path.write_text(FAILING)
    result = run_cli(worker_env, "workflow", "run", str(path), "--input", '{"role": "bogus"}', "--wait", "--json")
    assert result.returncode == 1, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    error = _error(result.stderr)
    assert error["code"] == "run_not_succeeded" and error["run_id"] == record["id"]
    assert simulator.calls == 0
