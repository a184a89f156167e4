"""Numba kernels around the BLAS similarity blocks.

Every matrix product happens in numpy (BLAS); these kernels do the reductions that
follow it on one block of scores at a time, so memory stays bounded by the block size.

Tie rules, fixed here once for every analysis:

- *Ranking* (top-k, predictions, margins) follows scikit-learn's ``top_k_accuracy_score``:
  classes are ordered by score, and among equal scores the higher class index comes first.
  The rank of class ``t`` in row ``s`` is ``#{j: s[j] > s[t]} + #{j > t: s[j] == s[t]}``;
  the prediction is the class of rank 0.
- *ROC-AUC* counts a tied positive/negative pair as one half (midranks), which is what
  ``roc_auc_score``'s trapezoids give.
- *Average precision* steps over distinct score thresholds, as ``average_precision_score``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _set_numba_cache_dir() -> None:
    # cache=True writes next to this file; when the install is read-only, numba needs
    # another place. NUMBA_CACHE_DIR is read when numba is first imported, so a numba
    # imported earlier (by umap, say) gets the setting directly.
    if "NUMBA_CACHE_DIR" in os.environ or os.access(Path(__file__).parent, os.W_OK):
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedstore" / "numba"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # numba then compiles without caching
    os.environ["NUMBA_CACHE_DIR"] = str(cache)
    if "numba" in sys.modules:
        sys.modules["numba"].config.CACHE_DIR = str(cache)


_set_numba_cache_dir()

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def true_class_ranks(scores, labels, ranks):
    """Rank of each row's true class (0 = top) under the tie rule above; fills ``ranks``."""
    n, c = scores.shape
    for i in prange(n):
        t = labels[i]
        st = scores[i, t]
        r = 0
        for j in range(c):
            s = scores[i, j]
            if s > st or (s == st and j > t):
                r += 1
        ranks[i] = r


@njit(cache=True, parallel=True)
def top2(scores, predictions, margins):
    """Top class of each row (tie rule above) and the gap between its two best scores."""
    n, c = scores.shape
    for i in prange(n):
        best = 0
        second = -1
        for j in range(1, c):
            s = scores[i, j]
            if s >= scores[i, best]:
                second = best
                best = j
            elif second < 0 or s >= scores[i, second]:
                second = j
        predictions[i] = best
        if second < 0:
            margins[i] = np.nan
        else:
            margins[i] = scores[i, best] - scores[i, second]


@njit(cache=True, inline="always")
def _is_positive(i, j, labels, label_matrix, multilabel):
    if multilabel:
        return label_matrix[i, j]
    return labels[i] == j


@njit(cache=True, inline="always")
def _is_observed(i, j, mask):
    # an empty (0, 0) mask: every (item, class) pair is labelled
    return mask.shape[0] == 0 or mask[i, j]


@njit(cache=True, inline="always")
def _bin_index(x, edges, bins):
    # numpy.histogram's uniform-bin arithmetic, including its one-ulp corrections,
    # so counts agree with np.histogram on the same float64 values.
    lo = edges[0]
    k = int(((x - lo) / (edges[bins] - lo)) * bins)
    if k == bins:
        k -= 1
    if x < edges[k]:
        k -= 1
    if k != bins - 1 and x >= edges[k + 1]:
        k += 1
    return k


