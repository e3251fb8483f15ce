"""Compiled inner loops of pass 1 and pass 2 (numba, no Python objects).

Each loop visits every pixel once or twice in a fixed order and fuses what would
be several whole-array NumPy passes, so the seed pass costs about as much as a
connected-component labelling of its window. Results never depend on the
window's layout: each output pixel is computed by the same operations on the
same inputs in any window that contains its support.

* :func:`correlate_rows` then :func:`levels`: ``scipy.ndimage.gaussian_filter``
  (``mode="constant"``), bit for bit (scipy's symmetric-kernel sum in double
  precision, in the same order, rounded to float32 after each axis), quantised to
  int32 levels, -1 off foreground and off the plane.
* :func:`core_runs`: 4-connected components of ``level >= core_level`` as runs of
  pixels, joined by union-find over runs, with each component's size, bounding
  box, edge contact and root (largest level, then earliest pixel).
* :func:`paint_runs`: write a value per component into its pixels.
* :func:`ascend` and :func:`resolve`: pass 2's steepest-ascent parents and the
  root of every parent chain.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["ascend", "core_runs", "correlate_rows", "levels", "paint_runs", "resolve"]

_jit = numba.njit(cache=True, nogil=True)


@_jit
def correlate_rows(a: np.ndarray, w: np.ndarray, r0: int, out: np.ndarray) -> None:
    """``out[i] = sum_k w[|k|] * a[r0 + i + k]`` over rows (zeros outside ``a``), rounded to float32.

    ``w`` holds the weights of offsets ``0..r`` of a symmetric kernel; the terms
    are summed in double as scipy's ``correlate1d`` does: ``a[i] * w[0]``, then
    ``(a[i - k] + a[i + k]) * w[k]`` for ``k = r .. 1``. Rows ``r0 .. r0 + len(out)``
    must lie in ``a``.
    """
    h, width = a.shape
    r = w.size - 1
    acc = np.empty(width, np.float64)
    for i in range(out.shape[0]):
        y = r0 + i
        for x in range(width):
            acc[x] = np.float64(a[y, x]) * w[0]
        for k in range(r, 0, -1):
            wk = w[k]
            lo, hi = y - k, y + k
            if lo >= 0 and hi < h:
                for x in range(width):
                    acc[x] += (np.float64(a[lo, x]) + np.float64(a[hi, x])) * wk
            elif lo >= 0:
                for x in range(width):
                    acc[x] += np.float64(a[lo, x]) * wk
            elif hi < h:
                for x in range(width):
                    acc[x] += np.float64(a[hi, x]) * wk
        for x in range(width):
            out[i, x] = np.float32(acc[x])


@_jit
def levels(
    a: np.ndarray, w: np.ndarray, fg: np.ndarray, fg_min: float, bd: np.ndarray, bd_max: float,
    scale: float, top: int, y0: int, x0: int, height: int, width: int, out: np.ndarray,
) -> None:
    """Levels of a window at global ``(y0, x0)`` of a plane of ``height x width``.

    ``a`` is the axis-0 pass of :func:`correlate_rows` over the window plus ``c``
    columns on each side (``c = (a.shape[1] - out.shape[1]) // 2``). Each row gets
    the axis-1 pass the same way (rounded to float32, as ``gaussian_filter``), then
    ``out[y, x] = clip(rint(v * scale), 0, top)`` (float32 product) where
    ``fg[y, x] > fg_min`` and ``bd[y, x] <= bd_max``, else -1; -1 outside the plane.
    """
    h, n = out.shape
    r = w.size - 1
    c0 = (a.shape[1] - n) // 2
    s = np.float32(scale)
    fmin, bmax, ftop = np.float32(fg_min), np.float32(bd_max), np.float32(top)
    line = np.zeros(a.shape[1] + 2 * r, np.float64)
    acc = np.empty(n, np.float64)
    xa, xb = min(max(-x0, 0), n), min(max(width - x0, 0), n)
    for y in range(h):
        if not 0 <= y0 + y < height:
            out[y, :] = -1
            continue
        for x in range(a.shape[1]):
            line[r + x] = a[y, x]
        mid = line[r + c0 : r + c0 + n]  # slices keep every index below non-negative: SIMD loops
        for x in range(n):
            acc[x] = mid[x] * w[0]
        for k in range(r, 0, -1):
            wk = w[k]
            lo = line[r + c0 - k : r + c0 - k + n]
            hi = line[r + c0 + k : r + c0 + k + n]
            for x in range(n):
                acc[x] += (lo[x] + hi[x]) * wk
        fg_row, bd_row, dst = fg[y], bd[y], out[y]
        for x in range(n):
            q = min(max(np.rint(np.float32(acc[x]) * s), np.float32(0)), ftop)
            keep = (fg_row[x] > fmin) & (bd_row[x] <= bmax)
            dst[x] = np.int32(q) if keep else -1
        dst[:xa] = -1
        dst[xb:] = -1


@_jit
def core_runs(level: np.ndarray, core_level: int, min_px: int):
    """Cores of a level window: components of ``level >= core_level``, as runs.

    Returns ``(run_y, run_x0, run_x1, run_core, row_start, roots, open, boxes)``:
    runs in raster order (``row_start[y]`` is the first run of row ``y``), each
    run's core (0 for a closed component smaller than ``min_px``, which is not a
    core), and per core ``1..n`` (index 0 unused) its root's window-flat index
    (largest level, then earliest pixel), whether it touches the window's edge and
    its bounding box ``(y0, x0, y1, x1)``. Cores are numbered in raster order of
    their first pixel.
    """
    h, w = level.shape
    t = max(core_level, 0)
    n_runs = 0
    for y in range(h):
        inside = False
        for x in range(w):
            m = level[y, x] >= t
            if m and not inside:
                n_runs += 1
            inside = m
    run_y = np.empty(n_runs, np.int32)
    run_x0 = np.empty(n_runs, np.int32)
    run_x1 = np.empty(n_runs, np.int32)
    row_start = np.empty(h + 1, np.int64)
    best_level = np.empty(n_runs, np.int32)
    best_x = np.empty(n_runs, np.int32)
    k = 0
    for y in range(h):
        row_start[y] = k
        x = 0
        while x < w:
            if level[y, x] >= t:
                top, at = level[y, x], x
                x0 = x
                x += 1
                while x < w and level[y, x] >= t:
                    if level[y, x] > top:
                        top, at = level[y, x], x
                    x += 1
                run_y[k], run_x0[k], run_x1[k] = y, x0, x
                best_level[k], best_x[k] = top, at
                k += 1
            else:
                x += 1
    row_start[h] = n_runs
    # union-find over runs; the root of a set is its first run (smallest index)
    parent = np.arange(n_runs)
    for y in range(1, h):
        a, a_end = row_start[y - 1], row_start[y]
        b, b_end = row_start[y], row_start[y + 1]
        while a < a_end and b < b_end:
            if run_x0[a] < run_x1[b] and run_x0[b] < run_x1[a]:
                ra = a
                while parent[ra] != ra:
                    parent[ra] = parent[parent[ra]]
                    ra = parent[ra]
                rb = b
                while parent[rb] != rb:
                    parent[rb] = parent[parent[rb]]
                    rb = parent[rb]
                if ra < rb:
                    parent[rb] = ra
                elif rb < ra:
                    parent[ra] = rb
            if run_x1[a] < run_x1[b]:
                a += 1
            else:
                b += 1
    # per component, in raster order of first runs
    comp = np.empty(n_runs, np.int64)
    n = 0
    for i in range(n_runs):
        r = i
        while parent[r] != r:
            r = parent[r]
        parent[i] = r
        if r == i:
            n += 1
            comp[i] = n
        else:
            comp[i] = comp[r]
    size = np.zeros(n + 1, np.int64)
    touch = np.zeros(n + 1, np.bool_)
    top_level = np.full(n + 1, -1, np.int64)
    top_at = np.zeros(n + 1, np.int64)
    box = np.empty((n + 1, 4), np.int64)
    for i in range(n_runs):
        c = comp[i]
        y = run_y[i]
        if size[c] == 0:
            box[c, 0], box[c, 1], box[c, 2], box[c, 3] = y, run_x0[i], y + 1, run_x1[i]
        else:
            box[c, 1] = min(box[c, 1], run_x0[i])
            box[c, 2] = y + 1
            box[c, 3] = max(box[c, 3], run_x1[i])
        size[c] += run_x1[i] - run_x0[i]
        if y == 0 or y == h - 1 or run_x0[i] == 0 or run_x1[i] == w:
            touch[c] = True
        if best_level[i] > top_level[c]:  # runs come in raster order: ties keep the earlier pixel
            top_level[c], top_at[c] = best_level[i], np.int64(y) * w + best_x[i]
    keep = np.zeros(n + 1, np.int64)
    n_keep = 0
    for c in range(1, n + 1):
        if size[c] >= min_px or touch[c]:
            n_keep += 1
            keep[c] = n_keep
    run_core = np.empty(n_runs, np.int32)
    for i in range(n_runs):
        run_core[i] = keep[comp[i]]
    roots = np.zeros(n_keep + 1, np.intp)
    open_ = np.zeros(n_keep + 1, np.bool_)
    boxes = np.zeros((n_keep + 1, 4), np.intp)
    for c in range(1, n + 1):
        j = keep[c]
        if j:
            roots[j], open_[j] = top_at[c], touch[c]
            for q in range(4):
                boxes[j, q] = box[c, q]
    return run_y, run_x0, run_x1, run_core, row_start, roots, open_, boxes


@_jit
def paint_runs(
    run_y: np.ndarray, run_x0: np.ndarray, run_x1: np.ndarray, run_core: np.ndarray,
    values: np.ndarray, out: np.ndarray,
) -> None:
    """``out[y, x0:x1] = values[core]`` for every run of a core (runs of non-cores untouched)."""
    for i in range(run_y.size):
        c = run_core[i]
        if c:
            v = values[c]
            y = run_y[i]
            for x in range(run_x0[i], run_x1[i]):
                out[y, x] = v


@_jit
def ascend(
    level: np.ndarray, margin: int, radius: int, unknown: int, none: int, out: np.ndarray
) -> None:
    """Parent (window-flat index) of every pixel, by steepest ascent over keys.

    A pixel's key is its level, then earlier raster position. Background
    (``level < 0``) gets ``none``; other pixels within ``margin`` (>= 1) of the
    window's edge get ``unknown``; every other pixel gets its 3 x 3 neighbour with
    the largest key. A pixel that is itself that neighbour (a peak) gets the
    largest key in the square of ``radius`` around it (``radius <= margin``), or
    ``none`` if that is itself again.
    """
    h, w = level.shape
    n = w - 2 * margin
    for y in range(h):
        row = level[y]
        if y < margin or y >= h - margin or n <= 0:
            for x in range(w):
                out[y, x] = none if row[x] < 0 else unknown
            continue
        for j in range(margin):
            out[y, j] = none if row[j] < 0 else unknown
            out[y, w - 1 - j] = none if row[w - 1 - j] < 0 else unknown
        # packed keys level << 4 | (1 - dy) << 2 | (1 - dx): the largest is the steepest
        # neighbour, ties to the earlier pixel; slices keep the indices non-negative (SIMD)
        a0, a1, a2 = level[y - 1, margin - 1 : margin - 1 + n], level[y - 1, margin : margin + n], \
            level[y - 1, margin + 1 : margin + 1 + n]
        b0, b1, b2 = row[margin - 1 : margin - 1 + n], row[margin : margin + n], row[margin + 1 : margin + 1 + n]
        c0, c1, c2 = level[y + 1, margin - 1 : margin - 1 + n], level[y + 1, margin : margin + n], \
            level[y + 1, margin + 1 : margin + 1 + n]
        dst = out[y, margin : margin + n]
        base = y * w + margin
        for i in range(n):
            best = max((a0[i] << 4) | 10, (a1[i] << 4) | 9, (a2[i] << 4) | 8,
                       (b0[i] << 4) | 6, (b1[i] << 4) | 5, (b2[i] << 4) | 4,
                       (c0[i] << 4) | 2, (c1[i] << 4) | 1, (c2[i] << 4) | 0)
            code = best & 15
            target = base + i + (1 - (code >> 2)) * w + (1 - (code & 3))
            dst[i] = none if b1[i] < 0 else target
        for i in range(n):
            if dst[i] != base + i:
                continue
            x = margin + i  # a peak
            ty, tx, best = y - radius, x - radius, level[y - radius, x - radius]
            for yy in range(y - radius, y + radius + 1):
                for xx in range(x - radius, x + radius + 1):
                    if level[yy, xx] > best:
                        ty, tx, best = yy, xx, level[yy, xx]
            dst[i] = none if ty == y and tx == x else ty * w + tx


@_jit
def resolve(parent: np.ndarray) -> None:
    """Replace every node's parent by the root of its chain, in place (path compression).

    Every chain must end at a node that is its own parent.
    """
    for i in range(parent.size):
        r = i
        while parent[r] != r:
            r = parent[r]
        j = i
        while parent[j] != r:
            nxt = parent[j]
            parent[j] = r
            j = nxt
