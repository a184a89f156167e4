"""The audio front end against hand-computed numpy references and generated bad files."""

import importlib.util
import json

import numpy as np
import pytest
import soundfile as sf

from embedstore.errors import InputError
from embedstore.extract.audio import (
    AudioError,
    frontend_config,
    int16_roundtrip,
    load_audio,
    prepare,
    repeatpad,
    resample,
    to_mono,
    windows,
)

needs_soxr = pytest.mark.skipif(importlib.util.find_spec("soxr") is None,
                                reason="soxr comes with the extract extra")


def sine(freq, sr, seconds, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def peak_frequency(x, sr):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)]


# ---------------------------------------------------------------- repeatpad / windows


@pytest.mark.parametrize("length, n", [(3, 8), (3, 3), (4, 10), (1, 5), (7, 8), (5, 11)])
def test_repeatpad_matches_hand_reference(length, n):
    x = np.arange(1, length + 1, dtype=np.float32)
    expected = np.zeros(n, dtype=np.float32)
    copies = n // length
    for c in range(copies):  # whole copies, then zeros
        expected[c * length:(c + 1) * length] = x
    out = repeatpad(x, n)
    assert out.shape == (n,)
    np.testing.assert_array_equal(out, expected)


def test_repeatpad_literal_values():
    np.testing.assert_array_equal(repeatpad(np.array([1.0, 2.0, 3.0]), 8),
                                  [1, 2, 3, 1, 2, 3, 0, 0])
    np.testing.assert_array_equal(repeatpad(np.array([4.0, 5.0, 6.0, 7.0]), 10),
                                  [4, 5, 6, 7, 4, 5, 6, 7, 0, 0])


@pytest.mark.parametrize("length", [0, 9])
def test_repeatpad_refuses_empty_or_long_input(length):
    with pytest.raises(ValueError):
        repeatpad(np.ones(length), 8)


def test_windows_short_clip_is_one_repeatpadded_window_in_every_mode():
    x = np.array([1.0, 2.0, 3.0])
    for mode in ("first", "center", "mean"):
        np.testing.assert_array_equal(windows(x, 7, mode), [[1, 2, 3, 1, 2, 3, 0]])
    np.testing.assert_array_equal(windows(np.arange(4.0), 4, "mean"), [[0, 1, 2, 3]])


def test_windows_long_clip_modes():
    x = np.arange(10.0)
    np.testing.assert_array_equal(windows(x, 4, "first"), [[0, 1, 2, 3]])
    np.testing.assert_array_equal(windows(x, 4, "center"), [[3, 4, 5, 6]])  # start (10-4)//2
    np.testing.assert_array_equal(windows(x, 3, "center"), [[3, 4, 5]])  # start (10-3)//2 = 3
    # consecutive windows; the last holds [8, 9] repeat-padded to [8, 9, 8, 9]
    np.testing.assert_array_equal(windows(x, 4, "mean"),
                                  [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9]])
    # the last remainder [9] fills its window by repetition
    np.testing.assert_array_equal(windows(x, 3, "mean")[-1], [9, 9, 9])
    # an exact multiple adds no padded window
    np.testing.assert_array_equal(windows(x, 5, "mean"), [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])


def test_windows_unknown_mode_is_input_error():
    with pytest.raises(InputError, match="long-clip mode"):
        windows(np.ones(10), 4, "random")


# ---------------------------------------------------------------- int16 / mono / resample


def test_int16_roundtrip_hand_values():
    x = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.0, 1e-5, 0.99999], dtype=np.float32)
    # clip, * 32767, truncate toward zero, / 32767
    ints = np.array([0, 16383, -16383, 32767, -32767, 32767, -32767, 0, 32766])
    out = int16_roundtrip(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (ints / 32767.0).astype(np.float32))


