"""Small TinySOL-shaped stores for the semantic analyses and the report (random vectors)."""

import numpy as np

from embedstore.ontology import load_ontology

TINYSOL_CLASSES = ["Bass Tuba", "French Horn", "Trombone", "Trumpet in C", "Accordion", "Contrabass",
                   "Violin", "Viola", "Violoncello", "Bassoon", "Clarinet in B-flat", "Flute", "Oboe",
                   "Alto Saxophone"]
FAMILIES = ["Brass"] * 4 + ["Keyboards"] + ["Strings"] * 4 + ["Winds"] * 5
CHECKPOINT_SHA256 = "0123456789abcdef" * 4


def make_tinysol_store(path, model="toy_clap", seed=0, per_class=6, classes=TINYSOL_CLASSES, ontology_set=True):
    """Clips clustered by class in both spaces, two class prompt sets and (optionally) ontology terms."""
    from embedstore.store import create_store

    rng = np.random.default_rng(seed)
    n_classes = len(classes)
    labels = np.repeat(np.arange(n_classes), per_class)
    centre_joint, centre_prejoint = rng.normal(size=(n_classes, 16)), rng.normal(size=(n_classes, 24))
    families = np.array(FAMILIES if list(classes) == TINYSOL_CLASSES else ["other"] * n_classes)
    provenance = {"checkpoint_sha256": CHECKPOINT_SHA256, "encoder": {"checkpoint": {"name": f"{model}.pt"}}}
    with create_store(path, model=model, dataset="tinysol", classes=classes, provenance=provenance) as w:
        w.set_items([f"clip{k}" for k in range(labels.size)], labels=labels, metadata={"family": families[labels]})
        w.add_audio("joint", centre_joint[labels] + rng.normal(size=(labels.size, 16)))
        w.add_audio("prejoint", centre_prejoint[labels] + rng.normal(size=(labels.size, 24)))
        w.add_prompt_set("label", list(classes), np.arange(n_classes),
                         {"joint": centre_joint + rng.normal(size=(n_classes, 16)),
                          "prejoint": rng.normal(size=(n_classes, 20))})
        w.add_prompt_set("sound_of", [f"the sound of {c}" for c in classes] * 2, np.tile(np.arange(n_classes), 2),
                         {"joint": rng.normal(size=(2 * n_classes, 16))})
        if ontology_set:
            paths = [n.path for n in load_ontology("hdio").nodes]
            w.add_prompt_set("ontology", paths, np.full(len(paths), -1),
                             {"joint": rng.normal(size=(len(paths), 16))}, terms=paths)
    return path
