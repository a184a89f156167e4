"""Built-in prompt sets and user prompt files."""

import json
import re

import numpy as np
import pytest

from embedstore.errors import InputError
from embedstore.extract.prompts import (
    build_prompt_set,
    builtin_prompt_sets,
    default_prompt_specs,
    read_prompt_file,
)
from embedstore.ontology import load_ontology

TINYSOL = ["Bass Tuba", "French Horn", "Trombone", "Trumpet in C", "Accordion", "Contrabass",
           "Violin", "Viola", "Violoncello", "Bassoon", "Clarinet in Bb", "Flute", "Oboe",
           "Alto Saxophone"]
FAMILY_OF = {"Bass Tuba": "brass", "French Horn": "brass", "Trombone": "brass",
             "Trumpet in C": "brass", "Accordion": "keyboard", "Contrabass": "string",
             "Violin": "string", "Viola": "string", "Violoncello": "string", "Bassoon": "wind",
             "Clarinet in Bb": "wind", "Flute": "wind", "Oboe": "wind", "Alto Saxophone": "wind"}


@pytest.mark.parametrize("name, expected", [
    ("track", "A Viola track"),
    ("recording", "This is a recording of Viola"),
    ("solo", "Solo musical instrument sound of Viola"),
    ("negative", "A no Viola track"),
])
def test_template_sets_name_each_class_once(name, expected):
    spec = build_prompt_set(name, TINYSOL)
    assert spec.name == name
    assert spec.prompts[TINYSOL.index("Viola")] == expected
    np.testing.assert_array_equal(spec.classes, np.arange(14))
    assert spec.classes.dtype == np.int32


def test_labels_use_spaces_for_underscores():
    assert build_prompt_set("track", ["french_horn"]).prompts == ["A french horn track"]


def test_definitions_cover_every_tinysol_class_with_distinct_sentences():
    spec = build_prompt_set("definition", TINYSOL)
    assert len(set(spec.prompts)) == 14
    for cls, prompt in zip(TINYSOL, spec.prompts):
        head = cls.split(" in ")[0].lower()
        assert prompt.lower().startswith(f"the {head}")
        assert prompt.endswith(".")


def test_definition_nolabel_is_the_definition_without_the_name():
    full = build_prompt_set("definition", TINYSOL).prompts
    stripped = build_prompt_set("definition-nolabel", TINYSOL).prompts
    for cls, whole, bare in zip(TINYSOL, full, stripped):
        for word in re.findall(r"[a-z]+", cls.lower()):
            if word in {"in", "c", "bb"}:
                continue
            assert not re.search(rf"\b{word}", bare.lower()), (cls, bare)
        # Removing words only: what is left is a subsequence of the definition's words.
        words = iter(whole.replace(",", " ,").split())
        assert all(any(w == v for v in words) for w in bare.replace(",", " ,").split())
        assert len(bare) < len(whole)


def test_class_names_are_matched_loosely_for_built_in_knowledge():
    by_code = build_prompt_set("definition", ["Vc", "clarinet_in_b-flat", "cello"]).prompts
    assert by_code[0] == by_code[2]
    assert "clarinet" in by_code[1]


def test_lorem_is_seeded_and_independent_of_class_order():
    a = build_prompt_set("lorem", TINYSOL)
    b = build_prompt_set("lorem", TINYSOL[::-1])
    assert a.prompts == b.prompts[::-1]
    assert a.prompts == build_prompt_set("lorem", TINYSOL).prompts
    assert len(set(p.split(" ", 2)[-1] for p in a.prompts)) == 14
    for cls, prompt in zip(TINYSOL, a.prompts):
        assert prompt.startswith(cls + " ")
        assert len(prompt[len(cls):].split()) == 6


def test_family_prompts_come_from_each_class_family():
    spec = build_prompt_set("family", TINYSOL)
    assert spec.prompts == [f"A {FAMILY_OF[c]} instruments track" for c in TINYSOL]
    given = build_prompt_set("family", ["a", "b"], families=["Strings", "Percussion"])
    assert given.prompts == ["A string instruments track", "A percussion instruments track"]
    with pytest.raises(InputError, match="2 classes"):
        build_prompt_set("family", ["a", "b"], families=["Strings"])


@pytest.mark.parametrize("name", ["definition", "definition-nolabel", "family"])
def test_sets_needing_instrument_knowledge_refuse_unknown_classes(name):
    with pytest.raises(InputError, match="'Theremin'"):
        build_prompt_set(name, ["Violin", "Theremin"])


