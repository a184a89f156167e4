"""The one name policy for every user-supplied name that reaches a store.

Two kinds of names:

- **object names** become HDF5 link names or file names: spaces, prompt sets, metadata
  columns, caption sets. ``/`` (HDF5's separator), ``.`` and ``..`` are refused.
- **value names** are stored as strings: classes, item ids, prompts' class names, model
  names. They may hold ``/`` (a folder dataset's ids are relative paths).

Both kinds are normalised the same way (a leading UTF-8 byte-order mark dropped, Unicode
NFC, surrounding whitespace stripped) and refused when empty or holding NUL or another
control character. A list of names is refused when two of them are equal once
normalised. Callers check names here **before** any long work starts, so a bad column
name fails in a second, not after every clip is embedded.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable

from embedstore.errors import InputError

_BOM = "\ufeff"


def normalise(name: str) -> str:
    """The policy's normal form: BOM dropped, NFC, surrounding whitespace stripped."""
    return unicodedata.normalize("NFC", name.replace(_BOM, "")).strip()


def check_name(name: object, what: str, *, object_name: bool = False) -> str:
    """Return ``name`` in normal form, or raise :class:`InputError` saying why it is refused.

    Parameters
    ----------
    name : str
        The user's name.
    what : str
        What it is, for the message (``"metadata column"``, ``"class"``, ``"space name"``).
    object_name : bool
        True for names that become HDF5 object or file names (no ``/``, ``.`` or ``..``).
    """
    if not isinstance(name, str):
        raise InputError(f"invalid {what} {name!r}: must be text")
    clean = normalise(name)
    if not clean:
        raise InputError(f"invalid {what} {name!r}: empty")
    bad = next((ch for ch in clean if unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        raise InputError(f"invalid {what} {name!r}: holds the control character {bad!r}")
    if object_name:
        if "/" in clean:
            raise InputError(f"invalid {what} {name!r}: holds '/'; use letters, digits, spaces, '-', '_'")
        if clean in (".", ".."):
            raise InputError(f"invalid {what} {name!r}: not allowed as a name")
    return clean


def check_names(names: Iterable[object], what: str, *, object_name: bool = False) -> list[str]:
    """Check each name (:func:`check_name`) and refuse two that are equal once normalised."""
    seen: dict[str, object] = {}
    out = []
    for name in names:
        clean = check_name(name, what, object_name=object_name)
        if clean in seen:
            first = seen[clean]
            same = "" if first == name else f" (same as {first!r} once normalised)"
            raise InputError(f"{what} {name!r} occurs twice{same}; names must be unique")
        seen[clean] = name
        out.append(clean)
    return out


# The embedding spaces the format names (docs/store-format.md, 1.1): after the
# projection head, and before it.
SPEC_SPACES = ("joint", "prejoint")


def check_space_name(name: object, extra: Iterable[str] = ()) -> str:
    """A space name the spec names, or one the user asked for explicitly (``extra``).

    Anything else is refused, with the nearest spec name when it looks like a typo
    (``pre_joint`` -> ``prejoint``), so a misspelling cannot create a third space.
    """
    clean = check_name(name, "space name", object_name=True)
    allowed = {check_name(e, "space name", object_name=True) for e in extra}
    if clean in SPEC_SPACES or clean in allowed:
        return clean
    near = difflib.get_close_matches(clean.lower(), SPEC_SPACES, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise InputError(f"unknown space {clean!r}: {hint}the spec names {' and '.join(SPEC_SPACES)}; "
                     f"pass --extra-space {clean} to add another space")
