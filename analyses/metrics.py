"""Classification metrics over item x class similarity scores, computed block by block.

A *scorer* hands out blocks of the (items, classes) score matrix; nothing here ever
holds the whole matrix unless it is small.

- The zero-shot suite (:func:`classification_metrics`) makes one pass over class-major
  blocks (all classes x a block of items): each item's true-class rank and top class,
  and every negative score placed among its class's sorted positive scores, which were
  computed up front; that gives each class's ROC-AUC and average precision exactly
  without sorting all n scores of a class (:func:`auc_ap_ranks`).
- A row pass (item blocks x all classes) gives predictions and top-2 margins
  (:func:`rank_pass`).

Bootstrap resamples need whole sorted columns instead: a column pass (class blocks x all
items) sorts each class once and weighs the items of every resample.

Tie rules are those of :mod:`analyses.kernels` (scikit-learn's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from analyses import kernels_on_demand as kernels
from embedstore.errors import InputError

TOP_K = 5
# Bytes of float32 scores one block may hold (row blocks and column blocks alike).
BLOCK_BYTES = 64 * 2**20
# Rows of stored vectors read (and held in float64) at a time.
READ_ROWS = 8192
COLUMN_BLOCK_BYTES = 256 * 2**20
# Above this many positive (item, class) pairs, AUC and AP sort whole columns instead.
MAX_COUNTED_POSITIVES = 4_000_000
# Negatives held aside, when positives are known only to within rounding, before a pass
# gives up and places every negative again against the exact positives.
MAX_AMBIGUOUS = 4_000_000
# Below this many scores the kernels run on one thread: waking the others costs more
# than the work, and much more on a busy machine.
PARALLEL_MIN_SCORES = 1_000_000


def _threads_by_size(func):
    """Run ``func(scorer, ...)`` with one numba thread when the score matrix is small."""

    @functools.wraps(func)
    def wrapper(scorer, *args, **kwargs):
        if scorer.n_items * scorer.n_classes >= PARALLEL_MIN_SCORES:
            return func(scorer, *args, **kwargs)
        with _one_thread():
            return func(scorer, *args, **kwargs)

    return wrapper


def _threads() -> int:
    import numba

    return numba.get_num_threads()


@contextlib.contextmanager
def _one_thread():
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


@dataclass
class Targets:
    """Which items carry which classes, in the form the kernels take.

    Single-label: ``labels`` (n,) int32 and an empty (0, 0) ``label_matrix``.
    Multi-label: ``label_matrix`` (n, C) bool and an empty (0,) ``labels``.
    ``mask`` (n, C) bool marks the (item, class) pairs that carry a label (present or
    absent) when a multi-label dataset is partially labelled (OpenMIC-2018); pairs
    it leaves False are left out of every metric. Empty (0, 0) when every pair is
    labelled.
    """

    labels: np.ndarray
    label_matrix: np.ndarray
    multilabel: bool
    n_classes: int
    mask: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), bool))

    @classmethod
    def single(cls, labels, n_classes: int) -> Targets:
        labels = np.ascontiguousarray(labels, dtype=np.int32)
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise InputError(f"labels must lie in 0..{n_classes - 1}")
        return cls(labels, np.zeros((0, 0), bool), False, n_classes)

    @classmethod
    def multi(cls, label_matrix, mask=None) -> Targets:
        """Multi-label targets; ``mask`` (n, C) True where a pair is labelled (None: all)."""
        label_matrix = np.ascontiguousarray(label_matrix, dtype=bool)
        if mask is None:
            return cls(np.zeros(0, np.int32), label_matrix, True, label_matrix.shape[1])
        mask = np.ascontiguousarray(mask, dtype=bool)
        if mask.shape != label_matrix.shape:
            raise InputError(f"label mask has shape {mask.shape}, labels {label_matrix.shape}")
        if np.any(label_matrix & ~mask):
            raise InputError("the label mask leaves out pairs that carry a label")
        return cls(np.zeros(0, np.int32), label_matrix, True, label_matrix.shape[1], mask)

    @classmethod
    def from_store(cls, store) -> Targets:
        if store.multilabel:
            return cls.multi(store.label_matrix, getattr(store, "label_mask", None))
        return cls.single(store.labels, len(store.classes))

    @property
    def masked(self) -> bool:
        """Whether some (item, class) pairs are unlabelled."""
        return self.mask.shape[0] > 0

    @property
    def n_items(self) -> int:
        return self.label_matrix.shape[0] if self.multilabel else self.labels.shape[0]

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Kernel arguments (labels, label_matrix, multilabel) for items ``start:stop``."""
        if self.multilabel:
            return self.labels, self.label_matrix[start:stop], True
        return self.labels[start:stop], self.label_matrix, False

    def mask_rows(self, start: int, stop: int) -> np.ndarray:
        """The label mask of items ``start:stop`` (the empty mask when every pair is labelled)."""
        return self.mask[start:stop] if self.masked else self.mask

    def observed(self) -> np.ndarray:
        """(C,) number of items labelled (present or absent) for each class."""
        if self.masked:
            return self.mask.sum(axis=0).astype(np.int64)
        return np.full(self.n_classes, self.n_items, np.int64)

    def support(self) -> np.ndarray:
        """(C,) number of items carrying each class."""
        if self.multilabel:
            return self.label_matrix.sum(axis=0).astype(np.int64)
        return np.bincount(self.labels, minlength=self.n_classes).astype(np.int64)


