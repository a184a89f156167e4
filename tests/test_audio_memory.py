"""Issue 10, section 6: memory bounded by the work, not by the clip's length or its header.

Long clips are decoded block by block and embedded window by window; the windows (and so
the vectors) equal the whole-signal front end's bit for bit; absurd sample rates and
channel counts are failed items with their reason.
"""

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("soxr")

import embedstore.extract.audio as audio  # noqa: E402
from embedstore.extract.audio import AudioError, StreamedClip, decode  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def whole_signal_windows(path, sample_rate, window_seconds, long_mode, int16):
    """The front end as it was: decode everything, downmix, resample, quantise, cut."""
    samples, sr = audio.load_audio(path)
    mono = audio.resample(audio.to_mono(samples), sr, sample_rate)
    if int16:
        mono = audio.int16_roundtrip(mono)
    return audio.windows(mono, audio.window_length(sample_rate, window_seconds), long_mode)


def noise(path, seconds, rate, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    data = (0.3 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    sf.write(path, data, rate, subtype="FLOAT")
    return path


@pytest.mark.parametrize("mode", ["first", "center", "mean"])
@pytest.mark.parametrize("rate, channels, int16", [(44100, 2, True), (16000, 1, False), (22050, 3, False)])
@pytest.mark.parametrize("seconds", [0.2, 0.5, 2.37])
def test_streamed_windows_equal_the_whole_signal_front_end(tmp_path, monkeypatch, mode, rate, channels, int16,
                                                           seconds):
    monkeypatch.setattr(audio, "DECODE_BLOCK_FRAMES", 1500)  # many blocks, boundaries everywhere
    path = noise(tmp_path / "clip.wav", seconds, rate, channels)
    args = dict(sample_rate=16000, window_seconds=0.25, long_mode=mode, int16=int16)
    expected = whole_signal_windows(path, **args)
    monkeypatch.setattr(audio, "EAGER_WINDOWS", 10**6)  # every clip in memory
    eager = decode(path, **args)
    assert isinstance(eager, np.ndarray) and np.array_equal(eager, expected)
    monkeypatch.setattr(audio, "EAGER_WINDOWS", 0)  # every clip streams
    streamed = decode(path, **args)
    assert isinstance(streamed, StreamedClip) and len(streamed) == len(expected)
    assert np.array_equal(np.stack(list(streamed)), expected)


def wav_header(rate, channels, data_bytes, bits=16):
    """A PCM WAV header; what it claims is all a hostile file needs."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes))


@pytest.mark.parametrize("rate, channels, reason", [
    (1, 1, "sample rate 1 Hz is outside"),
    (5_000_000, 1, "sample rate 5000000 Hz is outside"),
    (16000, 200, "200 channels"),
])
def test_absurd_headers_are_refused_before_decoding(tmp_path, rate, channels, reason):
    path = tmp_path / "hostile.wav"
    path.write_bytes(wav_header(rate, channels, 4000) + bytes(4000))  # 4 KB
    with pytest.raises(AudioError, match=reason):
        decode(path, sample_rate=48000, window_seconds=10.0)


def test_absurd_headers_are_failed_items_with_their_reason(tmp_path):
    pytest.importorskip("torch")
    from extract_encoder import TinyEncoder

    from embedstore.datasets import load_dataset
    from embedstore.extract import run_extract
    from embedstore.extract.prompts import build_prompt_set

    (tmp_path / "one_hz.wav").write_bytes(wav_header(1, 1, 4000) + bytes(4000))
    noise(tmp_path / "fine.wav", 0.3, 16000)
    (tmp_path / "labels.csv").write_text("path,label\none_hz.wav,a\nfine.wav,b\n")
    data = load_dataset("folder", tmp_path)
    summary = run_extract(TinyEncoder(), data, [build_prompt_set("track", data.classes)], tmp_path / "s.h5",
                          batch_size=2)
    assert summary.items == 1
    assert "sample rate 1 Hz is outside 1000..768000 Hz" in dict(summary.failed)["one_hz.wav"]


def test_pipeline_vectors_equal_with_streamed_and_in_memory_clips(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from extract_encoder import TinyEncoder

    from embedstore.datasets import load_dataset
    from embedstore.extract import run_extract
    from embedstore.extract.prompts import build_prompt_set
    from embedstore.store import open_store

    rows = ["path,label"]
    for i, seconds in enumerate((0.2, 3.3, 0.7, 5.0)):
        noise(tmp_path / f"c{i}.wav", seconds, 22050, channels=2, seed=i)
        rows.append(f"c{i}.wav,{'ab'[i % 2]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset("folder", tmp_path)
    specs = [build_prompt_set("track", data.classes)]

    def vectors(name, mode, eager):
        monkeypatch.setattr(audio, "EAGER_WINDOWS", eager)
        run_extract(TinyEncoder(), data, specs, tmp_path / name, batch_size=3, long_mode=mode)
        with open_store(tmp_path / name) as st:
            return {s: st.audio(s) for s in st.audio_spaces}

    for mode in ("first", "center", "mean"):
        in_memory = vectors(f"{mode}-memory.h5", mode, 10**6)
        streamed = vectors(f"{mode}-streamed.h5", mode, 0)
        for space in in_memory:
            np.testing.assert_array_equal(in_memory[space], streamed[space])


MEASURE = textwrap.dedent("""
    import json, resource, sys
    sys.path[:0] = sys.argv[3].split(":")
    path, what = sys.argv[1], sys.argv[2]
    if what == "decode":
        from embedstore.extract.audio import decode
        clip = decode(path, sample_rate=16000, window_seconds=0.5, long_mode="mean", int16=True)
        n = sum(1 for _ in clip)
    else:
        from extract_encoder import TinyEncoder
        from embedstore.datasets import load_dataset
        from embedstore.extract import run_extract
        from embedstore.extract.prompts import build_prompt_set
        data = load_dataset("folder", path)
        summary = run_extract(TinyEncoder(), data, [build_prompt_set("track", data.classes)],
                              path + "/s.h5", batch_size=32, workers=0, long_mode=sys.argv[4])
        n = summary.items
    print(json.dumps({"n": n, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
""")


def peak_rss(path, what, tmp_path, long_mode="mean"):
    script = tmp_path / "measure.py"
    script.write_text(MEASURE)
    out = subprocess.run([sys.executable, str(script), str(path), what, f"{REPO}:{REPO / 'tests'}", long_mode],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["n"], result["maxrss_kb"] / 1024


def silent_flac(path, seconds, rate=8000):
    """A silent FLAC written a block at a time (the test itself never holds the clip)."""
    block = np.zeros(rate * 60, np.int16)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(int(seconds // 60)):
            f.write(block)
    return path


def test_an_hour_of_silence_decodes_in_bounded_memory(tmp_path):
    hour = silent_flac(tmp_path / "hour.flac", 3600)
    minute = silent_flac(tmp_path / "minute.flac", 60)
    n_hour, rss_hour = peak_rss(hour, "decode", tmp_path)
    n_minute, rss_minute = peak_rss(minute, "decode", tmp_path)
    assert n_hour == 7200 and n_minute == 120
    # The whole hour resampled to 16 kHz is 230 MB of float32; a few windows are 32 KB each.
    print(f"decode: hour {rss_hour:.0f} MB, minute {rss_minute:.0f} MB")
    assert rss_hour - rss_minute < 40, (rss_hour, rss_minute)


def extract_hour_and_minute(tmp_path, long_mode, limit_mb):
    """Peak memory of `extract` on an hour-long clip stays within ``limit_mb`` of a minute-long one."""
    pytest.importorskip("torch")
    peaks = {}
    for name, seconds in (("hour", 3600), ("minute", 60)):
        (tmp_path / name).mkdir()
        silent_flac(tmp_path / name / "clip.flac", seconds)
        (tmp_path / name / "labels.csv").write_text("path,label\nclip.flac,silence\n")
        n_items, peaks[name] = peak_rss(tmp_path / name, "extract", tmp_path, long_mode)
        assert n_items == 1
    print(f"extract --long {long_mode}: hour {peaks['hour']:.0f} MB, minute {peaks['minute']:.0f} MB")
    assert peaks["hour"] - peaks["minute"] < limit_mb, peaks


def test_an_hour_long_clip_through_the_pipeline_in_bounded_memory(tmp_path):
    # --long first embeds one window, but the whole hour is decoded (every sample is checked)
    extract_hour_and_minute(tmp_path, "first", 40)


@pytest.mark.slow
def test_an_hour_long_clip_averaged_through_the_pipeline_in_bounded_memory(tmp_path):
    # --long mean: all 7200 windows go through the encoder, a batch at a time (about a minute)
    extract_hour_and_minute(tmp_path, "mean", 60)