def test_to_mono_averages_channels_and_keeps_mono():
    x = np.arange(24, dtype=np.float32).reshape(3, 8)  # 3 samples, 8 channels
    np.testing.assert_allclose(to_mono(x), [3.5, 11.5, 19.5])
    mono = np.array([0.1, -0.2], dtype=np.float32)
    np.testing.assert_array_equal(to_mono(mono), mono)
    np.testing.assert_array_equal(to_mono(mono[:, None]), mono)


@needs_soxr
@pytest.mark.parametrize("sr_in, sr_out", [(44100, 48000), (8000, 48000), (192000, 48000),
                                           (48000, 16000)])
def test_resample_length_and_sine_frequency(sr_in, sr_out):
    x = sine(1000.0, sr_in, 1.0)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32
    assert len(y) == round(len(x) * sr_out / sr_in)
    # FFT bin width is 1 Hz for a 1 s signal
    assert abs(peak_frequency(y, sr_out) - 1000.0) <= 1.0


@needs_soxr
def test_resample_same_rate_is_a_copy_and_channels_survive():
    x = np.random.default_rng(0).standard_normal((100, 2)).astype(np.float32)
    y = resample(x, 16000, 16000)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    assert resample(x, 16000, 32000).shape == (200, 2)
    with pytest.raises(InputError):
        resample(x, 0, 16000)


# ---------------------------------------------------------------- files, prepare, config


@needs_soxr
def test_prepare_matches_the_chain_for_8_channel_8khz_long_clip(tmp_path):
    path = tmp_path / "long.wav"
    x = sine(440.0, 8000, 2.5, channels=8) * np.linspace(0.2, 1.0, 8)  # channels differ
    sf.write(path, x, 8000, subtype="PCM_16")
    out = prepare(path, sample_rate=16000, window_seconds=1.0, long_mode="mean")
    decoded, sr = load_audio(path)
    assert decoded.shape == (20000, 8) and sr == 8000
    chain = int16_roundtrip(resample(decoded.mean(axis=1), 8000, 16000))
    assert out.dtype == np.float32 and out.shape == (3, 16000)  # 2.5 s -> 3 one-second windows
    np.testing.assert_array_equal(out[:2].ravel(), chain[:32000])
    np.testing.assert_array_equal(out[2], repeatpad(chain[32000:], 16000))
    assert abs(peak_frequency(out[0], 16000) - 440.0) <= 1.0


@needs_soxr
def test_prepare_192khz_short_clip_is_repeatpadded(tmp_path):
    path = tmp_path / "hi.flac"
    sf.write(path, sine(3000.0, 192000, 0.3, channels=2), 192000, subtype="PCM_24")
    out = prepare(path, sample_rate=48000, window_seconds=1.0, long_mode="first")
    assert out.shape == (1, 48000)
    body = out[0, :14400]  # 0.3 s at 48 kHz
    np.testing.assert_array_equal(out[0, 14400:28800], body)  # second whole copy
    np.testing.assert_array_equal(out[0, 43200:], 0.0)  # 48000 - 3 * 14400 zeros
    np.testing.assert_array_equal(body, int16_roundtrip(body))  # already on the int16 grid
    first = prepare(path, sample_rate=48000, window_seconds=1.0, int16=False)
    assert not np.array_equal(first, out)


@needs_soxr
def test_prepare_window_modes_on_a_long_file(tmp_path):
    path = tmp_path / "ramp.wav"
    sf.write(path, np.linspace(-0.9, 0.9, 10 * 1000), 1000, subtype="FLOAT")
    full = int16_roundtrip(load_audio(path)[0][:, 0])
    first = prepare(path, sample_rate=1000, window_seconds=4.0, long_mode="first")
    center = prepare(path, sample_rate=1000, window_seconds=4.0, long_mode="center")
    np.testing.assert_array_equal(first[0], full[:4000])
    np.testing.assert_array_equal(center[0], full[3000:7000])


