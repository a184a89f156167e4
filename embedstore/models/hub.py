"""Where model files come from: the Hugging Face cache, a checksum, and a download when allowed.

Published weights go through ``huggingface_hub`` (:func:`download`, :func:`snapshot`): into
the standard Hugging Face cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, or the ``cache_dir``
given), so files a user already has are reused; ``HF_HUB_OFFLINE`` (and
``TRANSFORMERS_OFFLINE``) in any spelling huggingface_hub reads as true, ``HF_ENDPOINT`` and
``HF_TOKEN`` are read when the download happens. Our SHA-256 check follows; a file that
fails it is removed from the cache.

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
from pathlib import Path

from embedstore.errors import ModelUnavailable


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: The values huggingface_hub reads as true in its boolean variables (any case).
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_offline() -> bool:
    """Whether downloads are off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a
    value huggingface_hub reads as true, read now rather than when it was imported."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in TRUE_VALUES


def hub_endpoint() -> str:
    """``$HF_ENDPOINT`` (a mirror) or the Hugging Face hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@dataclasses.dataclass(frozen=True)
class HubFile:
    """A file from a hub repository, in the Hugging Face cache, digest checked."""

    path: Path
    repo: str
    filename: str
    revision: str      # the commit hash the cache holds it under
    sha256: str
    source: str        # "hf-cache" (already there) or "hub" (downloaded now)
    endpoint: str

    def record(self) -> dict:
        """What the provenance keeps of it."""
        return {"hub_repo": self.repo, "hub_file": self.filename, "hub_revision": self.revision,
                "hub_endpoint": self.endpoint, "source": self.source}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _snapshot_revision(path: Path) -> str:
    """The commit hash in ``.../snapshots/<commit>/<file>``, the cache's layout."""
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else "unknown"


def _remove_cached(path: Path) -> None:
    """Delete a cached file: its snapshot link and the blob it points to."""
    path = Path(path)
    blob = path.resolve()
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_hub_log():
    """huggingface_hub logs each retry of an unreachable hub as a warning line on stderr;
    a failure is reported once, as our one ModelUnavailable line, so its warnings are held back."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _cache_then_hub(call, what: str, hint: str) -> tuple[str, str]:
    """``call(local_files_only=True)``; when that finds nothing, ``call(endpoint=, token=)``
    unless downloads are off. Returns the path and ``"hf-cache"`` or ``"hub"``; every
    failure is one ModelUnavailable line naming ``what`` and ``hint``."""
    try:
        return call(local_files_only=True), "hf-cache"
    except Exception:  # not cached (huggingface_hub raises several types for that)
        pass
    if hub_offline():
        raise ModelUnavailable(f"{what} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {hint}")
    endpoint = hub_endpoint()
    try:
        with _quiet_hub_log():
            return call(endpoint=endpoint, token=os.environ.get("HF_TOKEN")), "hub"
    except Exception as err:  # network, HTTP, auth and disk errors: one line each
        raise ModelUnavailable(f"downloading {what} from {endpoint} failed ({_first_line(err)}); "
                               f"{hint}") from None


def download(repo: str, filename: str, expected_sha256: str | None, *, cache_dir=None,
             revision: str | None = None, hint: str | None = None) -> HubFile:
    """A published file through ``huggingface_hub``: cached copy, else a download, then our digest.

    Parameters
    ----------
    repo, filename : str
        Hub repository (``owner/name``) and file in it.
    expected_sha256 : str or None
        Digest the file must have; a mismatch removes it from the cache and raises.
    cache_dir : path-like, optional
        Hugging Face cache to use instead of the standard one.
    revision : str, optional
        Branch, tag or commit (default ``main``).
    hint : str, optional
        What the user can do instead; default: download it and pass ``--checkpoint PATH``.

    Raises
    ------
    ModelUnavailable
        When the file is not cached and downloads are off or fail, or on a digest mismatch;
        always one line naming the file.
    """
    from huggingface_hub import hf_hub_download

    endpoint = hub_endpoint()
    hint = hint or (f"download {endpoint}/{repo}/resolve/{revision or 'main'}/{filename} and pass "
                    f"it with --checkpoint PATH")
    common = dict(repo_id=repo, filename=filename, revision=revision,
                  cache_dir=None if cache_dir is None else str(cache_dir))
    found, source = _cache_then_hub(lambda **kw: hf_hub_download(**common, **kw),
                                    f"{filename} ({repo})", hint)
    path = Path(found)
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256:
        _remove_cached(path)
        raise ModelUnavailable(f"{filename} from {repo} has SHA-256 {digest}, expected "
                               f"{expected_sha256}; refusing it (removed from the cache)")
    return HubFile(path, repo, filename, _snapshot_revision(path), digest, source, endpoint)


def snapshot(repo: str, patterns: list[str], *, cache_dir=None, revision: str | None = None,
             hint: str = "") -> tuple[Path, str, str]:
    """A hub repository's files matching ``patterns`` through ``huggingface_hub``.

    Returns the snapshot folder, its commit hash and ``"hf-cache"`` or ``"hub"``.
    Raises ModelUnavailable (one line) when not cached and downloads are off or fail.
    """
    from huggingface_hub import snapshot_download

    common = dict(repo_id=repo, allow_patterns=patterns, revision=revision,
                  cache_dir=None if cache_dir is None else str(cache_dir))
    found, source = _cache_then_hub(lambda **kw: snapshot_download(**common, **kw), repo, hint)
    folder = Path(found)
    return folder, folder.name, source


def digests(folder, pattern: str = "*.safetensors") -> dict[str, str]:
    """SHA-256 of each file matching ``pattern`` in ``folder``, by name."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).glob(pattern))}
