"""The identity of an extraction run: a digest of every setting that shapes its vectors.

A resumed run must be the same run, and the shards of one sharded run must belong to one
run. Both compare fingerprints: one short SHA-256 per setting, so a mismatch names the
setting. Settings that change how fast a run goes but not what it computes (batch size,
device, workers) are not part of it; the store records them in its provenance.

Examples
--------
>>> a = settings_fingerprint({"model": "m", "dtype": "float32"})
>>> b = settings_fingerprint({"model": "m", "dtype": "float16"})
>>> fingerprint_mismatch(a, b)
'dtype'
"""

from __future__ import annotations

import hashlib
import json

#: The settings a run's fingerprint covers, in the order a mismatch is reported.
FINGERPRINT_SETTINGS = ("model", "checkpoint", "dataset", "root", "items", "prompts", "dtype",
                        "precision", "long_mode", "frontend", "block_items")


def digest(value) -> str:
    """SHA-256 (first 16 hex digits) of ``value`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def settings_fingerprint(settings: dict) -> dict[str, str]:
    """One digest per setting: ``{setting: 16 hex digits}``.

    Parameters
    ----------
    settings : dict
        Setting name -> any JSON-able value (big ones, like the items table, are
        digested too, so the fingerprint stays small).
    """
    return {name: digest(value) for name, value in settings.items()}


def fingerprint_mismatch(saved: dict, current: dict) -> str | None:
    """The first setting whose digest differs between two fingerprints, or None.

    A setting present in one fingerprint only counts as different.
    """
    names = [n for n in FINGERPRINT_SETTINGS if n in saved or n in current]
    names += sorted((set(saved) | set(current)) - set(names))
    return next((name for name in names if saved.get(name) != current.get(name)), None)
