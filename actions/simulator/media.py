"""Small, valid-enough bytes for the operations that answer files: speech audio, video content, skill zips.

Stdlib only (``wave``, ``zipfile``) and deterministic, so the generator can put the same bytes in a manifest's
example output that the simulator answers for that example. Formats that need a real encoder (MP3, Opus, AAC,
FLAC) are a correct header or frame start followed by silence: enough for a player to recognise the type, not
music.
"""

from __future__ import annotations

import io
import struct
import wave
import zipfile

__all__ = ["example_content", "mp4_bytes", "skill_zip", "speech_audio", "video_asset", "wav_bytes"]

#: Speech response_format -> (media type the API answers with, bytes maker).
_SPEECH_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "pcm": "audio/pcm", "opus": "audio/opus",
                 "aac": "audio/aac", "flac": "audio/flac"}
_ZIP_TIME = (2026, 8, 1, 0, 0, 0)


def wav_bytes(seconds: float = 0.1, rate: int = 24_000) -> bytes:
    """A mono 16-bit PCM WAV of silence (what ``wave`` and every player read)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def _mp3_bytes(frames: int = 4) -> bytes:
    """MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz, no CRC) of zeros: 417 bytes each."""
    header = bytes((0xFF, 0xFB, 0x90, 0x64))
    return (header + bytes(417 - len(header))) * frames


def speech_audio(response_format: str | None) -> tuple[bytes, str]:
    """(bytes, media type) of createSpeech's answer for a response_format (mp3 by default, as the API)."""
    kind = response_format if response_format in _SPEECH_TYPES else "mp3"
    makers = {
        "mp3": _mp3_bytes,
        "wav": wav_bytes,
        "pcm": lambda: b"\x00\x00" * 2400,  # 24 kHz 16-bit little-endian mono, 0.1 s
        "opus": lambda: b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead\x01\x01" + bytes(10),
        "aac": lambda: bytes((0xFF, 0xF1, 0x50, 0x80, 0x01, 0x7F, 0xFC)) + bytes(8),
        "flac": lambda: b"fLaC" + struct.pack(">B3s", 0x80, (34).to_bytes(3, "big")) + bytes(34),
    }
    return makers[kind](), _SPEECH_TYPES[kind]


def mp4_bytes() -> bytes:
    """An MP4 ``ftyp`` box: the first bytes of every MP4 file."""
    return struct.pack(">I", 24) + b"ftypmp42" + struct.pack(">I", 0) + b"mp42isom"


def video_asset(variant: str | None) -> tuple[bytes, str]:
    """(bytes, media type) of a video's content: the video, its thumbnail (WebP) or its spritesheet (JPEG)."""
    if variant == "thumbnail":
        payload = b"VP8L" + struct.pack("<I", 5) + b"\x2f\x00\x00\x00\x00\x00"
        return b"RIFF" + struct.pack("<I", 4 + len(payload)) + b"WEBP" + payload, "image/webp"
    if variant == "spritesheet":
        return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9", "image/jpeg"
    return mp4_bytes(), "video/mp4"


def skill_zip(skill_id: str) -> bytes:
    """A zip bundle holding the skill's SKILL.md (fixed timestamps: the same bytes every time, for every version)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        text = f"# {skill_id}\n\nA simulated skill.\n"
        bundle.writestr(zipfile.ZipInfo("SKILL.md", _ZIP_TIME), text)
    return out.getvalue()


#: A file's content when the simulator has none stored (an example's made-up id).
EXAMPLE_FILE_CONTENT = b'{"custom_id": "request-1", "response": {"status_code": 200, "body": {}}}\n'


def example_content(operation_id: str) -> tuple[bytes, str]:
    """(bytes, media type) the simulator answers for an operation's example (no stored object, default options)."""
    if operation_id == "createSpeech":
        return speech_audio(None)
    if operation_id == "RetrieveVideoContent":
        return video_asset(None)
    if operation_id in ("GetSkillContent", "GetSkillVersionContent"):
        return skill_zip("skill_abc123"), "application/zip"
    return EXAMPLE_FILE_CONTENT, "application/octet-stream"
