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
    j = table[max(b - 1, 0)]
    last = table[min(b + 2, n_buckets)]
    if last - j > 16:  # crowded bucket: bisect it
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
def count_against_positives(scores_t, first_class, ptr, positives_sorted, table_ptr, tables, lows, per_unit, slots, ties):
    """Place one block's scores among each class's sorted positive scores.

    ``scores_t`` is (classes in block, items): row ``k`` holds class ``first_class + k``.
    Class ``c``'s positives are ``positives_sorted[ptr[c]:ptr[c + 1]]`` (ascending), with
    its bucket table ``tables[table_ptr[c]:table_ptr[c + 1]]``, ``lows[c]`` and
    ``per_unit[c]`` (see :func:`_count_below`). A score equal to a positive adds to
    ``ties[ptr[c] + j]``, ``j`` the first index of that value; any other score adds to
    ``slots[ptr[c] + c + j]``, ``j`` the number of positives below it. Together they
    give every class's ROC-AUC and average precision (:func:`auc_ap_from_counts`)
    without sorting all n scores of each class. Classes own disjoint parts of ``slots``
    and ``ties``, so threads split the classes.
    """
    nc, n = scores_t.shape
    for k in prange(nc):
        c = first_class + k
        row = positives_sorted[ptr[c]:ptr[c + 1]]
        table = tables[table_ptr[c]:table_ptr[c + 1]]
        n_pos = row.shape[0]
        for i in range(n):
            v = scores_t[k, i]
            j = _count_below(row, v, table, lows[c], per_unit[c])
            if j < n_pos and row[j] == v:
                ties[ptr[c] + j] += 1
            else:
                slots[ptr[c] + c + j] += 1


@njit(cache=True, parallel=True)
def auc_ap_from_counts(ptr, positives_sorted, slots, ties, n_items, auc, ap):
    """ROC-AUC and average precision per class from :func:`count_against_positives`.

    NaN where a class has no positive or no negative item.
    """
    n_classes = ptr.shape[0] - 1
    for c in prange(n_classes):
        first = ptr[c]
        n_pos = ptr[c + 1] - first
        n_neg = n_items - n_pos
        if n_pos == 0 or n_neg == 0:
            auc[c] = np.nan
            ap[c] = np.nan
            continue
        below = 0  # scores (positive or not) strictly below the current group
        u = 0.0  # 2 x Mann-Whitney U
        precision_sum = 0.0
        j = 0
        while j < n_pos:
            v = positives_sorted[first + j]
            end = j + 1
            while end < n_pos and positives_sorted[first + end] == v:
                end += 1
            size = end - j
            below += slots[first + c + j]
            equal = ties[first + j]
            u += size * (2.0 * (below - j) + (equal - size))
            # threshold v: every score >= v is predicted positive
            precision_sum += size * (n_pos - j) / (n_items - below)
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
