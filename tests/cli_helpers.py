"""Running the typer app in-process the way every CLI test needs it."""

from typer.testing import CliRunner

from cli.main import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def invoke(*args):
    """Run ``embedstore ARGS``; only clean exits, never a traceback."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def write_clip_folder(folder, rate: int = 22050):
    """A `folder` dataset of four sine clips (1.5 to 4.5 s: shorter and longer than some
    models' windows) labelled low/high in ``labels.csv``."""
    import numpy as np
    import soundfile as sf

    folder.mkdir()
    labels = [("low", 220.0), ("high", 880.0), ("low", 196.0), ("high", 990.0)]
    for i, (_, f0) in enumerate(labels):
        t = np.arange(int(rate * (1.5 + i))) / rate
        sf.write(folder / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), rate)
    rows = "\n".join(f"c{i}.wav,{label}" for i, (label, _) in enumerate(labels))
    (folder / "labels.csv").write_text("path,label\n" + rows + "\n")
    return folder


def extract_and_report(tmp_path, model: str, *options) -> tuple:
    """`embedstore extract` of :func:`write_clip_folder` then `embedstore report`; returns
    both results and the store path."""
    folder = write_clip_folder(tmp_path / "clips")
    out = tmp_path / "s.h5"
    extracted = invoke("extract", "--model", model, *options, "--dataset", "folder", "--root", folder,
                       "--out", out, "--workers", "0", "--prompts", "track", "--long", "first")
    if extracted.exit_code != 0:
        return extracted, None, out
    report = invoke("report", out, "--out", tmp_path / "report", "--no-umap")
    return extracted, report, out


def write_caption_folder(root):
    """A `captions` dataset: five short tones in ``root``, one or two captions each in ``captions.csv``
    (``c1`` and ``c3`` have two), so caption rows are [0, 1, 1, 2, 3, 3, 4]."""
    import numpy as np
    import soundfile as sf

    root.mkdir()
    t = np.arange(8000) / 16000
    rows = []
    for i in range(5):
        sf.write(root / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)).astype(np.float32), 16000)
        rows += [f"c{i}.wav,caption {i} a"] + ([f"c{i}.wav,caption {i} b"] if i % 2 else [])
    (root / "captions.csv").write_text("file,caption\n" + "\n".join(rows) + "\n")
    return root
