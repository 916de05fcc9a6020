"""Answers that are not one JSON object: empty answers, bytes (save_to, base64, parse: jsonl), union bodies and
streams assembled beyond chat. The "done when" runs go through the CLI against the loopback simulator; the rest
run in-process (a CLI run is a process start)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tempfile
import threading
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import actions
from actions.simulator import Simulator, behaviours
from actions.simulator.media import wav_bytes
from integration import errors
from integration.model import Integration
from integration.store import IntegrationStore
from tests.conftest import run_cli

CHAT_LINE = {"method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}}


# ---------------------------------------------------------------- through the CLI (the "done when")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Simulator, Path]]:
    """A simulator and a CLI environment whose default integration points at it (one per module: each CLI run
    starts a process, so they share one server)."""
    home = tmp_path_factory.mktemp("cli-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["OPENAI_PACK_HOME"] = str(home)
    with Simulator(port=0) as sim:
        IntegrationStore(path=home / "integrations.json").add(
            Integration(name="sim", base_url=sim.url, auth={"placement": "none"}), make_default=True)
        yield env, sim, tmp_path_factory.mktemp("cli-files")


def _run(env: dict[str, str], name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    result = run_cli(env, "run", name, "--input", json.dumps(inputs))
    assert result.returncode == 0, (name, result.stderr)
    output = json.loads(result.stdout)
    assert isinstance(output, dict)
    return output


def test_create_file_from_a_path(cli: tuple[dict[str, str], Simulator, Path]) -> None:
    env, sim, files = cli
    notes = files / "notes.txt"
    notes.write_text("Ticket 1042: printer offline.\n", encoding="utf-8")
    created = _run(env, "create_file", {"file": str(notes), "purpose": "assistants"})
    assert created["filename"] == "notes.txt" and created["bytes"] == notes.stat().st_size
    assert sim.context.store.content(created["id"]) == notes.read_bytes()


def test_create_transcription_of_a_wav_file_the_test_makes(cli: tuple[dict[str, str], Simulator, Path]) -> None:
    env, sim, files = cli
    recording = files / "voicemail.wav"
    with wave.open(str(recording), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(16_000)
        audio.writeframes(b"\x00\x01" * 1600)
    output = _run(env, "create_transcription", {"file": str(recording), "model": "whisper-1"})
    assert isinstance(output["text"], str) and output["text"]
    sent = sim.requests[-1]
    assert sent["path"] == "/v1/audio/transcriptions" and sent["body"]["file"] == "voicemail.wav"


@pytest.mark.parametrize(("action", "form", "expected"), [
    ("create_transcription", "text", "Hello, this is the simulator's transcript of your audio.\n"),
    ("create_transcription", "srt", "1\n00:00:00,000 --> 00:00:03,000\n"),
    ("create_translation", "vtt", "WEBVTT\n"),
])
def test_audio_asked_for_as_plain_text_comes_back_as_text(sim_integration: Integration, simulator: Simulator,
                                                           action: str, form: str, expected: str) -> None:
    """text, srt and vtt are answered as text/plain, not JSON: the step gets ``{"text": ...}`` (it used to
    fail as "not JSON" after the paid call)."""
    audio = "data:audio/wav;base64," + base64.b64encode(b"RIFF" + b"\x00" * 40).decode()
    output = actions.run(action, {"file": audio, "model": "whisper-1", "response_format": form}, sim_integration)
    assert output["text"].startswith(expected)
    assert simulator.calls == 1


def test_text_the_step_did_not_ask_for_is_still_an_error(file_server: tuple[_FileServer, Integration]) -> None:
    """A text/plain 200 where JSON was expected (a proxy's page, say) is not passed off as a transcript."""
    _, integration = file_server  # answers every POST with text/plain
    audio = "data:audio/wav;base64," + base64.b64encode(b"RIFF" + b"\x00" * 40).decode()
    with pytest.raises(errors.ResponseShapeError, match="not a JSON object"):
        actions.run("create_transcription", {"file": audio, "model": "whisper-1"}, integration)
    asked = actions.run("create_transcription", {"file": audio, "model": "whisper-1", "response_format": "text"},
                        integration)
    assert asked == {"text": "upstream says hello"}


def test_create_speech_with_save_to_writes_the_bytes_then_refuses_to_overwrite(
        cli: tuple[dict[str, str], Simulator, Path]) -> None:
    env, sim, files = cli
    target = files / "greeting.wav"
    inputs = {"model": "gpt-4o-mini-tts", "input": "Your ticket is resolved.", "voice": "alloy",
              "response_format": "wav", "save_to": str(target)}
    output = _run(env, "create_speech", inputs)
    written = target.read_bytes()
    assert output["path"] == str(target.resolve()) and output["bytes"] == len(written) > 44
    assert output["content_type"] == "audio/wav" and output["sha256"] == hashlib.sha256(written).hexdigest()
    assert "base64" not in output
    with wave.open(str(target), "rb") as audio:  # a real WAV, as the simulator answered it
        assert audio.getnchannels() == 1 and audio.getnframes() > 0
    calls = sim.calls
    again = run_cli(env, "run", "create_speech", "--input", json.dumps(inputs))
    assert again.returncode == 2 and again.stdout == ""
    error = json.loads(again.stderr)["error"]
    assert "save_to" in json.dumps(error) and "overwritten" in json.dumps(error)
    assert sim.calls == calls, "the refusal comes before the paid call"
    assert target.read_bytes() == written
    assert not [p for p in files.iterdir() if p.name.startswith(".partial-")]


def test_a_delete_whose_answer_is_empty(cli: tuple[dict[str, str], Simulator, Path]) -> None:
    env, sim, _ = cli
    output = _run(env, "delete_container", {"container_id": "cntr_42"})
    assert output == {"id": "cntr_42", "deleted": True, "status": 200}
    assert sim.requests[-1]["method"] == "DELETE" and sim.requests[-1]["path"] == "/v1/containers/cntr_42"


def test_download_a_batch_output_file_parsed_into_a_list(cli: tuple[dict[str, str], Simulator, Path]) -> None:
    env, sim, files = cli
    requests_file = files / "requests.jsonl"
    requests_file.write_text("".join(json.dumps({"custom_id": f"ticket-{n}", **CHAT_LINE}) + "\n" for n in range(3)),
                             encoding="utf-8")
    uploaded = _run(env, "create_file", {"file": str(requests_file), "purpose": "batch"})
    batch = _run(env, "create_batch", {"input_file_id": uploaded["id"], "endpoint": "/v1/chat/completions",
                                       "completion_window": "24h"})
    sim.complete_jobs(batch["id"])
    finished = _run(env, "retrieve_batch", {"batch_id": batch["id"]})
    assert finished["status"] == "completed"
    output = _run(env, "download_file", {"file_id": finished["output_file_id"], "parse": "jsonl"})
    assert [record["custom_id"] for record in output["records"]] == ["ticket-0", "ticket-1", "ticket-2"]
    assert all(record["response"]["status_code"] == 200 for record in output["records"])
    assert "base64" not in output and output["bytes"] > 0


# ---------------------------------------------------------------- binary answers in-process


def test_without_save_to_the_bytes_come_back_as_base64(sim_integration: Integration) -> None:
    output = actions.run("create_speech", {"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "wav"},
                         sim_integration)
    content = base64.b64decode(output["base64"])
    assert output["bytes"] == len(content) and output["content_type"] == "audio/wav"
    with wave.open(io.BytesIO(content)) as audio:
        assert audio.getframerate() == 24_000


def test_a_downloaded_file_is_the_uploaded_bytes(sim_integration: Integration, tmp_path: Path) -> None:
    source = tmp_path / "blob.bin"
    source.write_bytes(bytes(range(256)) * 64)
    uploaded = actions.run("create_file", {"file": str(source), "purpose": "user_data"}, sim_integration)
    output = actions.run("download_file", {"file_id": uploaded["id"], "save_to": str(tmp_path / "out") + "/"},
                         sim_integration)
    saved = Path(output["path"])
    assert saved.parent == (tmp_path / "out").resolve() and saved.read_bytes() == source.read_bytes()
    assert saved.name == f"{uploaded['id']}.bin"
    again = actions.run("download_file", {"file_id": uploaded["id"], "save_to": str(tmp_path / "out")},
                        sim_integration)
    assert Path(again["path"]).name == f"{uploaded['id']}-1.bin", "a directory gets a new name, never a replacement"


def test_parse_text_and_a_file_that_is_not_jsonl(sim_integration: Integration, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("line one\nline two\n", encoding="utf-8")
    uploaded = actions.run("create_file", {"file": str(notes), "purpose": "user_data"}, sim_integration)
    assert actions.run("download_file", {"file_id": uploaded["id"], "parse": "text"},
                       sim_integration)["text"] == "line one\nline two\n"
    with pytest.raises(errors.ResponseShapeError, match="line 1 of the file is not JSON"):
        actions.run("download_file", {"file_id": uploaded["id"], "parse": "jsonl"}, sim_integration)


#: Larger than the 16 MiB a binary answer is returned inline as base64.
BIG = 16 * 1024 * 1024 + 1


class _FileServer(ThreadingHTTPServer):
    """Serves ``GET /files/{mode}/content`` the ways a real answer can arrive: in two halves with a pause
    (``slow``: the second waits for ``release``), cut short (``cut``), too big for base64 (``big``), or with a file
    name that tries to leave the directory (``named``). 127.0.0.1 only."""

    def __init__(self) -> None:
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _FileHandler)


class _FileHandler(BaseHTTPRequestHandler):
    server: _FileServer

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's spelling
        mode = self.path.split("/")[3]
        size = {"slow": 2 * 1024 * 1024, "cut": 2 * 1024 * 1024, "big": BIG}.get(mode, 3)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "named":
            self.send_header("Content-Disposition", 'attachment; filename="../../escape.jsonl"')
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if mode == "named":
            self.wfile.write(b"{}\n")
        elif mode == "big":
            for offset in range(0, size, 1024 * 1024):
                self.wfile.write(b"z" * min(1024 * 1024, size - offset))
        else:
            self.wfile.write(b"a" * 1024 * 1024)
            self.wfile.flush()
            if mode == "slow":
                self.server.release.wait(30)
                self.wfile.write(b"b" * 1024 * 1024)
            # "cut": the connection closes with half the promised bytes sent

    def do_POST(self) -> None:  # noqa: N802 - a plain-text answer to any request (audio endpoints' text formats)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"upstream says hello"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def file_server() -> Iterator[tuple[_FileServer, Integration]]:
    server = _FileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, Integration(name="files", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                                  auth={"placement": "none"}, timeout={"connect": 2, "read": 10}, max_retries=0)
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_answer_is_written_to_disk_as_it_arrives(file_server: tuple[_FileServer, Integration],
                                                     tmp_path: Path) -> None:
    """Half the answer is on disk (a hidden partial file) before the rest is sent: it is never held whole in
    memory, and the file appears under its name only once complete."""
    server, integration = file_server
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(actions.run(
        "download_file", {"file_id": "slow", "save_to": str(tmp_path / "video.bin")}, integration)))
    worker.start()
    partial: list[Path] = []
    for _ in range(1500):  # a bounded wait for the first half to land (nothing is timed)
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]
        if partial and partial[0].stat().st_size >= 1024 * 1024:
            break
        threading.Event().wait(0.02)
    assert partial and partial[0].stat().st_size >= 1024 * 1024 and not (tmp_path / "video.bin").exists()
    server.release.set()
    worker.join(30)
    assert result["bytes"] == 2 * 1024 * 1024 == (tmp_path / "video.bin").stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["video.bin"]