class ArrayScorer:
    """Blocks of a score matrix already in memory (small data, tests)."""

    def __init__(self, scores: np.ndarray):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.n_items, self.n_classes = self.scores.shape

    def block(self, start: int, stop: int, first_class: int = 0, last_class: int | None = None) -> np.ndarray:
        return np.ascontiguousarray(self.scores[start:stop, first_class:last_class])

    def block_t(self, start: int, stop: int) -> np.ndarray:
        """(classes, items ``start:stop``) scores, class-major."""
        return np.ascontiguousarray(self.scores[start:stop].T)

    def pair_scores(self, items: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, bool]:
        """The scores of (item, class) pairs, float64, and True: they are the blocks' own values."""
        return self.scores[items, classes].astype(np.float64), True


class CosineScorer:
    """Cosine similarity of unit audio rows against unit class vectors, through BLAS."""

    def __init__(self, unit_audio: np.ndarray, unit_classes: np.ndarray):
        if unit_audio.shape[1] != unit_classes.shape[1]:
            raise InputError(
                f"audio vectors have {unit_audio.shape[1]} dimensions but class vectors {unit_classes.shape[1]}"
            )
        self.audio = unit_audio
        self.classes = np.ascontiguousarray(unit_classes, dtype=np.float32)
        self.n_items = unit_audio.shape[0]
        self.n_classes = unit_classes.shape[0]

    def block(self, start: int, stop: int, first_class: int = 0, last_class: int | None = None) -> np.ndarray:
        return self.audio[start:stop] @ self.classes[first_class:last_class].T

    def block_t(self, start: int, stop: int) -> np.ndarray:
        """(classes, items ``start:stop``) scores, class-major, from one BLAS product."""
        return self.classes @ self.audio[start:stop].T

    def pair_scores(self, items: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, bool]:
        """Cosines of (item, class) pairs in float64, and False: BLAS's float32 blocks round
        differently, so these are close to the blocks' values, not equal to them."""
        order = np.argsort(items, kind="stable")  # audio rows in order: read once, in sequence
        dots = np.empty(items.shape[0])
        kernels.pair_dots(self.audio, self.classes, items[order], classes[order], dots)
        out = np.empty_like(dots)
        out[order] = dots
        return out, False


CENTROIDS = ("raw", "unit")


class CentroidScorer:
    """Cosine similarity of unit audio rows against audio class centroids.

    A centroid is the L2-normalised mean of a class's member vectors: the raw vectors
    (``raw_audio`` given: the study's definition) or the unit ones (``raw_audio`` None).
    With ``leave_one_out`` each item meets its own classes' centroids computed without it.

    Parameters
    ----------
    unit_audio : np.ndarray
        (n, d) float32 unit rows, the items scored.
    targets : Targets
    leave_one_out : bool
    raw_audio : np.ndarray or h5py dataset, optional
        (n, d) the same rows before normalisation; read a block at a time.
    fit : (rows, Targets), optional
        Other items whose class means are the centroids (rows raw or unit, as the
        centroid definition wants; read a block at a time); None: the scored items'
        own. Excludes ``leave_one_out`` (a scored item is in no centroid).
    """

    def __init__(self, unit_audio: np.ndarray, targets: Targets, leave_one_out: bool = False, raw_audio=None,
                 fit: tuple | None = None):
        if fit is not None and leave_one_out:
            raise InputError("leave-one-out centroids leave each item out of its own class mean; centroids "
                             "fitted on other items hold none of the items scored")
        members, member_targets = fit if fit is not None else (unit_audio if raw_audio is None else raw_audio, targets)
        sums, counts, item_norms = _member_sums(members, member_targets)
        if leave_one_out and np.any(counts < 2):
            raise InputError(f"leave-one-out centroids need two items per class; {int(np.sum(counts < 2))} classes have fewer")
        self.audio = unit_audio
        self.targets = targets
        self.leave_one_out = leave_one_out
        self.counts = counts  # members per class
        self.sums = sums.astype(np.float32)
        self.sq_norms = np.einsum("ij,ij->i", sums, sums)
        self.item_norms = item_norms  # read only with leave_one_out, where the members are the items scored
        self.n_items = unit_audio.shape[0]
        self.n_classes = targets.n_classes

    def block(self, start: int, stop: int, first_class: int = 0, last_class: int | None = None) -> np.ndarray:
        dots = self.audio[start:stop] @ self.sums[first_class:last_class].T
        out = np.empty_like(dots)
        t = self.targets
        kernels.centroid_cosines(
            dots, start, first_class, t.labels, t.label_matrix, t.multilabel,
            self.sq_norms, self.item_norms, self.leave_one_out, out,
        )
        return out

    def block_t(self, start: int, stop: int) -> np.ndarray:
        """(classes, items ``start:stop``) scores, class-major."""
        return np.ascontiguousarray(self.block(start, stop).T)


