"""Fused passes over large score blocks, compiled with numba: one read of each block instead of one
torch pass per statistic. Rows run in parallel (numba's prange); each function states what it
computes. `tests/test_scans.py` checks `gram_block_stats` against numpy; `bundle_scan` is checked through
the bundling property tests, whose brute-force oracle the bfloat16 search must match.
"""

from __future__ import annotations

import numba
import numpy as np

NO_BITS = np.zeros((0, 0), dtype=np.uint16)


@numba.njit(parallel=True, cache=True)
def bundle_scan(num, sq, rows, product_bits, product_row, num_offset, sq_add, product_rel, num_err, sq_err,
                candidates, bundle, target, target_norm, tie, shortlist, counts):  # pragma: no cover - compiled
    """One greedy step for the targets `rows` of a chunk (see metrics/bundling.py for the algorithm).

    num, sq: (n, V) float32, row j holding w_j.e_t and ||b_j + e_t||^2 for every token t (num = -inf: not
    a candidate); num_offset[i] = w.b (exact) completes w.(b + e_t). When `product_bits` (bfloat16 bits, one
    row per distinct token; row product_row[i] is E.e_s for target row i's previous token s) has rows, row i
    first adds s:
    sq += 2 p + sq_add[i] - 2 product_rel |p| with p = E.e_s (the last term charges the product's output
    rounding to sq, so sq stays a lower bound). Then, with |num + num_offset - exact| <= num_err[i] and
    exact sq >= sq - sq_err[i]:

        upper_t = (num_t + num_offset + num_err) / sqrt(sq_t - sq_err)  >=  cos(b + e_t, w) ||w||,

    the reference token r maximises (num_t + num_offset) / sqrt(sq_t) (compared as x |x| / sq), its cosine
    is computed exactly in float64 from `candidates`, `bundle` and `target`, and every token with
    upper_t >= cut = (cos_r - tie) ||w|| (tested as upper_t^2 >= cut^2 where cut > 0) goes to
    shortlist[i] (counts[i] of them; more than the shortlist's width overflow). No token left out can be
    within `tie` of the best cosine. The test runs without branches into a byte per token (a vectorised pass: a
    branch on each token's sign costs more than the arithmetic), and only the 8-token words holding a listed
    token are read again.
    """
    vocab = num.shape[1]
    dim = candidates.shape[1]
    width = shortlist.shape[1]
    updating = product_bits.shape[0] > 0
    for i in numba.prange(rows.shape[0]):
        j = rows[i]
        num_row = num[j]
        sq_row = sq[j]
        if updating:
            bits = np.empty(vocab, dtype=np.uint32)
            for t in range(vocab):
                bits[t] = np.uint32(product_bits[product_row[i], t]) << np.uint32(16)
            p_row = bits.view(np.float32)
            for t in range(vocab):
                p = np.float64(p_row[t])
                sq_row[t] = np.float32(sq_row[t] + 2.0 * p + sq_add[i] - 2.0 * product_rel * abs(p))
        offset = np.float32(num_offset[i])
        reference = -1
        best_num = np.float32(0.0)
        best_sq = np.float32(1.0)
        for t in range(vocab):
            if num_row[t] != -np.inf:
                value = num_row[t] + offset
                size = max(sq_row[t], np.float32(1e-30))
                if reference < 0 or value * abs(value) * best_sq > best_num * abs(best_num) * size:
                    reference = t
                    best_num = value
                    best_sq = size
        counts[i] = 0
        if reference < 0:
            continue
        dot = 0.0
        norm_sq = 0.0
        for k in range(dim):
            v = bundle[j, k] + np.float64(candidates[reference, k])
            dot += target[j, k] * v
            norm_sq += v * v
        cos = dot / (max(np.sqrt(norm_sq), 1e-300) * target_norm[j])
        cut = (cos - tie - 1e-10 * (1.0 + abs(cos))) * target_norm[j]
        cut_sq = cut * cut * (1.0 - 1e-12)
        shift = num_offset[i] + num_err[i]
        anything = cut <= 0.0
        listed = np.zeros((vocab + 7) // 8 * 8, dtype=np.uint8)
        for t in range(vocab):
            high = np.float64(num_row[t]) + shift
            low = np.float64(sq_row[t]) - sq_err[i]
            above = (high > 0.0) & ((low <= 0.0) | (high * high >= cut_sq * low))
            listed[t] = (num_row[t] != -np.inf) & (anything | above)
        found = 0
        words = listed.view(np.uint64)
        for word in range(words.shape[0]):
            if words[word] != 0:
                for t in range(8 * word, 8 * word + 8):
                    if listed[t]:
                        if found < width:
                            shortlist[i, found] = t
                        found += 1
        counts[i] = found


@numba.njit(parallel=True, cache=True)
def gram_block_stats(gram, offset, bins, threads):  # pragma: no cover - compiled
    """Statistics of |g| = |gram[r, c]| over the upper triangle: row r of the block is the vector of
    column `offset + r`, so (r, c) is a pair when c > offset + r.

    Returns, per row: the sum of min(|g|, 1) in float64 and the largest |g| with its column; per
    column: the largest |g|; and the counts of min(|g|, 1) in `bins` equal bins of [0, 1] (1 in the
    last bin, as torch.histc). Rows are split into `threads` parts (numba.get_num_threads()).
    """
    rows, columns = gram.shape
    row_sum = np.zeros(rows)
    row_max = np.zeros(rows, dtype=np.float32)
    row_arg = np.full(rows, -1, dtype=np.int64)
    column_max = np.zeros((threads, columns), dtype=np.float32)
    histogram = np.zeros((threads, bins), dtype=np.int64)
    chunk = (rows + threads - 1) // threads
    for thread in numba.prange(threads):
        for r in range(thread * chunk, min(rows, (thread + 1) * chunk)):
            total = 0.0
            largest = np.float32(-1.0)
            where = -1
            for c in range(offset + r + 1, columns):
                v = min(abs(gram[r, c]), np.float32(1.0))
                total += v
                if v > largest:
                    largest = v
                    where = c
                if v > column_max[thread, c]:
                    column_max[thread, c] = v
                histogram[thread, min(np.int64(v * bins), bins - 1)] += 1
            row_sum[r] = total
            row_max[r] = max(largest, np.float32(0.0))
            row_arg[r] = where
    merged = np.zeros(columns, dtype=np.float32)
    for thread in range(threads):
        for c in range(columns):
            merged[c] = max(merged[c], column_max[thread, c])
    return row_sum, row_max, row_arg, merged, histogram.sum(axis=0)
