"""Where model files come from: the local cache, a checksum, and a fetch when online.

Nothing here imports torch. Fetches are atomic (temporary file, digest check, rename),
so the cache never holds a partial or wrong file.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path

from embedstore.errors import ModelUnavailable

#: Environment variable that overrides the default cache directory.
CACHE_ENV = "EMBEDSTORE_CACHE"


def cache_dir(override=None) -> Path:
    """Directory for fetched checkpoints: ``override``, ``$EMBEDSTORE_CACHE``, or
    ``~/.cache/embedstore``."""
    if override is not None:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "embedstore"


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether ``host`` answers on port 443 within ``timeout`` seconds.

    Asked before any fetch, so that offline runs fail in seconds with our own message
    instead of waiting out a client's retries.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def fetch(url: str, destination, expected_sha256: str | None, what: str, hint: str) -> Path:
    """Download ``url`` to ``destination`` and check its digest.

    Parameters
    ----------
    url : str
        Where the file lives.
    destination : path-like
        Final path; written only once the download is complete and verified.
    expected_sha256 : str or None
        Digest the file must have; a mismatch deletes the download and raises.
    what, hint : str
        The file's name and what the user can do instead, for the error message.

    Raises
    ------
    ModelUnavailable
        When offline, on a network error, or on a digest mismatch.
    """
    destination = Path(destination)
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "huggingface.co"
    if parts.scheme != "file" and not online(host):
        raise ModelUnavailable(f"{what} is not in {destination.parent} and {host} cannot be "
                               f"reached; {hint}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            for block in iter(lambda: response.read(8 << 20), b""):
                out.write(block)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise ModelUnavailable(f"fetching {what} from {url} failed ({err}); {hint}") from None
    digest = sha256_file(partial)
    if expected_sha256 is not None and digest != expected_sha256:
        partial.unlink(missing_ok=True)
        raise ModelUnavailable(f"{what} fetched from {url} has SHA-256 {digest}, expected "
                               f"{expected_sha256}; refusing it")
    os.replace(partial, destination)
    return destination