def _member_sums(members, targets: Targets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class sums (float64) and counts of ``members`` rows, and each row's norm.

    ``members`` may be an h5py dataset: it is read ``READ_ROWS`` rows at a time.
    """
    n, d = members.shape
    sums = np.zeros((targets.n_classes, d), np.float64)
    counts = np.zeros(targets.n_classes, np.int64)
    norms = np.empty(n, np.float64)
    for start in range(0, n, READ_ROWS):
        stop = min(n, start + READ_ROWS)
        rows = np.asarray(members[start:stop], dtype=np.float64)
        norms[start:stop] = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        part, part_counts = kernels.class_sums(rows, *targets.rows(start, stop), targets.n_classes)
        sums += part
        counts += part_counts
    return sums, counts, norms


def _row_blocks(n_items: int, n_classes: int):
    rows = int(np.clip(BLOCK_BYTES // (4 * max(n_classes, 1)), 64, 8192))
    for start in range(0, n_items, rows):
        yield start, min(n_items, start + rows)


def _item_blocks(n_items: int, n_classes: int):
    """Blocks of items for class-major passes: as many as ``BLOCK_BYTES`` of scores holds
    (fewer, larger blocks: fewer hand-overs between BLAS's threads and the kernels')."""
    rows = max(64, BLOCK_BYTES // (4 * max(n_classes, 1)))
    for start in range(0, n_items, rows):
        yield start, min(n_items, start + rows)


@_threads_by_size
def rank_pass(scorer, targets: Targets) -> dict[str, np.ndarray]:
    """Predictions, top-2 margins and (single-label) ranks of the true class.

    Returns
    -------
    dict
        ``predictions`` (n,) int32, ``margins`` (n,) float32 (NaN with one class),
        ``correct`` (n,) bool (top class among the item's labels), with a label mask
        ``judged`` (n,) bool (the top class is labelled for the item) and, for
        single-label targets, ``ranks`` (n,) int32 (0 = top).
    """
    n = scorer.n_items
    predictions = np.empty(n, np.int32)
    margins = np.empty(n, np.float32)
    ranks = None if targets.multilabel else np.empty(n, np.int32)
    for start, stop in _row_blocks(n, scorer.n_classes):
        scores = scorer.block(start, stop)
        kernels.top2(scores, predictions[start:stop], margins[start:stop])
        if ranks is not None:
            kernels.true_class_ranks(scores, targets.labels[start:stop], ranks[start:stop])
    if targets.multilabel:
        correct = targets.label_matrix[np.arange(n), predictions]
    else:
        correct = predictions == targets.labels
    out = {"predictions": predictions, "margins": margins, "correct": correct}
    if targets.masked:  # a top class without a label is neither right nor wrong
        out["judged"] = targets.mask[np.arange(n), predictions]
    if ranks is not None:
        out["ranks"] = ranks
    return out


def bucket_table(sorted_values: np.ndarray, per_value: int = 4, max_buckets: int = 2**18):
    """Equal-width buckets over ``sorted_values`` for :func:`analyses.kernels._count_below`.

    Returns
    -------
    table : np.ndarray
        (buckets + 1,) int64: how many values lie below each bucket's lower edge.
    low : float
        The smallest value (0 when there is none).
    per_unit : float
        Buckets per unit of value (0 when all values are equal).
    """
    if sorted_values.size == 0:
        return np.zeros(2, np.int64), 0.0, 0.0
    low, high = float(sorted_values[0]), float(sorted_values[-1])
    n_buckets = int(np.clip(per_value * sorted_values.size, 1, max_buckets))
    per_unit = n_buckets / (high - low) if high > low else 0.0
    table = np.searchsorted(sorted_values, np.linspace(low, high, n_buckets + 1)).astype(np.int64)
    return table, low, per_unit


def _positive_pairs(targets: Targets) -> tuple[np.ndarray, np.ndarray]:
    """Every positive (item, class) pair, class by class, items in order.

    Returns
    -------
    ptr : np.ndarray
        (C + 1,) int64: class ``c``'s pairs are ``ptr[c]:ptr[c + 1]``.
    items : np.ndarray
        (pairs,) int64 item of each pair.
    """
    if targets.multilabel:
        classes, items = np.nonzero(targets.label_matrix.T)
    else:
        items = np.argsort(targets.labels, kind="stable")
        classes = targets.labels
    ptr = np.zeros(targets.n_classes + 1, np.int64)
    np.cumsum(np.bincount(classes, minlength=targets.n_classes), out=ptr[1:])
    return ptr, items.astype(np.int64)


@dataclass
class _SortedPositives:
    """Each class's positive scores in ascending order, with a grid that places a score.

    Class ``c``'s grid has ``grid_size[c]`` cells of width ``1 / grid_scale[c]`` from
    ``grid_low[c]`` (a cell below the smallest positive) past the largest, plus one cell
    for everything below and one for everything above. Cell ``r`` (0 the one below) spans
    ``[left, right)``; widened by ``reach = eps + width / 4`` (the quarter absorbs rounding
    in the cell index), ``below`` counts the positives under ``left - reach`` and
    ``up_to[r]`` those up to ``right + reach``. Equal counts: no positive lies within
    ``eps`` of any score in the cell, and ``cells[r] = below`` is the score's place;
    otherwise ``cells[r] = -below - 1``.
    """

    ptr: np.ndarray
    values: np.ndarray
    grid_ptr: np.ndarray
    cells: np.ndarray
    up_to: np.ndarray
    grid_low: np.ndarray
    grid_scale: np.ndarray
    grid_size: np.ndarray

    @classmethod
    def build(cls, ptr: np.ndarray, values: np.ndarray, eps: float | None = None) -> _SortedPositives:
        """From ``values`` (float64) laid out as :func:`_positive_pairs` lays out the pairs;
        the grids only with ``eps`` (else every class's grid is empty)."""
        n_classes = ptr.shape[0] - 1
        classes = np.repeat(np.arange(n_classes), np.diff(ptr))
        values = np.ascontiguousarray(values[np.lexsort((values, classes))])
        if eps is None:
            none = np.zeros(0, np.int32)
            return cls(ptr, values, np.zeros(n_classes + 1, np.int64), none, none, np.zeros(n_classes),
                       np.ones(n_classes), np.zeros(n_classes, np.int64))
        grids = [_grid(values[ptr[c]:ptr[c + 1]], eps) for c in range(n_classes)]
        grid_ptr = np.zeros(n_classes + 1, np.int64)
        np.cumsum([g[0].size for g in grids], out=grid_ptr[1:])
        return cls(ptr, values, grid_ptr, np.concatenate([g[0] for g in grids]),
                   np.concatenate([g[1] for g in grids]), np.array([g[2] for g in grids], np.float64),
                   np.array([g[3] for g in grids], np.float64), np.array([g[4] for g in grids], np.int64))


def _grid(row: np.ndarray, eps: float, per_value: int = 16, max_cells: int = 2**14):
    """One class's grid over its sorted positives ``row`` (see :class:`_SortedPositives`)."""
    if row.size == 0:
        return np.zeros(2, np.int32), np.zeros(2, np.int32), 0.0, 1.0, 0
    span = float(row[-1] - row[0])
    magnitude = max(abs(float(row[0])), abs(float(row[-1])), 1.0)
    # cells no narrower than 4 eps, so that a cell's reach stays within its neighbours,
    # nor so narrow that rounding in the cell index could matter
    width = max(span / min(per_value * row.size, max_cells), 4 * eps, 2.0**-40 * magnitude)
    size = int(np.ceil(span / width)) + 2
    low = float(row[0]) - width
    left = low + width * np.arange(-1, size + 1, dtype=np.float64)
    left[0] = -np.inf
    right = np.append(left[1:], np.inf)
    reach = eps + width / 4
    below = np.searchsorted(row, left - reach, side="left").astype(np.int32)
    up_to = np.searchsorted(row, right + reach, side="right").astype(np.int32)
    return np.where(below == up_to, below, -below - 1).astype(np.int32), up_to, low, 1.0 / width, size


@dataclass
class _Placement:
    """What one pass learnt: the positives' exact scores and where the negatives fall.

    ``slots`` and ``ties`` are in :func:`analyses.kernels.place_among_positives`'s layout,
    counted against the exact positives once :meth:`settle` has placed the ambiguous
    negatives (those that fell within ``eps`` of a guessed positive).
    """

    exact: np.ndarray
    slots: np.ndarray
    ties: np.ndarray
    eps: float
    ambiguous_classes: list
    ambiguous_values: list
    n_ambiguous: int = 0
    counted: bool = True

    def settle(self, ptr: np.ndarray, guesses: np.ndarray) -> _SortedPositives | None:
        """The exact sorted positives, with every negative placed; None if the guesses were
        further from the exact scores than the pass assumed (or too many were ambiguous)."""
        if not self.counted or (self.eps > 0 and np.max(np.abs(self.exact - guesses), initial=0.0) > self.eps / 2):
            return None
        positives = _SortedPositives.build(ptr, self.exact)
        if self.ambiguous_values:
            kernels.place_exactly(np.concatenate(self.ambiguous_classes), np.concatenate(self.ambiguous_values),
                                  ptr, positives.values, self.slots, self.ties)
        return positives


def _placement_pass(scorer, targets: Targets, ptr: np.ndarray, items: np.ndarray, guesses: np.ndarray | None, exact: bool,
                    ranks: np.ndarray | None = None, predictions: np.ndarray | None = None) -> _Placement:
    """One BLAS pass over class-major blocks: the positives' scores, the negatives placed
    among the positives' ``guesses`` (none: collect the positives only) and, given
    ``ranks`` and ``predictions`` (single-label), each item's true-class rank and top class.

    With inexact guesses, the first block measures how far they are from its own scores;
    ``eps`` is eight times that (or a few float32 roundings), negatives within ``eps`` of a
    guess are kept aside and placed exactly at the end (:meth:`_Placement.settle`), which
    also checks that no positive was further off than ``eps / 2``.
    """
    n, n_classes = scorer.n_items, scorer.n_classes
    n_pairs = int(ptr[-1])
    count = guesses is not None
    sorted_guesses = None
    placed = _Placement(np.zeros(n_pairs), np.zeros(n_pairs + n_classes, np.int64), np.zeros(n_pairs, np.int64),
                        0.0, [], [], counted=count)
    eps = 0.0 if exact or not count else None
    seen = np.zeros(n_classes, np.int64)
    n_ambiguous = np.zeros(n_classes, np.int64)
    empty = np.zeros((0, 0), bool)
    nothing = _SortedPositives.build(np.zeros(n_classes + 1, np.int64), np.zeros(0))  # collecting only

    no_ranks = np.zeros(0, np.int32)

    def place(scores_t, start, stop, count, seen, ranked=False):
        mask_t = np.ascontiguousarray(targets.mask[start:stop].T) if targets.masked else empty
        g = sorted_guesses if count else nothing
        block_ranks = (targets.labels[start:stop], ranks[start:stop], predictions[start:stop]) if ranked \
            else (no_ranks, no_ranks, no_ranks)
        kernels.place_among_positives(
            scores_t, start, items, mask_t, count, ptr, g.values, g.grid_ptr, g.cells, g.up_to,
            g.grid_low, g.grid_scale, g.grid_size, placed.eps, seen, placed.exact, placed.slots, placed.ties,
            n_ambiguous, *block_ranks, _threads(),
        )

    for start, stop in _item_blocks(n, n_classes):
        scores_t = scorer.block_t(start, stop)
        if eps is None:  # first block: how far are the guesses from BLAS's values?
            before = seen.copy()
            place(scores_t, start, stop, False, seen)
            filled = np.arange(n_pairs) - np.repeat(ptr[:-1], np.diff(ptr)) < np.repeat(seen, np.diff(ptr))
            gap = np.max(np.abs(placed.exact[filled] - guesses[filled]), initial=0.0)
            scale = np.max(np.abs(guesses), initial=0.0)
            eps = max(8 * gap, 4 * 2.0**-24 * scale, np.finfo(np.float64).tiny)
            placed.eps = eps
            seen[:] = before
        if sorted_guesses is None and count:
            sorted_guesses = _SortedPositives.build(ptr, guesses, eps)
        place(scores_t, start, stop, placed.counted, seen, ranked=ranks is not None)
        if placed.eps > 0 and placed.counted:
            _keep_ambiguous(placed, scores_t, n_ambiguous)
    return placed


def _keep_ambiguous(placed: _Placement, scores_t: np.ndarray, n_ambiguous: np.ndarray) -> None:
    """Copy out the ambiguous negatives the kernel moved to the front of each class's row;
    past ``MAX_AMBIGUOUS`` of them the pass stops counting (a second pass is cheaper)."""
    placed.n_ambiguous += int(n_ambiguous.sum())
    if placed.n_ambiguous > MAX_AMBIGUOUS:
        placed.counted = False
        placed.ambiguous_classes, placed.ambiguous_values = [], []
        return
    classes = np.flatnonzero(n_ambiguous)
    if classes.size:
        placed.ambiguous_values.append(np.concatenate([scores_t[c, : n_ambiguous[c]] for c in classes]))
        placed.ambiguous_classes.append(np.repeat(classes, n_ambiguous[classes]))


@_threads_by_size
def auc_ap_ranks(scorer, targets: Targets) -> dict[str, np.ndarray]:
    """Per-class ROC-AUC and average precision, and single-label ranks, in one BLAS pass.

    Each class's negatives are placed among its sorted positive scores, which gives both
    metrics exactly (ties as :mod:`analyses.kernels` says) without sorting all n scores of
    a class. The positives' scores are known before the pass when the scorer can give
    them (``pair_scores``): exactly (in-memory scores) or to within BLAS's rounding
    (cosines), in which case the few negatives that fall that close to a positive are
    placed after the pass against the exact values. A scorer that cannot (centroids), or
    guesses further off than its first block showed, costs a second pass.

    Returns
    -------
    dict
        ``auc``, ``ap`` (C,) float64, NaN where a class has no positive or no negative
        (labelled) item; single-label also ``ranks`` (n,) int32 (0 = top) and
        ``predictions`` (n,) int32.
    """
    n, n_classes = scorer.n_items, scorer.n_classes
    ptr, items = _positive_pairs(targets)
    ranks = predictions = None
    if not targets.multilabel:
        ranks, predictions = np.empty(n, np.int32), np.empty(n, np.int32)
    guesses, exact = (None, True)
    if hasattr(scorer, "pair_scores"):
        guesses, exact = scorer.pair_scores(items, np.repeat(np.arange(n_classes), np.diff(ptr)))
    placed = _placement_pass(scorer, targets, ptr, items, guesses, exact, ranks, predictions)
    positives = placed.settle(ptr, guesses) if guesses is not None else None
    if positives is None:  # the exact positives are known now: place the negatives again
        placed = _placement_pass(scorer, targets, ptr, items, placed.exact, True)
        positives = placed.settle(ptr, placed.exact)
    auc, ap = np.empty(n_classes), np.empty(n_classes)
    n_negative = targets.observed() - np.diff(ptr)
    kernels.auc_ap_from_negatives(ptr, positives.values, placed.slots, placed.ties, n_negative, auc, ap)
    out = {"auc": auc, "ap": ap}
    if ranks is not None:
        out.update(ranks=ranks, predictions=predictions)
    return out


def bootstrap_weights(n_items: int, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, n_items) float32: how often each item is drawn in each resample."""
    rng = np.random.default_rng(seed)
    weights = np.empty((resamples, n_items), np.float32)
    for r in range(resamples):
        weights[r] = np.bincount(rng.integers(0, n_items, n_items), minlength=n_items)
    return weights


@_threads_by_size
def class_auc_ap(scorer, targets: Targets, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-class ROC-AUC and average precision under item weights, class block by class block.

    Each class's scores over all items are sorted once and weighed for every resample.

    Parameters
    ----------
    scorer : scorer
        Source of score blocks.
    targets : Targets
        The items' classes.
    weights : np.ndarray, optional
        (resamples, n_items) item weights (bootstrap counts); all ones if omitted.

    Returns
    -------
    auc, ap : np.ndarray
        (resamples, n_classes) float64; NaN where a class has no positive or no negative.
    """
    n, n_classes = scorer.n_items, scorer.n_classes
    if weights is None:
        weights = np.ones((1, n), np.float32)
    auc = np.empty((weights.shape[0], n_classes))
    ap = np.empty_like(auc)
    width = int(np.clip(COLUMN_BLOCK_BYTES // (4 * max(n, 1)), 1, n_classes))
    buffer = np.empty((width, n), np.float32)
    for first in range(0, n_classes, width):
        last = min(n_classes, first + width)
        scores_t = buffer[: last - first]
        for start, stop in _row_blocks(n, last - first):
            scores_t[:, start:stop] = scorer.block(start, stop, first, last).T
        kernels.class_auc_ap(
            scores_t, first, targets.labels, targets.label_matrix, targets.multilabel,
            weights, auc[:, first:last], ap[:, first:last], targets.mask,
        )
    return auc, ap


def per_class_f1(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) F1 of each class (0 where it has neither hits nor misses)."""
    tp = np.bincount(labels[labels == predictions], minlength=n_classes).astype(np.float64)
    fp = np.bincount(predictions, minlength=n_classes) - tp
    fn = np.bincount(labels, minlength=n_classes) - tp
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)


def _macro(per_class: np.ndarray) -> np.ndarray:
    """Row means over the finite entries (classes with a defined value); NaN if none."""
    finite = np.isfinite(per_class)
    count = finite.sum(axis=1)
    total = np.where(finite, per_class, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.full(len(count), np.nan), where=count > 0)


def _number_or_none(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def require_two_classes(n_classes: int) -> None:
    """Refuse classification (and top-2 margins) with fewer than two classes."""
    if n_classes < 2:  # every item would be "right": a number that says nothing
        raise InputError(f"classification needs two classes or more, not {n_classes} "
                         f"(captioned clips without labels are for retrieval)")


def per_class_table(targets: Targets, class_names: list[str], auc: np.ndarray, ap: np.ndarray,
                    f1: np.ndarray | None = None) -> dict:
    """``per_class`` of the zero-shot result: name -> ``f1`` (single-label), ``roc_auc``,
    ``pr_auc``, ``support`` and, with a label mask, ``labelled`` (the class's labelled items)."""
    support = targets.support()
    labelled = targets.observed() if targets.masked else None
    table = {}
    for c, name in enumerate(class_names):
        row = {} if f1 is None else {"f1": float(f1[c])}
        row.update(roc_auc=_number_or_none(auc[c]), pr_auc=_number_or_none(ap[c]), support=int(support[c]))
        if labelled is not None:
            row["labelled"] = int(labelled[c])
        table[name] = row
    return table


@_threads_by_size
def classification_metrics(scorer, targets: Targets, class_names: list[str], bootstrap: int = 0, seed: int = 0) -> dict:
    """Zero-shot style metrics of a scorer against the items' classes.

    Parameters
    ----------
    scorer : scorer
        Source of (items, classes) score blocks.
    targets : Targets
        The items' classes.
    class_names : list of str
        Names for ``per_class``.
    bootstrap : int
        Resamples of the items for 95% percentile intervals (0: none).
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        Single-label: ``top1``..``top5``, ``f1_weighted``, ``roc_auc_macro``,
        ``pr_auc_macro``, ``per_class`` (name -> f1, roc_auc, pr_auc, support),
        ``n_items``, ``n_classes``; multi-label: the AUC and AP keys only. Macro means
        skip classes whose AUC is undefined (no positive or no negative item); those
        show ``None``. With a label mask (``targets.mask``) each class is scored over
        its labelled items only, and ``per_class`` adds ``labelled`` (their count). With ``bootstrap``, ``ci95`` maps each key to ``[lo, hi]``.
    """
    n, n_classes = scorer.n_items, scorer.n_classes
    if n == 0:
        raise InputError("no items to score")
    require_two_classes(n_classes)
    if targets.n_items != n or targets.n_classes != n_classes:
        raise InputError(f"scores are {n} x {n_classes} but targets {targets.n_items} x {targets.n_classes}")
    if targets.support().sum() <= MAX_COUNTED_POSITIVES:
        ranked = auc_ap_ranks(scorer, targets)
        auc, ap = ranked["auc"], ranked["ap"]
    else:  # dense multi-label: counts per positive would outgrow sorting whole columns
        ranked = rank_pass(scorer, targets) if not targets.multilabel else {}
        auc, ap = (m[0] for m in class_auc_ap(scorer, targets))
    weights = np.ones((1, n), np.float32)
    if bootstrap > 0:
        weights = np.concatenate([weights, bootstrap_weights(n, bootstrap, seed)])
        boot_auc, boot_ap = class_auc_ap(scorer, targets, weights[1:])
        auc, ap = np.vstack([auc, boot_auc]), np.vstack([ap, boot_ap])
    else:
        auc, ap = auc[None], ap[None]
    series = {"roc_auc_macro": _macro(auc), "pr_auc_macro": _macro(ap)}
    f1 = None
    if not targets.multilabel:
        topk = np.empty((weights.shape[0], TOP_K))
        f1w = np.empty(weights.shape[0])
        kernels.weighted_rank_metrics(
            ranked["ranks"], targets.labels, ranked["predictions"], n_classes, weights, TOP_K, topk, f1w
        )
        for k in range(TOP_K):
            series[f"top{k + 1}"] = topk[:, k]
        series["f1_weighted"] = f1w
        f1 = per_class_f1(targets.labels, ranked["predictions"], n_classes)
    per_class = per_class_table(targets, class_names, auc[0], ap[0], f1)
    order = [f"top{k + 1}" for k in range(TOP_K)] + ["f1_weighted", "roc_auc_macro", "pr_auc_macro"]
    result = {key: _number_or_none(series[key][0]) for key in order if key in series}
    result.update(per_class=per_class, n_items=int(n), n_classes=int(n_classes))
    if bootstrap > 0:
        result["bootstrap"] = int(bootstrap)
        result["ci95"] = {}
        for key in order:
            if key in series:
                draws = series[key][1:]
                draws = draws[np.isfinite(draws)]
                result["ci95"][key] = (
                    [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))] if draws.size else None
                )
    return result


def histogram_edges(bins: int) -> np.ndarray:
    """``bins + 1`` equal-width edges over the cosine range [-1, 1]."""
    if bins < 1:
        raise InputError(f"need at least one bin, got {bins}")
    return np.linspace(-1.0, 1.0, bins + 1)


@_threads_by_size
def similarity_histograms(scorer, targets: Targets, bins: int = 100) -> dict:
    """Positive vs negative item-class similarities: histograms and overlap figures.

    A pair (item, class) is positive when the item carries the class; with a label
    mask, unlabelled pairs are neither positive nor negative. Counts use
    ``bins`` equal bins over [-1, 1] (scores rounded past the range are clipped into
    it); ``auc`` is the exact probability that a positive pair outscores a negative one
    (ties count one half); ``bhattacharyya`` is the coefficient sum(sqrt(p * q)) of the
    two normalised histograms (1: identical, 0: disjoint).
    """
    edges = histogram_edges(bins)
    pos_counts = np.zeros(bins, np.int64)
    neg_counts = np.zeros(bins, np.int64)
    sums = np.zeros(4)
    positives = []
    n = scorer.n_items
    for start, stop in _row_blocks(n, scorer.n_classes):
        scores = scorer.block(start, stop)
        labels, label_matrix, multilabel = targets.rows(start, stop)
        kernels.positive_negative_histograms(scores, labels, label_matrix, multilabel, edges, pos_counts, neg_counts, sums,
                                             targets.mask_rows(start, stop))
        positives.append(scores[label_matrix] if multilabel else scores[np.arange(stop - start), labels])
    positives_sorted = np.sort(np.concatenate(positives)) if positives else np.zeros(0, np.float32)
    n_pos, n_neg = int(pos_counts.sum()), int(neg_counts.sum())
    twice_u = 0
    if n_pos and n_neg:
        # Second pass: the same blocks again, each negative against every positive.
        table, low, per_unit = bucket_table(positives_sorted, max_buckets=2**16)  # table stays in L2
        for start, stop in _row_blocks(n, scorer.n_classes):
            labels, label_matrix, multilabel = targets.rows(start, stop)
            twice_u += int(kernels.negatives_below_positives(
                scorer.block(start, stop), labels, label_matrix, multilabel, positives_sorted, table, low, per_unit,
                targets.mask_rows(start, stop),
            ))
    p = pos_counts / max(n_pos, 1)
    q = neg_counts / max(n_neg, 1)

    def moments(total, squares, count):
        if count == 0:
            return None, None
        mean = total / count
        return float(mean), float(np.sqrt(max(squares / count - mean * mean, 0.0)))

    pos_mean, pos_std = moments(sums[0], sums[1], n_pos)
    neg_mean, neg_std = moments(sums[2], sums[3], n_neg)
    return {
        "bin_edges": edges.tolist(),
        "positive_counts": pos_counts.tolist(),
        "negative_counts": neg_counts.tolist(),
        "n_positive": n_pos,
        "n_negative": n_neg,
        "positive_mean": pos_mean,
        "positive_std": pos_std,
        "negative_mean": neg_mean,
        "negative_std": neg_std,
        "auc": twice_u / (2 * n_pos * n_neg) if n_pos and n_neg else None,
        "bhattacharyya": float(np.sum(np.sqrt(p * q))) if n_pos and n_neg else None,
    }


def _quartiles(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]  # a store with one class has no runner-up
    if values.size == 0:
        return {"median": None, "q1": None, "q3": None, "n": 0}
    q1, median, q3 = np.percentile(values.astype(np.float64), [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "n": int(values.size)}


def margin_summary(margins: np.ndarray, correct: np.ndarray, judged: np.ndarray | None = None) -> dict:
    """Median and quartiles of top-2 margins, overall and split by correct/wrong top-1.

    ``margins`` and ``is_correct`` come back per item (for plots); undefined margins
    (one class only) are ``None`` there and left out of the quartiles. ``judged``
    (partial labels) marks the items whose top class is labelled; the others count in
    neither split and their ``is_correct`` is ``None``.
    """
    overall = _quartiles(margins)
    if judged is None:
        judged = np.ones_like(correct, dtype=bool)
    return {
        "median": overall["median"],
        "q1": overall["q1"],
        "q3": overall["q3"],
        "n_items": overall["n"],
        "correct": _quartiles(margins[correct & judged]),
        "wrong": _quartiles(margins[~correct & judged]),
        "margins": [m if np.isfinite(m) else None for m in margins.astype(np.float64).tolist()],
        "is_correct": [bool(c) if j else None for c, j in zip(correct.tolist(), judged.tolist())],
    }