@njit(cache=True, parallel=True)
def positive_negative_histograms(scores, labels, label_matrix, multilabel, edges, pos_counts, neg_counts, sums, mask):
    """Add one block's positive and negative scores to the running histograms.

    Pairs that ``mask`` (the block's rows, or (0, 0): all labelled) marks unlabelled
    are left out.

    Scores are clipped to the edge range first (cosines can round past 1). Each chunk of
    rows counts into its own private bins, merged at the end. ``sums`` receives
    (sum of positives, sum of squares, sum of negatives, sum of squares) in float64.
    """
    n, c = scores.shape
    bins = edges.shape[0] - 1
    lo = edges[0]
    hi = edges[bins]
    chunks = max(1, min(64, n // 256))
    pos = np.zeros((chunks, bins), np.int64)
    neg = np.zeros((chunks, bins), np.int64)
    part = np.zeros((chunks, 4), np.float64)
    for ch in prange(chunks):
        for i in range(ch * n // chunks, (ch + 1) * n // chunks):
            for j in range(c):
                if not _is_observed(i, j, mask):
                    continue
                x = min(max(np.float64(scores[i, j]), lo), hi)
                k = _bin_index(x, edges, bins)
                if _is_positive(i, j, labels, label_matrix, multilabel):
                    pos[ch, k] += 1
                    part[ch, 0] += x
                    part[ch, 1] += x * x
                else:
                    neg[ch, k] += 1
                    part[ch, 2] += x
                    part[ch, 3] += x * x
    for ch in range(chunks):
        for k in range(bins):
            pos_counts[k] += pos[ch, k]
            neg_counts[k] += neg[ch, k]
        for q in range(4):
            sums[q] += part[ch, q]


@njit(cache=True, parallel=True)
def negatives_below_positives(scores, labels, label_matrix, multilabel, positives_sorted, table, low, per_unit, mask):
    """Twice the Mann-Whitney count of one block's negatives against all positives.

    For every negative score ``v``: ``2 * #{positives > v} + #{positives == v}``, summed
    (an integer, so the overlap AUC stays exact at any scale). ``table``, ``low`` and
    ``per_unit`` index the positives as in :func:`_count_below`. Unlabelled pairs
    (``mask``, as in :func:`positive_negative_histograms`) are no negatives.
    """
    n, c = scores.shape
    n_pos = positives_sorted.shape[0]
    chunks = max(1, min(64, n // 64))
    part = np.zeros(chunks, np.int64)
    for ch in prange(chunks):
        acc = 0
        for i in range(ch * n // chunks, (ch + 1) * n // chunks):
            for j in range(c):
                if _is_positive(i, j, labels, label_matrix, multilabel) or not _is_observed(i, j, mask):
                    continue
                v = scores[i, j]
                left = _count_below(positives_sorted, v, table, low, per_unit)
                right = left
                if left < n_pos and positives_sorted[left] == v:  # ties are rare: search again only then
                    right = np.searchsorted(positives_sorted, v, side="right")
                acc += 2 * (n_pos - right) + (right - left)
        part[ch] = acc
    return part.sum()


@njit(cache=True, parallel=True)
def class_auc_ap(scores_t, first_class, labels, label_matrix, multilabel, weights, auc, ap, mask):
    """ROC-AUC and average precision of each class in a block, under item weights.

    ``scores_t`` is (classes in block, items): row ``k`` scores every item against class
    ``first_class + k``. ``weights`` is (resamples, items): 1 everywhere for the plain
    metric, bootstrap counts otherwise; each class is sorted once for all resamples.
    Fills ``auc`` and ``ap`` (resamples, classes in block); NaN where a class has no
    positive or no negative weight. Items whose pair with a class ``mask`` (n, C) marks
    unlabelled weigh nothing for that class; a (0, 0) mask labels every pair.
    """
    nc, n = scores_t.shape
    n_res = weights.shape[0]
    for k in prange(nc):
        cls = first_class + k
        s = scores_t[k]
        order = np.argsort(s)
        is_pos = np.empty(n, np.bool_)
        seen = np.empty(n, np.float64)  # 1 labelled, 0 left out
        for i in range(n):
            is_pos[i] = _is_positive(i, cls, labels, label_matrix, multilabel)
            seen[i] = 1.0 if _is_observed(i, cls, mask) else 0.0
        for r in range(n_res):
            w = weights[r] * seen
            total_pos = 0.0
            total_neg = 0.0
            for i in range(n):
                if is_pos[i]:
                    total_pos += w[i]
                else:
                    total_neg += w[i]
            if total_pos == 0.0 or total_neg == 0.0:
                auc[r, k] = np.nan
                ap[r, k] = np.nan
                continue
            # One walk from the top score down, one tie group at a time.
            u = 0.0  # 2 x Mann-Whitney U: pairs ranked right count 2, ties 1
            tp = 0.0
            fp = 0.0
            precision_sum = 0.0
            end = n
            while end > 0:
                start = end - 1
                v = s[order[start]]
                while start > 0 and s[order[start - 1]] == v:
                    start -= 1
                gp = 0.0
                gn = 0.0
                for q in range(start, end):
                    i = order[q]
                    if is_pos[i]:
                        gp += w[i]
                    else:
                        gn += w[i]
                # negatives below this group = total_neg - fp - gn
                u += gp * (2.0 * (total_neg - fp - gn) + gn)
                tp += gp
                fp += gn
                if gp > 0.0:
                    precision_sum += gp * (tp / (tp + fp))
                end = start
            auc[r, k] = u / (2.0 * total_pos * total_neg)
            ap[r, k] = precision_sum / total_pos


@njit(cache=True, parallel=True)
def weighted_rank_metrics(ranks, labels, predictions, n_classes, weights, max_k, topk, f1_weighted):
    """Top-1..max_k accuracy and support-weighted F1 under item weights, per resample.

    Fills ``topk`` (resamples, max_k) and ``f1_weighted`` (resamples,).
    """
    n = ranks.shape[0]
    n_res = weights.shape[0]
    for r in prange(n_res):
        w = weights[r]
        hits = np.zeros(max_k + 1, np.float64)
        tp = np.zeros(n_classes, np.float64)
        fp = np.zeros(n_classes, np.float64)
        fn = np.zeros(n_classes, np.float64)
        total = 0.0
        for i in range(n):
            wi = w[i]
            total += wi
            if ranks[i] < max_k:
                hits[ranks[i]] += wi
            t = labels[i]
            p = predictions[i]
            if p == t:
                tp[t] += wi
            else:
                fp[p] += wi
                fn[t] += wi
        acc = 0.0
        for k in range(max_k):
            acc += hits[k]
            topk[r, k] = acc / total
        f1 = 0.0
        for c in range(n_classes):
            support = tp[c] + fn[c]
            denominator = 2.0 * tp[c] + fp[c] + fn[c]
            if support > 0.0:
                f1 += support * (2.0 * tp[c] / denominator)
        f1_weighted[r] = f1 / total


@njit(cache=True, parallel=True)
def class_sums(vectors, labels, label_matrix, multilabel, n_classes):
    """Per-class sums of ``vectors`` rows and item counts, in float64.

    Chunks of rows add into private (classes, d) sums, merged at the end.
    """
    n, d = vectors.shape
    chunks = max(1, min(8, n // 1024))
    part = np.zeros((chunks, n_classes, d), np.float64)
    counts = np.zeros((chunks, n_classes), np.int64)
    for ch in prange(chunks):
        for i in range(ch * n // chunks, (ch + 1) * n // chunks):
            if multilabel:
                for c in range(n_classes):
                    if label_matrix[i, c]:
                        counts[ch, c] += 1
                        for q in range(d):
                            part[ch, c, q] += vectors[i, q]
            else:
                c = labels[i]
                counts[ch, c] += 1
                for q in range(d):
                    part[ch, c, q] += vectors[i, q]
    return part.sum(axis=0), counts.sum(axis=0)


@njit(cache=True, parallel=True)
def centroid_cosines(dots, first_row, first_class, labels, label_matrix, multilabel, sq_norms, item_norms, leave_one_out, out):
    """Cosines of normalised items against class centroids, from raw dot products.

    ``dots[i, j]`` is unit item ``first_row + i`` dotted with the sum ``S`` of the member
    vectors of class ``c = first_class + j`` (unit or raw rows), whose squared norm is
    ``sq_norms[c]``; ``item_norms`` holds the norm ``r`` of each item's own member vector
    (1 for unit rows, 0 for an all-zero vector). With ``leave_one_out`` an item is scored
    against its own classes' sums minus itself (a centroid it did not shape). A zero
    centroid scores 0.
    """
    n, c = dots.shape
    for i in prange(n):
        row = first_row + i
        for j in range(c):
            cls = first_class + j
            d = np.float64(dots[i, j])
            norm2 = sq_norms[cls]
            if leave_one_out and _is_positive(row, cls, labels, label_matrix, multilabel):
                # the member vector is r*u: u.(S - r u) = u.S - r and |S - r u|^2 = |S|^2 - 2 r u.S + r^2
                r = item_norms[row]
                norm2 = max(norm2 - 2.0 * r * d + r * r, 0.0)
                d -= r
            out[i, j] = d / np.sqrt(norm2) if norm2 > 0.0 else 0.0


@njit(cache=True, inline="always")
def _count_below(sorted_values, v, table, low, per_unit):
    """How many of ``sorted_values`` lie strictly below ``v``.

    ``table[k]`` counts the values below ``low + k / per_unit`` (``low`` the smallest
    value): it leaves a window of a few values to scan, where a binary search would
    mispredict a branch at every step.
    """
    n = sorted_values.shape[0]
    if n == 0 or v < low:
        return 0
    if v > sorted_values[n - 1]:
        return n
    n_buckets = table.shape[0] - 1
    b = min(int((np.float64(v) - low) * per_unit), n_buckets - 1)
    # one bucket of slack either side absorbs rounding in b
    return _first_not_below(sorted_values, v, table[max(b - 1, 0)], table[min(b + 2, n_buckets)])


@njit(cache=True, inline="always")
def _first_not_below(sorted_values, v, j, last):
    """The first index in ``j..last`` whose value is not below ``v`` (``last`` if none):
    a scan of a short window, a bisection of a crowded one."""
    if last - j > 16:
        while j < last:
            mid = (j + last) >> 1
            if sorted_values[mid] < v:
                j = mid + 1
            else:
                last = mid
        return j
    while j < last and sorted_values[j] < v:
        j += 1
    return j


@njit(cache=True, parallel=True)
def pair_dots(a, b, rows, cols, out):
    """``out[k] = a[rows[k]] . b[cols[k]]``, accumulated in float64."""
    d = a.shape[1]
    for k in prange(rows.shape[0]):
        x = a[rows[k]]
        y = b[cols[k]]
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        q = 0
        while q + 4 <= d:  # four running sums: no chain of dependent additions
            s0 += np.float64(x[q]) * y[q]
            s1 += np.float64(x[q + 1]) * y[q + 1]
            s2 += np.float64(x[q + 2]) * y[q + 2]
            s3 += np.float64(x[q + 3]) * y[q + 3]
            q += 4
        while q < d:
            s0 += np.float64(x[q]) * y[q]
            q += 1
        out[k] = (s0 + s1) + (s2 + s3)


@njit(cache=True, parallel=True)
def place_among_positives(scores_t, first_item, positive_items, mask_t, count, ptr, positives_sorted,
                          grid_ptr, cells, up_to, grid_low, grid_scale, grid_size, eps,
                          seen, exact_positives, slots, ties, n_ambiguous, labels, ranks, predictions, threads):
    """Place one block's negative scores among each class's sorted positive scores, and
    rank each item's true class (single-label), in one read of the block.

    ``scores_t`` is (classes, items) for items ``first_item`` onwards. Class ``c``'s
    positive items are ``positive_items[ptr[c]:ptr[c + 1]]`` (ascending); the others are
    its negatives, but for the pairs that ``mask_t`` (class-major, or (0, 0): all
    labelled) marks unlabelled, which are skipped.

    Each positive's score is written to ``exact_positives[ptr[c] + seen[c]]`` (class by
    class, items in order) and ``seen[c]`` moves on. With ``count``, each negative ``v``
    of class ``c`` is placed among ``positives_sorted[ptr[c]:ptr[c + 1]]`` (ascending):
    ``j = #{positives < v - eps}``; if no positive lies within ``eps`` of ``v``,
    ``slots[ptr[c] + c + j]`` counts it. Otherwise, with ``eps == 0`` (the positives are
    the block's own values) it ties the group starting at ``j`` and ``ties[ptr[c] + j]``
    counts it; with ``eps > 0`` (positives known to within ``eps``) it is ambiguous: its
    value is moved to the front of its class's row of ``scores_t`` (overwriting scores
    already read) and ``n_ambiguous[c]`` says how many there are.

    With ``ranks`` (the block's items; empty: not wanted), ``labels`` holds the block's
    items' classes and each item's true-class rank and top class follow the tie rule above
    (:func:`true_class_ranks`, :func:`top2`) into ``ranks`` and ``predictions``.

    Threads split the classes (into ``threads`` contiguous runs with ranks: classes own
    disjoint parts of every placement output; ranks are counted per run and added up after).
    """
    n_classes, m = scores_t.shape
    with_ranks = ranks.shape[0] > 0
    runs = max(1, min(threads, n_classes)) if with_ranks else n_classes
    w = m if with_ranks else 0
    run_rank = np.zeros((runs, w), np.int32)
    run_best = np.empty((runs, w), np.float32)
    run_top = np.zeros((runs, w), np.int32)
    own = np.empty(w, np.float32)
    for i in range(w):
        own[i] = scores_t[labels[i], i]
    for t in prange(runs):
        first_class = t * n_classes // runs
        for i in range(w):
            run_best[t, i] = scores_t[first_class, i]
            run_top[t, i] = first_class
        for c in range(first_class, (t + 1) * n_classes // runs):
            if with_ranks:  # before the placement overwrites the row's front
                for i in range(w):  # no branches: the compiler vectorises this loop
                    s = scores_t[c, i]
                    run_rank[t, i] += (s > own[i]) | ((s == own[i]) & (c > labels[i]))
                    higher = s >= run_best[t, i]
                    run_best[t, i] = s if higher else run_best[t, i]
                    run_top[t, i] = c if higher else run_top[t, i]
            _place_class(c, scores_t, first_item, positive_items, mask_t, count, ptr, positives_sorted, grid_ptr,
                         cells, up_to, grid_low, grid_scale, grid_size, eps, seen, exact_positives, slots, ties,
                         n_ambiguous)
    for i in range(w):  # runs in class order, so ties still go to the higher class
        rank = 0
        top = run_top[0, i]
        best = run_best[0, i]
        for t in range(runs):
            rank += run_rank[t, i]
            if run_best[t, i] >= best:
                best = run_best[t, i]
                top = run_top[t, i]
        ranks[i] = rank
        predictions[i] = top


@njit(cache=True, inline="always")
def _place_class(c, scores_t, first_item, positive_items, mask_t, count, ptr, positives_sorted, grid_ptr, cells,
                 up_to, grid_low, grid_scale, grid_size, eps, seen, exact_positives, slots, ties, n_ambiguous):
    """The placement of :func:`place_among_positives` for class ``c``.

    The class's grid (:class:`analyses.metrics._SortedPositives`) finds ``j``: cell
    ``r = floor((v - grid_low[c]) * grid_scale[c]) + 1``, clamped to ``0..grid_size[c] + 1``,
    holds ``cells[r] >= 0``, the place of any score in it, when no positive lies near;
    otherwise ``-cells[r] - 1`` and ``up_to[r]`` bound the positives to search.
    """
    m = scores_t.shape[1]
    masked = mask_t.shape[0] > 0
    first = ptr[c]
    n_pos = ptr[c + 1] - first
    n_ambiguous[c] = 0
    if n_pos == 0:
        return
    row = positives_sorted[first:first + n_pos]
    cell = cells[grid_ptr[c]:grid_ptr[c + 1]]
    reach = up_to[grid_ptr[c]:grid_ptr[c + 1]]
    low = grid_low[c]
    scale = grid_scale[c]
    top = np.float64(grid_size[c]) + 1.0
    k = seen[c]
    next_positive = positive_items[first + k] - first_item if k < n_pos else m
    amb = 0
    places = np.empty(m if count else 0, np.int32)
    for i in range(places.shape[0]):  # no branches: the compiler vectorises the look-ups
        x = np.float64(scores_t[c, i])
        places[i] = cell[int(min(max((x - low) * scale + 1.0, 0.0), top))]
    for i in range(m):
        v = scores_t[c, i]
        if i == next_positive:
            exact_positives[first + k] = v
            k += 1
            next_positive = positive_items[first + k] - first_item if k < n_pos else m
            continue
        if not count or (masked and not mask_t[c, i]):
            continue
        j = places[i]
        if j >= 0:
            slots[first + c + j] += 1
            continue
        x = np.float64(v)
        r = int(min(max((x - low) * scale + 1.0, 0.0), top))
        j = _first_not_below(row, x - eps, -j - 1, reach[r])
        if j < n_pos and row[j] <= x + eps:
            if eps == 0.0:
                ties[first + j] += 1
            else:
                scores_t[c, amb] = v  # amb <= i: only scores already read are overwritten
                amb += 1
        else:
            slots[first + c + j] += 1
    seen[c] = k
    n_ambiguous[c] = amb


@njit(cache=True)
def place_exactly(classes, values, ptr, positives_sorted, slots, ties):
    """Place the negatives ``values`` (of ``classes``) among the exact sorted positives.

    Adds to ``slots`` and ``ties`` as :func:`place_among_positives` with ``eps == 0``.
    """
    for r in range(values.shape[0]):
        c = classes[r]
        first = ptr[c]
        row = positives_sorted[first:ptr[c + 1]]
        v = np.float64(values[r])
        j = np.searchsorted(row, v)
        if j < row.shape[0] and row[j] == v:
            ties[first + j] += 1
        else:
            slots[first + c + j] += 1


@njit(cache=True, parallel=True)
def auc_ap_from_negatives(ptr, positives_sorted, slots, ties, n_negative, auc, ap):
    """ROC-AUC and average precision per class from the negatives' placements.

    ``slots`` and ``ties`` as :func:`place_among_positives` leaves them, against the exact
    sorted positives; ``n_negative[c]`` is class ``c``'s number of negatives. NaN where a
    class has no positive or no negative.
    """
    n_classes = ptr.shape[0] - 1
    for c in prange(n_classes):
        first = ptr[c]
        n_pos = ptr[c + 1] - first
        n_neg = n_negative[c]
        if n_pos == 0 or n_neg == 0:
            auc[c] = np.nan
            ap[c] = np.nan
            continue
        below = 0  # negatives strictly below the current group
        u = 0.0  # 2 x Mann-Whitney U
        precision_sum = 0.0
        j = 0
        while j < n_pos:
            v = positives_sorted[first + j]
            end = j + 1
            while end < n_pos and positives_sorted[first + end] == v:
                end += 1
            size = end - j
            below += slots[first + c + j]  # a negative's slot is the start of the group above it
            equal = ties[first + j]
            u += size * (2.0 * below + equal)
            # threshold v: every score >= v is predicted positive
            precision_sum += size * (n_pos - j) / ((n_pos - j) + (n_neg - below))
            below += equal
            j = end
        auc[c] = u / (2.0 * n_pos * n_neg)
        ap[c] = precision_sum / n_pos


@njit(cache=True, parallel=True)
def knn_vote(similarities, first_row, labels, ks, n_classes, predictions):
    """Leave-one-out k-nearest-neighbour votes for one block of rows.

    ``similarities[i, j]`` is item ``first_row + i`` against item ``j``; the item itself is
    never its own neighbour. Neighbours rank by similarity, higher first, ties to the lower
    item index; each ``k`` of ``ks`` (ascending) takes the majority class of the first k
    neighbours, ties to the lower class index (scikit-learn's vote). Fills
    ``predictions[i, q]`` for ``k = ks[q]``.
    """
    n, m = similarities.shape
    k_max = ks[ks.shape[0] - 1]
    for i in prange(n):
        own = first_row + i
        best = np.full(k_max, -1, np.int64)
        found = 0
        # insertion into a short sorted list: k is small, so this beats a full sort
        for j in range(m):
            if j == own:
                continue
            s = similarities[i, j]
            if found == k_max and s <= similarities[i, best[k_max - 1]]:
                continue
            pos = min(found, k_max - 1)
            while pos > 0 and similarities[i, best[pos - 1]] < s:
                best[pos] = best[pos - 1]
                pos -= 1
            best[pos] = j
            if found < k_max:
                found += 1
        votes = np.zeros(n_classes, np.int64)
        q = 0
        for r in range(found):
            votes[labels[best[r]]] += 1
            while q < ks.shape[0] and ks[q] == r + 1:
                predictions[i, q] = _first_max(votes)
                q += 1
        while q < ks.shape[0]:  # fewer items than k: every other item votes
            predictions[i, q] = _first_max(votes)
            q += 1


@njit(cache=True, inline="always")
def _first_max(values):
    """Index of the largest value, the lowest index among equals."""
    top = 0
    for c in range(1, values.shape[0]):
        if values[c] > values[top]:
            top = c
    return top
