"""Ontology trees: paths, distances, relatedness, class mapping and bad input."""

import json

import pytest

from embedstore.errors import InputError
from embedstore.ontology import Ontology, load_ontology, map_classes, read_ontology_map

TINYSOL_CLASSES = ["Bass Tuba", "French Horn", "Trombone", "Trumpet in C", "Accordion", "Contrabass",
                   "Violin", "Viola", "Violoncello", "Bassoon", "Clarinet in B-flat", "Flute", "Oboe",
                   "Alto Saxophone"]


@pytest.fixture
def small():
    #        root
    #       /    \
    #     a        b
    #    / \       |
    #   a1  x     x (leaf)
    #      / \
    #     x1  x2
    return Ontology("small", {"root": {"a": {"a1": None, "x": ["x1", "x2"]}, "b": ["x"]}})


def test_paths_depths_parents_and_leaves(small):
    assert [n.path for n in small.nodes] == ["root", "root/a", "root/a/a1", "root/a/x", "root/a/x/x1",
                                             "root/a/x/x2", "root/b", "root/b/x"]
    x1 = small.node("root/a/x/x1")
    assert (x1.name, x1.depth, x1.parent) == ("x1", 3, "root/a/x")
    assert small.root.parent is None and small.root.depth == 0
    assert [n.path for n in small.leaves] == ["root/a/a1", "root/a/x/x1", "root/a/x/x2", "root/b/x"]


def test_distance_counts_edges_and_is_symmetric(small):
    pairs = {("root/a/x/x1", "root/a/x/x2"): 2, ("root/a/x/x1", "root/a/a1"): 3,
             ("root/a/x/x1", "root/b/x"): 5, ("root/a", "root/a/x/x2"): 2,
             ("root/a/x/x1", "root/a/x/x1"): 0, ("root", "root/b/x"): 2}
    for (a, b), expected in pairs.items():
        assert small.distance(a, b) == expected
        assert small.distance(b, a) == expected


def test_related_means_common_ancestor_below_root(small):
    assert small.related("root/a/x/x1", "root/a/a1")
    assert small.related("root/a", "root/a/x/x2")          # an ancestor is related
    assert not small.related("root/a/x/x1", "root/b/x")    # only the root in common
    assert not small.related("root", "root/a")
    assert small.lowest_common_ancestor("root/a/x/x1", "root/a/a1").path == "root/a"


def test_find_and_resolve_repeated_names(small):
    assert [n.path for n in small.find("x")] == ["root/a/x", "root/b/x"]
    assert small.resolve("x").path == "root/b/x"           # the only leaf of that name
    assert small.resolve("root/a/x").path == "root/a/x"    # a path always wins
    with pytest.raises(InputError, match="no node named"):
        small.resolve("nothing")


def test_ambiguous_name_without_a_single_leaf_is_refused():
    onto = Ontology("amb", {"r": {"a": {"s": ["p"]}, "b": {"s": ["q"]}}})
    with pytest.raises(InputError, match="ambiguous.*r/a/s, r/b/s"):
        onto.resolve("s")


def test_hdio_builtin_shape():
    onto = load_ontology("hdio")
    assert onto.root.path == "instrument"
    assert len(onto.nodes) == 151 and len(onto.leaves) == 100
    violin = onto.node("instrument/stringed/bowed/violin")
    assert onto.distance(violin, onto.resolve("contrabass")) == 2
    assert onto.distance(violin, onto.resolve("piano")) == 4
    assert not onto.related(violin, onto.resolve("flute"))
    assert len(onto.find("struck")) == 5
    assert onto.term(onto.resolve("french_horn")) == "french horn"
    assert onto.resolve("trompette en chamade").name == "trompette en chamade"


def test_tinysol_classes_map_by_aliases():
    onto = load_ontology("hdio")
    nodes = map_classes(onto, TINYSOL_CLASSES)
    assert [n.name for n in nodes] == ["tuba", "french_horn", "trombone", "trumpet", "accordion", "contrabass",
                                       "violin", "viola", "violoncello", "bassoon", "clarinet", "flute", "oboe",
                                       "saxophone"]
    assert map_classes(onto, ["cello", "Clarinet in Bb"])[0].name == "violoncello"


def test_map_file_overrides_and_unmapped_class(tmp_path):
    onto = load_ontology("hdio")
    path = tmp_path / "map.csv"
    path.write_text("class,node\nfiddle,violin\nhorn,instrument/wind/pipe_aerophones/brass/with_valves/french_horn\n")
    mapping = read_ontology_map(path)
    nodes = map_classes(onto, ["fiddle", "horn", "Flute"], mapping)
    assert [n.name for n in nodes] == ["violin", "french_horn", "flute"]
    with pytest.raises(InputError, match="class 'kazooka'"):
        map_classes(onto, ["Flute", "kazooka"])
    with pytest.raises(InputError, match="does not have: ghost"):
        map_classes(onto, ["Flute"], {"ghost": "flute"})


@pytest.mark.parametrize("text, message", [
    ("klass,node\na,b\n", "columns 'class' and 'node'"),
    ("class,node\na,\n", "line 2: empty"),
    ("class,node\na,violin\na,viola\n", "mapped twice"),
])
def test_bad_map_files(tmp_path, text, message):
    path = tmp_path / "map.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_ontology_map(path)


def test_bad_ontology_inputs(tmp_path):
    with pytest.raises(InputError, match="unknown ontology 'nope'"):
        load_ontology("nope")
    with pytest.raises(InputError, match="not found"):
        load_ontology(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="cannot read ontology"):
        load_ontology(broken)
    no_tree = tmp_path / "no_tree.json"
    no_tree.write_text(json.dumps({"name": "x"}))
    with pytest.raises(InputError, match="no 'tree' key"):
        load_ontology(no_tree)
    two_roots = tmp_path / "two.json"
    two_roots.write_text(json.dumps({"tree": {"a": ["x"], "b": ["y"]}}))
    with pytest.raises(InputError, match="exactly one root"):
        load_ontology(two_roots)
    with pytest.raises(InputError, match="appears twice"):
        Ontology("dup", {"r": ["x", "x"]})
    with pytest.raises(InputError, match="holds int"):
        Ontology("bad", {"r": {"a": 3}})