def test_an_answer_cut_short_leaves_no_file(file_server: tuple[_FileServer, Integration], tmp_path: Path) -> None:
    _, integration = file_server
    with pytest.raises(errors.NoAnswerError):
        actions.run("download_file", {"file_id": "cut", "save_to": str(tmp_path) + "/"}, integration)
    assert list(tmp_path.iterdir()) == []


def test_an_answer_too_large_for_base64_asks_for_save_to_and_leaves_no_file(
        file_server: tuple[_FileServer, Integration], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, integration = file_server
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with pytest.raises(errors.ResponseShapeError, match="give save_to"):
        actions.run("download_file", {"file_id": "big"}, integration)
    assert list((tmp_path / "tmp").iterdir()) == []
    output = actions.run("download_file", {"file_id": "big", "save_to": str(tmp_path / "big.bin")}, integration)
    assert (tmp_path / "big.bin").stat().st_size == output["bytes"] == BIG


def test_a_file_name_from_the_api_stays_inside_the_directory(file_server: tuple[_FileServer, Integration],
                                                             tmp_path: Path) -> None:
    _, integration = file_server
    output = actions.run("download_file", {"file_id": "named", "save_to": str(tmp_path), "parse": "jsonl"},
                         integration)
    assert Path(output["path"]) == tmp_path.resolve() / "escape.jsonl" and output["filename"] == "escape.jsonl"
    assert output["records"] == [{}]


def test_save_to_refusals_name_the_field_before_any_call(sim_integration: Integration, simulator: Simulator,
                                                         tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for save_to, words in ((str(blocker), "already exists"), (str(blocker / "below.mp3"), "cannot create")):
        with pytest.raises(errors.InputError) as caught:
            actions.run("create_speech", {"model": "tts-1", "input": "hi", "voice": "alloy", "save_to": save_to},
                        sim_integration)
        assert caught.value.problems[0]["field"] == "save_to" and words in caught.value.problems[0]["reason"]
    assert simulator.calls == 0


def test_each_binary_action_answers_with_its_media_type(sim_integration: Integration) -> None:
    expected = {"retrieve_video_content": "video/mp4", "get_skill_content": "application/zip",
                "get_skill_version_content": "application/zip", "retrieve_container_file_content":
                "application/octet-stream"}
    for name, media_type in expected.items():
        output = actions.run(name, actions.get(name).examples[0].input, sim_integration)
        assert output["content_type"] == media_type, name
    thumbnail = actions.run("retrieve_video_content", {"video_id": "video_1", "variant": "thumbnail"},
                            sim_integration)
    assert thumbnail["content_type"] == "image/webp" and base64.b64decode(thumbnail["base64"])[8:12] == b"WEBP"


# ---------------------------------------------------------------- empty answers


def test_empty_answers_become_a_small_result(sim_integration: Integration, simulator: Simulator) -> None:
    assert actions.run("hangup_realtime_call", {"call_id": "rtc_7"}, sim_integration) == {
        "id": "rtc_7", "ok": True, "status": 200}
    assert actions.run("delete_container_file", {"container_id": "cntr_1", "file_id": "cfile_2"},
                       sim_integration) == {"id": "cfile_2", "deleted": True, "status": 200}


def test_an_empty_operation_that_answers_json_anyway_keeps_it(sim_integration: Integration) -> None:
    created = actions.run("create_response", {"model": "gpt-4o-mini", "input": "hi"}, sim_integration)
    output = actions.run("delete_response", {"response_id": created["id"]}, sim_integration)
    assert output == {"id": created["id"], "deleted": True, "status": 200, "object": "response"}
    with pytest.raises(errors.NotFoundError):
        actions.run("get_response", {"response_id": created["id"]}, sim_integration)


# ---------------------------------------------------------------- a body of exclusive field groups


def test_a_union_body_takes_exactly_one_of_its_groups(sim_integration: Integration, simulator: Simulator,
                                                      tmp_path: Path) -> None:
    for inputs, field, words in (({}, "file_ids", "give file_ids or files"),
                                 ({"file_ids": ["f"], "files": [{"file_id": "f"}]}, "files", "only one of")):
        with pytest.raises(errors.InputError) as caught:
            actions.run("create_vector_store_file_batch", {"vector_store_id": "vs_1", **inputs}, sim_integration)
        assert caught.value.problems[0]["field"] == field and words in caught.value.problems[0]["reason"]
    assert simulator.calls == 0
    notes = tmp_path / "kb.txt"
    notes.write_text("Reset a password from the admin console.", encoding="utf-8")
    file_id = actions.run("create_file", {"file": str(notes), "purpose": "assistants"}, sim_integration)["id"]
    store = actions.run("create_vector_store", {"name": "kb"}, sim_integration)
    for body in ({"file_ids": [file_id]}, {"files": [{"file_id": file_id, "attributes": {"team": "desk"}}]}):
        batch = actions.run("create_vector_store_file_batch", {"vector_store_id": store["id"], **body},
                            sim_integration)
        assert batch["object"] == "vector_store.files_batch" and batch["vector_store_id"] == store["id"]


# ---------------------------------------------------------------- streams assembled beyond chat


def test_a_streamed_response_is_the_response_without_streaming(sim_integration: Integration,
                                                                simulator: Simulator) -> None:
    plain = actions.run("create_response", {"model": "gpt-4o-mini", "input": "status of ticket 9"}, sim_integration)
    streamed = actions.execute("create_response", {"model": "gpt-4o-mini", "input": "status of ticket 9",
                                                   "stream": True}, sim_integration)
    assert simulator.requests[-1]["body"]["stream"] is True
    output = streamed.output
    assert output["object"] == "response" and output["status"] == "completed"
    assert output["output"][0]["content"][0]["text"] == plain["output"][0]["content"][0]["text"]
    assert streamed.usage["input_tokens"] == plain["usage"]["input_tokens"]


def test_get_response_streams_through_its_query_flag(sim_integration: Integration, simulator: Simulator) -> None:
    created = actions.run("create_response", {"model": "gpt-4o-mini", "input": "hi"}, sim_integration)
    output = actions.run("get_response", {"response_id": created["id"], "stream": True}, sim_integration)
    assert simulator.requests[-1]["query"]["stream"] == "true"
    assert output["id"] == created["id"] and output["object"] == "response"


def test_streamed_transcription_image_edit_and_run(sim_integration: Integration, simulator: Simulator) -> None:
    wav = "data:audio/wav;base64," + base64.b64encode(wav_bytes()).decode()
    plain = actions.run("create_transcription", {"file": wav, "model": "whisper-1"}, sim_integration)
    streamed = actions.run("create_transcription", {"file": wav, "model": "gpt-4o-transcribe", "stream": True},
                           sim_integration)
    assert streamed["text"] == plain["text"] and streamed["usage"]["type"] == "tokens"
    edit = dict(actions.get("create_image_edit").examples[0].input, model="gpt-image-1", stream=True,
                partial_images=1)
    image = actions.run("create_image_edit", edit, sim_integration)
    assert len(image["data"]) == 1 and base64.b64decode(image["data"][0]["b64_json"])
    assert image["usage"]["total_tokens"] > 0
    run = actions.run("create_run", {"thread_id": "thread_abc123", "assistant_id": "assistant_abc123",
                                     "stream": True}, sim_integration)
    assert run["object"] == "thread.run" and run["status"] == "completed"


def test_an_error_event_mid_stream_is_the_apis_error(sim_integration: Integration,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(behaviours.STREAMS, "createResponse", lambda answer, _body: [
        {"type": "response.created", "response": {**answer, "status": "in_progress"}},
        {"type": "error", "code": "server_error", "message": "The model crashed."}])
    with pytest.raises(errors.UpstreamError, match="The model crashed") as caught:
        actions.run("create_response", {"model": "gpt-4o-mini", "input": "hi", "stream": True}, sim_integration)
    assert caught.value.error_code == "server_error"
    monkeypatch.setitem(behaviours.STREAMS, "createRun", lambda _answer, _body: [{"object": "thread.message.delta"}])
    with pytest.raises(errors.ResponseShapeError, match="no run object"):
        actions.run("create_run", {"thread_id": "thread_abc123", "assistant_id": "assistant_abc123", "stream": True},
                    sim_integration)


def test_an_image_stream_of_previews_only_keeps_the_last_preview(sim_integration: Integration,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(behaviours.STREAMS, "createImageEdit", lambda _answer, _body: [
        {"type": "image_edit.partial_image", "b64_json": "Zmlyc3Q=", "created_at": 5},
        {"type": "image_edit.partial_image", "b64_json": "bGFzdA==", "created_at": 5, "size": "1024x1024"}])
    edit = dict(actions.get("create_image_edit").examples[0].input, model="gpt-image-1", stream=True)
    assert actions.run("create_image_edit", edit, sim_integration) == {
        "created": 5, "data": [{"b64_json": "bGFzdA=="}], "size": "1024x1024"}


def test_a_hook_failing_after_the_bytes_arrived_leaves_no_file(sim_integration: Integration, tmp_path: Path) -> None:
    def refuse(_call: actions.Call, _response: Any) -> None:
        raise RuntimeError("over budget")

    manifest = actions.get("create_speech")
    inputs = actions.prepare("create_speech", {"model": "tts-1", "input": "hi", "voice": "alloy",
                                               "save_to": str(tmp_path / "out.mp3")})
    call = actions.Call(manifest, inputs, sim_integration, actions.CallOptions(after_response=refuse))
    with pytest.raises(RuntimeError, match="over budget"):
        call.default()
    assert list(tmp_path.iterdir()) == []
