"""A small store for the metric analyses' tests: five classes, three prompt sets."""

import numpy as np

from embedstore.store import create_store

CLASSES = ["flute", "oboe", "violin", "cello", "tuba"]
N, D = 240, 12


def make_store(path, multilabel=False, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(CLASSES), D))
    labels = np.arange(N) % len(CLASSES)
    audio = centers[labels] + 1.3 * rng.normal(size=(N, D))
    prejoint = rng.normal(size=(N, 2 * D))
    # two prompts per class in "pair", one in "single"; "ontology" has a prompt for no class
    pair_text = np.r_[centers, centers] + rng.normal(size=(2 * len(CLASSES), D))
    with create_store(path, model="toy", dataset="toyset", classes=CLASSES) as w:
        if multilabel:
            matrix = np.eye(len(CLASSES), dtype=bool)[labels] | (rng.random((N, len(CLASSES))) < 0.2)
            w.set_items([f"clip{i}" for i in range(N)], label_matrix=matrix)
        else:
            w.set_items([f"clip{i}" for i in range(N)], labels=labels)
        w.add_audio("joint", audio)
        w.add_audio("prejoint", prejoint)
        w.add_prompt_set("pair", [f"p{i}" for i in range(10)], np.r_[np.arange(5), np.arange(5)],
                         embeddings={"joint": pair_text})
        w.add_prompt_set("single", list(CLASSES), np.arange(5), embeddings={"joint": centers})
        w.add_prompt_set("ontology", ["instrument", *CLASSES], np.r_[-1, np.arange(5)],
                         embeddings={"joint": rng.normal(size=(6, D))})
    return path