def test_ontology_set_holds_every_node_and_maps_the_classes():
    onto = load_ontology("hdio")
    spec = build_prompt_set("ontology", TINYSOL)
    assert spec.terms == [node.path for node in onto.nodes]
    assert len(spec.prompts) == len(onto.nodes)
    assert spec.prompts[spec.terms.index("instrument/stringed/bowed/violin")] == "A violin track"
    mapped = {spec.terms[i]: int(c) for i, c in enumerate(spec.classes) if c >= 0}
    assert sorted(mapped.values()) == list(range(14))
    assert mapped["instrument/wind/pipe_aerophones/brass/with_valves/tuba"] == 0
    # Classes outside the ontology leave every node at -1 instead of failing.
    assert (build_prompt_set("ontology", ["doorbell"]).classes == -1).all()


def test_defaults_are_every_built_in_set_that_fits():
    assert [s.name for s in default_prompt_specs(TINYSOL)] == builtin_prompt_sets()
    assert [s.name for s in default_prompt_specs(["dog", "cat"])] == [
        "track", "lorem", "recording", "solo", "negative", "ontology"]


def test_unknown_built_in_name():
    with pytest.raises(InputError, match="unknown prompt set 'tracks'"):
        build_prompt_set("tracks", TINYSOL)


def test_txt_file_gives_one_prompt_per_class_in_order(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("a dog barking\n\n  a cat   meowing \n", encoding="utf-8")
    spec = build_prompt_set(path, ["dog", "cat"])
    assert spec.name == "mine"
    assert spec.prompts == ["a dog barking", "a cat meowing"]
    np.testing.assert_array_equal(spec.classes, [0, 1])
    path.write_text("only one\n", encoding="utf-8")
    with pytest.raises(InputError, match="1 prompts.*needs 2"):
        read_prompt_file(path, ["dog", "cat"])


def test_csv_file_allows_many_prompts_per_class(tmp_path):
    path = tmp_path / "pets.csv"
    path.write_text('class,prompt\ncat,"a cat, purring"\nDog,a dog\ncat,kitten\n', encoding="utf-8")
    spec = build_prompt_set(str(path), ["dog", "cat"])
    assert spec.name == "pets"
    assert spec.prompts == ["a cat, purring", "a dog", "kitten"]
    np.testing.assert_array_equal(spec.classes, [1, 0, 1])


def test_json_file_maps_classes_to_prompts(tmp_path):
    path = tmp_path / "styles.json"
    path.write_text(json.dumps({"cat": ["a cat", "meow"], "dog": "woof"}), encoding="utf-8")
    spec = build_prompt_set(path, ["dog", "cat"])
    assert spec.prompts == ["a cat", "meow", "woof"]
    np.testing.assert_array_equal(spec.classes, [1, 1, 0])


@pytest.mark.parametrize("name, text, message", [
    ("u.csv", "class,prompt\ncow,moo\ndog,woof\ncat,meow\n", "unknown class 'cow'"),
    ("u.json", '{"dog": "woof", "cow": "moo", "cat": "x"}', "unknown class 'cow'"),
    ("m.json", '{"dog": "woof"}', "no prompt for: cat"),
    ("h.csv", "label,text\ndog,woof\n", "columns 'class' and 'prompt'"),
    ("b.json", '{"dog": [1]}', "string or a list of strings"),
    ("l.json", '["woof"]', "must hold an object"),
    ("j.json", "{not json", "not valid JSON"),
    ("e.csv", "class,prompt\ndog,   \ncat,meow\n", "empty prompt"),
])
def test_bad_prompt_files_raise_one_line_errors(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message) as err:
        build_prompt_set(path, ["dog", "cat"])
    assert "\n" not in str(err.value)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        build_prompt_set(tmp_path / "nope.txt", ["dog"])


def test_the_dataset_readers_tinysol_class_names_get_every_set():
    from embedstore.datasets import TINYSOL_CLASSES

    specs = default_prompt_specs(TINYSOL_CLASSES)
    assert [s.name for s in specs] == builtin_prompt_sets()
    by_name = {s.name: s for s in specs}
    assert by_name["definition"].prompts == build_prompt_set("definition", TINYSOL).prompts
    assert by_name["track"].prompts[10] == "A clarinet in b-flat track"
    assert sorted(c for c in by_name["ontology"].classes if c >= 0) == list(range(14))
