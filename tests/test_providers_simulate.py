"""`scripts/simulate_call.py`: its audio conversions, and a whole call in `--with-fakes` mode."""

from __future__ import annotations

import importlib.util
import math
import struct
import wave
from pathlib import Path

import pytest

from server.voice.audio import linear_to_mulaw, mulaw_to_linear, pcm16_to_mulaw, resample_pcm16

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "simulate_call.py"


@pytest.fixture(scope="module")
def simulate_call():
    spec = importlib.util.spec_from_file_location("simulate_call", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_wav(path: Path, *, rate: int, width: int, channels: int, samples: list[int]) -> Path:
    """`samples` are 16-bit values, stored at `width` bytes (8-bit WAV is unsigned)."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        frames = bytearray()
        for sample in samples:
            if width == 1:
                encoded = bytes([(sample >> 8) + 128])
            else:
                encoded = (sample << (8 * (width - 2))).to_bytes(width, "little", signed=True)
            frames += encoded * channels
        writer.writeframes(bytes(frames))
    return path


def test_mulaw_encoding_inverts_decoding():
    assert all(linear_to_mulaw(mulaw_to_linear(byte)) == byte for byte in range(256) if byte != 0x7F)
    assert linear_to_mulaw(0) == 0xFF and linear_to_mulaw(40000) == linear_to_mulaw(32767)
    for sample in (-32768, -1000, -1, 1, 999, 32767):
        assert abs(mulaw_to_linear(linear_to_mulaw(sample)) - sample) <= max(8, abs(sample) // 16)
    assert pcm16_to_mulaw([0, 0]) == b"\xff\xff"


def test_resampling():
    assert resample_pcm16([0, 100, 200, 300], 16000, 8000) == [0, 200]
    assert resample_pcm16([0, 100], 8000, 16000) == [0, 50, 100, 100]
    assert resample_pcm16([5, 6], 8000, 8000) == [5, 6] and resample_pcm16([], 44100, 8000) == []
    assert len(resample_pcm16([0] * 44100, 44100, 8000)) == 8000


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_any_pcm_wav_becomes_8khz_mulaw(simulate_call, tmp_path, width):
    tone = [int(12000 * math.sin(2 * math.pi * 300 * n / 16000)) & ~0xFF for n in range(16000)]
    path = write_wav(tmp_path / "in.wav", rate=16000, width=width, channels=2, samples=tone)
    mulaw = simulate_call.read_wav_as_mulaw(path)
    assert len(mulaw) == 8000  # one second at 8 kHz
    decoded = [mulaw_to_linear(byte) for byte in mulaw]
    assert 10000 < max(decoded) < 13000 and -13000 < min(decoded) < -10000


def test_agent_audio_is_saved_as_pcm_wav(simulate_call, tmp_path):
    mulaw = pcm16_to_mulaw([0, 1000, -1000] * 800)
    simulate_call.write_mulaw_as_wav(tmp_path / "out.wav", mulaw)
    with wave.open(str(tmp_path / "out.wav")) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        frames = reader.readframes(reader.getnframes())
    assert struct.unpack("<3h", frames[:6]) == tuple(mulaw_to_linear(b) for b in mulaw[:3])


@pytest.mark.slow  # the app under real gunicorn and the fakes
def test_a_whole_call_with_fakes(simulate_call, tmp_path, capsys):
    out = tmp_path / "agent.wav"
    tone = [int(9000 * math.sin(2 * math.pi * 250 * n / 8000)) for n in range(7200)]
    spoken = write_wav(tmp_path / "caller.wav", rate=8000, width=2, channels=1, samples=tone)
    assert simulate_call.main(["--with-fakes", str(spoken), str(spoken), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stream connected (subprotocol audio.twilio.com)" in printed
    assert "Caller: שלום, אני רוצה לקבוע תור" in printed and "Agent: קיבלתי: מחר בעשר בבוקר" in printed
    turn_rows = [line.split() for line in printed.splitlines() if line[:4].strip().isdigit()]
    assert [row[0] for row in turn_rows] == ["0", "1", "2"]
    with wave.open(str(out)) as reader:
        assert reader.getframerate() == 8000 and reader.getnframes() > 8000


def test_without_fakes_the_required_options_are_checked(simulate_call):
    with pytest.raises(SystemExit):
        simulate_call.main(["--app-url", "http://127.0.0.1:9"])  # no --to, no WAV file