@needs_soxr
def test_frontend_config_describes_the_chain():
    config = frontend_config()
    assert config["sample_rate"] == 48000 and config["window_seconds"] == 10.0
    assert config["window_samples"] == 480000 and config["long_mode"] == "mean"
    assert config["resampler"] == "soxr" and config["resampler_quality"] == "HQ"
    assert config["resampler_version"] == __import__("soxr").__version__
    assert config["padding"] == "repeatpad" and config["int16_roundtrip"] is True
    json.dumps(config)  # provenance is stored as JSON
    with pytest.raises(InputError):
        frontend_config(long_mode="last")


def test_load_audio_reads_shape_rate_and_values(tmp_path):
    path = tmp_path / "ok.wav"
    x = np.array([[0.25, -0.5], [0.0, 0.125]], dtype=np.float32)
    sf.write(path, x, 22050, subtype="FLOAT")
    samples, sr = load_audio(path)
    assert sr == 22050 and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, x)


def _bad_files(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(1000), 8000, subtype="PCM_16")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("these are not the samples you are looking for\n" * 20)
    (tmp_path / "header.wav").write_bytes(good.read_bytes()[:30])  # cut inside the header
    nan = np.zeros(100, dtype=np.float32)
    nan[17] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 8000, subtype="FLOAT")
    inf = np.zeros(100, dtype=np.float32)
    inf[3] = np.inf
    sf.write(tmp_path / "inf.flac.wav", inf, 8000, subtype="FLOAT")
    sf.write(tmp_path / "nothing.wav", np.zeros((0, 1)), 8000, subtype="PCM_16")
    (tmp_path / "x.wav").mkdir()


@pytest.mark.parametrize("name, reason", [
    ("missing.wav", "missing file"),
    ("x.wav", "is a directory"),
    ("empty.wav", "empty file"),
    ("text.wav", "not decodable audio"),
    ("header.wav", "not decodable audio"),
    ("nan.wav", "non-finite samples"),
    ("inf.flac.wav", "non-finite samples"),
    ("nothing.wav", "no samples"),
])
def test_load_audio_errors_name_their_reason(tmp_path, name, reason):
    _bad_files(tmp_path)
    with pytest.raises(AudioError) as info:
        load_audio(tmp_path / name)
    err = info.value
    assert isinstance(err, InputError)
    assert err.reason.startswith(reason)
    assert "\n" not in str(err) and name in str(err)


def test_load_audio_unreadable_file(tmp_path, monkeypatch):
    # The opener refuses, as it does for a file without read permission (CI runs as root,
    # which reads any file, so file modes cannot show this path).
    path = tmp_path / "locked.wav"
    sf.write(path, np.zeros(10), 8000)

    def refuse(self, file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(sf.SoundFile, "__init__", refuse)
    with pytest.raises(AudioError, match="not readable \\(permission denied\\)"):
        load_audio(path)


def test_prepare_passes_audio_errors_through(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        prepare(tmp_path / "empty.wav")


def test_repeat_fills_whole_copies_then_cuts():
    from embedstore.extract.audio import repeat

    np.testing.assert_array_equal(repeat(np.array([1.0, 2.0, 3.0]), 8), [1, 2, 3, 1, 2, 3, 1, 2])
    np.testing.assert_array_equal(repeat(np.array([1.0, 2.0]), 2), [1, 2])


@pytest.mark.parametrize("mode", ["first", "center", "mean"])
@pytest.mark.parametrize("padding", ["repeatpad", "repeat"])
def test_streamed_windows_equal_in_memory_windows_for_each_padding(mode, padding):
    from embedstore.extract.audio import cut_windows

    for length in (700, 2500):
        signal = np.random.default_rng(length).standard_normal(length).astype(np.float32)
        streamed = np.stack(list(cut_windows(iter(np.array_split(signal, 7)), length, 1000, mode,
                                             padding=padding)))
        np.testing.assert_array_equal(streamed, windows(signal, 1000, mode, padding))
