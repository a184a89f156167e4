"""Instrument ontologies: trees of category names, and how dataset classes map onto them.

An ontology file is JSON with a ``tree``: a mapping is a category, a list holds leaf
instruments. Names repeat in different branches (``struck`` is under ``stringed`` and
under ``percussion``), so a node is identified by its path, ``"instrument/stringed/bowed/violin"``.
Underscores in names stand for spaces.

Tree distance is the number of edges between two nodes. Two nodes are *related* when their
lowest common ancestor is not the root: the root only joins the top families.

Examples
--------
>>> onto = load_ontology("hdio")
>>> violin = onto.node("instrument/stringed/bowed/violin")
>>> onto.distance(violin, onto.node("instrument/stringed/bowed/viola"))
2
>>> onto.related(violin, onto.find("flute")[0])
False
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from embedstore.errors import InputError
from embedstore.resources import DATA_DIR

BUILTIN_DIR = DATA_DIR / "ontologies"

# Dataset class names that differ from the ontology's leaf names (lower-cased keys).
CLASS_ALIASES = {
    "bass tuba": "tuba",
    "trumpet in c": "trumpet",
    "cello": "violoncello",
    "clarinet in b-flat": "clarinet",
    "clarinet in bb": "clarinet",
    "alto saxophone": "saxophone",
    "french horn": "french_horn",
}


@dataclass(frozen=True)
class Node:
    """One node of an ontology tree.

    Attributes
    ----------
    path : str
        Names from the root joined by ``/``; unique within the tree.
    name : str
        The node's own name, underscores standing for spaces.
    depth : int
        Edges from the root (the root has depth 0).
    parent : str or None
        The parent's path; ``None`` for the root.
    """

    path: str
    name: str
    depth: int
    parent: str | None


class Ontology:
    """A tree of named nodes with path lookup, tree distances and relatedness.

    Parameters
    ----------
    name : str
        Short name of the ontology (``"hdio"``).
    tree : dict
        A single-key mapping ``{root_name: subtree}``; a mapping is a category, a list
        holds leaves.
    title : str, optional
        Human-readable description.
    """

    def __init__(self, name: str, tree: dict, title: str = ""):
        if not isinstance(tree, dict) or len(tree) != 1:
            raise InputError(f"ontology {name!r}: 'tree' must be a mapping with exactly one root")
        self.name = name
        self.title = title
        self.nodes: list[Node] = []
        self._by_path: dict[str, Node] = {}
        self._by_name: dict[str, list[Node]] = {}
        (root_name, subtree), = tree.items()
        self._add(root_name, None, 0, subtree)
        self.root = self.nodes[0]
        parents = {node.parent for node in self.nodes}
        self.leaves = [node for node in self.nodes if node.path not in parents]
        self._leaf_paths = {node.path for node in self.leaves}

    def _add(self, name, parent: Node | None, depth: int, subtree) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise InputError(f"ontology {self.name!r}: bad node name {name!r}")
        path = name if parent is None else f"{parent.path}/{name}"
        if path in self._by_path:
            raise InputError(f"ontology {self.name!r}: node {path!r} appears twice")
        node = Node(path=path, name=name, depth=depth, parent=None if parent is None else parent.path)
        self.nodes.append(node)
        self._by_path[path] = node
        self._by_name.setdefault(_name_key(name), []).append(node)
        if isinstance(subtree, dict):
            for child, grandchildren in subtree.items():
                self._add(child, node, depth + 1, grandchildren)
        elif isinstance(subtree, list):
            for leaf in subtree:
                self._add(leaf, node, depth + 1, None)
        elif subtree is not None:
            raise InputError(f"ontology {self.name!r}: node {path!r} holds {type(subtree).__name__}, "
                             "expected a mapping or a list")

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, path: str) -> Node:
        """The node at ``path``; InputError if there is none."""
        try:
            return self._by_path[path]
        except KeyError:
            raise InputError(f"ontology {self.name!r} has no node {path!r}") from None

    def find(self, name: str) -> list[Node]:
        """All nodes called ``name`` (spaces and underscores are interchangeable)."""
        return list(self._by_name.get(_name_key(name), []))

    def resolve(self, name_or_path: str) -> Node:
        """One node from a path, or from a name that is unique or names a single leaf.

        Raises InputError when the name is unknown or stays ambiguous.
        """
        key = name_or_path.strip()
        if key in self._by_path:
            return self._by_path[key]
        found = self.find(key)
        if len(found) > 1:
            leaves = [node for node in found if node.path in self._leaf_paths]
            if len(leaves) == 1:
                return leaves[0]
            paths = ", ".join(node.path for node in found)
            raise InputError(f"{key!r} is ambiguous in ontology {self.name!r} ({paths}); give its path")
        if not found:
            raise InputError(f"ontology {self.name!r} has no node named {key!r}")
        return found[0]

    def _as_node(self, node: Node | str) -> Node:
        return node if isinstance(node, Node) else self.node(node)

    def ancestors(self, node: Node | str) -> list[str]:
        """Paths from the root down to ``node`` itself."""
        parts = self._as_node(node).path.split("/")
        return ["/".join(parts[: i + 1]) for i in range(len(parts))]

    def lowest_common_ancestor(self, a: Node | str, b: Node | str) -> Node:
        """The deepest node that is an ancestor of both (a node is its own ancestor)."""
        shared = _shared_depth(self._as_node(a), self._as_node(b))
        return self.node("/".join(self._as_node(a).path.split("/")[:shared]))

    def distance(self, a: Node | str, b: Node | str) -> int:
        """Number of edges on the tree path between ``a`` and ``b``."""
        a, b = self._as_node(a), self._as_node(b)
        shared = _shared_depth(a, b)
        return (a.depth + 1 - shared) + (b.depth + 1 - shared)

    def related(self, a: Node | str, b: Node | str) -> bool:
        """True when the lowest common ancestor of ``a`` and ``b`` is not the root."""
        return _shared_depth(self._as_node(a), self._as_node(b)) > 1

    @staticmethod
    def term(node: Node) -> str:
        """Display name of a node: its name with underscores as spaces."""
        return node.name.replace("_", " ")


def _name_key(name: str) -> str:
    """Lookup key for a node name: case-folded, spaces and underscores alike."""
    return "_".join(name.lower().replace("_", " ").split())


def _shared_depth(a: Node, b: Node) -> int:
    """Number of leading path components ``a`` and ``b`` share (1 when only the root)."""
    shared = 0
    for x, y in zip(a.path.split("/"), b.path.split("/")):
        if x != y:
            break
        shared += 1
    return shared


def builtin_ontologies() -> list[str]:
    """Names of the ontologies shipped in ``data/ontologies``."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def load_ontology(name_or_path: str | Path) -> Ontology:
    """Load a built-in ontology by name (``"hdio"``) or an ontology JSON file by path.

    Parameters
    ----------
    name_or_path : str or Path
        A built-in name, or the path of a JSON file with a ``tree`` key (and optionally
        ``name`` and ``title``).

    Returns
    -------
    Ontology

    Raises
    ------
    InputError
        Unknown name, unreadable file, or a file that is not an ontology.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = BUILTIN_DIR / f"{name_or_path}.json"
        if not path.is_file():
            known = ", ".join(builtin_ontologies()) or "none"
            raise InputError(f"unknown ontology {str(name_or_path)!r} (built in: {known}; or give a JSON file)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"ontology file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read ontology {path}: {exc}") from None
    if not isinstance(doc, dict) or "tree" not in doc:
        raise InputError(f"{path} is not an ontology file (no 'tree' key)")
    return Ontology(str(doc.get("name", path.stem)), doc["tree"], str(doc.get("title", "")))


def read_ontology_map(path: str | Path) -> dict[str, str]:
    """Read a class-to-node CSV with a header ``class,node`` (node as a name or a path).

    Returns
    -------
    dict
        Class name -> node name or path, in file order.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise InputError(f"ontology map not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read ontology map {path}: {exc}") from None
    if not rows or not {"class", "node"} <= set(rows[0]):
        raise InputError(f"ontology map {path} needs a header with columns 'class' and 'node'")
    mapping: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        cls, node = (row.get("class") or "").strip(), (row.get("node") or "").strip()
        if not cls or not node:
            raise InputError(f"ontology map {path}, line {line}: empty class or node")
        if cls in mapping and mapping[cls] != node:
            raise InputError(f"ontology map {path}, line {line}: class {cls!r} mapped twice")
        mapping[cls] = node
    return mapping


def map_classes(ontology: Ontology, classes: list[str], mapping: dict[str, str] | None = None) -> list[Node]:
    """Ontology node for each dataset class.

    A class found in ``mapping`` uses that entry (a node name or path); otherwise the
    built-in aliases (``bass tuba -> tuba``, ``cello -> violoncello``...) and then the
    class's own name, lower-cased with spaces as underscores.

    Raises
    ------
    InputError
        A class maps to no node, or to an ambiguous name (resolve it with a path).
    """
    mapping = mapping or {}
    unknown = sorted(set(mapping) - set(classes))
    if unknown:
        raise InputError(f"ontology map names classes the store does not have: {', '.join(unknown)}")
    nodes = []
    for cls in classes:
        if cls in mapping:
            nodes.append(ontology.resolve(mapping[cls]))
            continue
        key = " ".join(cls.lower().split())
        key = CLASS_ALIASES.get(key, key)
        try:
            nodes.append(ontology.resolve(key))
        except InputError as exc:
            raise InputError(f"class {cls!r}: {exc}; map it with --ontology-map") from None
    return nodes
