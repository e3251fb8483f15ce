"""Fibre types from per-fibre myosin heavy-chain intensities, with per-slide thresholds.

:func:`call_fibre_types` takes one row per fibre and one column per MyHC channel
role (:data:`TYPE_ROLES`: ``myh1`` = MyHC I, ``myh2a`` = MyHC IIa, ``myh2x`` =
MyHC IIx; any subset), the background-subtracted interior means, and calls each
fibre one of :data:`~nclsm_scale.tables.FIBRE_TYPES`; :func:`slide_fibre_types`
does it for a slide's fibre table. ``aggregate.type_summary`` gives the labs'
standard readout: count, proportion and CSA per type.

How a channel's positive / negative threshold adapts to the slide
----------------------------------------------------------------
1. **Scale.** Intensities are mapped to ``y = asinh(x / c)``, ``c`` three times
   the channel's median absolute intensity over the fitted fibres: linear
   where background-subtracted negatives scatter around zero (a plain log
   would spread them over decades, skew them, and a mixture would split them
   in two), logarithmic for bright fibres (stained populations are roughly
   log-normal). ``c`` scales with the channel, so multiplying a channel by a
   constant changes no call.
2. **Mixture.** Two Gaussians are fitted to ``y`` by EM (in numpy, one
   dimension; deterministic: the best of a few fixed initial splits), beside a fixed 1 % uniform component over the
   observed range that absorbs outliers (a handful of saturated or debris fibres
   does not drag a component). A fibre's positive probability is the posterior
   of the brighter component, evaluated at ``y`` clipped to the two means, so it
   never falls again beyond the positive mean (two Gaussians of unequal width
   otherwise hand the far tails to the wider one). The threshold is where it
   crosses 0.5, reported back in intensity units.
3. **Is there a positive population at all?** Two populations are accepted if
   two components beat one by BIC, each holds at least ``min_component_fibres``
   fibres, and the positive median is at least ``min_fold`` times the negative
   one (counted as at least its spread). Otherwise the channel is *unimodal*:
   a channel without stained fibres (IIx is often absent in human muscle), or
   one whose negatives differ only by autofluorescence between fibre types,
   is not split in two. Components that overlap (Ashman's D below 2) are
   reported as such; their fibres near the threshold get probabilities near
   0.5 and end up unclassified, while clear fibres are still called (a slide-
   wide "not called" would drop every fibre for one borderline channel).
4. **Unimodal channels** cannot say by themselves whether their one population
   is positive or negative (scale invariance); the other channels decide. They
   are **negative** (the common case: the isoform is absent), unless at least
   80 % of the fibres are negative in every bimodal channel: those fibres must
   express something, so a lone unimodal channel beside a bimodal one is
   **positive** in all fibres (a muscle of one type with a few hybrids), and
   with several unimodal channels, or none bimodal, they are **undecided** (NaN:
   the fibres they decide are unclassified).
5. **Few fibres.** Below ``min_fibres_mixture`` fitted fibres both Gaussians
   share one width (fewer parameters to estimate); below
   ``2 * min_component_fibres`` the channel is not fitted and its probabilities
   are NaN (every fibre unclassified where it decides).
6. **Spillover.** A channel's signal can leak into another (optical
   bleed-through, antibody cross-reactivity): every fibre bright in A then shows
   B at a level proportional to A, below B's positive level, and a naive
   threshold calls them all A/B hybrids. For every pair of bimodal channels,
   with B's negative and positive levels ``N_B``, ``P_B`` (medians) taken from
   fibres negative in A, the coefficient ``s`` is the median of
   ``(x_B - N_B) / x_A`` over fibres positive in A. It is subtracted
   (``x_B - s * x_A``, then B is refitted) when it lifts the median A-positive
   fibre by at least two robust SDs of B's negatives (less is noise) and less
   than half-way from ``N_B`` to ``P_B`` (more is co-expression, which stays).
   True hybrids survive as long as most A-positive fibres are not hybrids (the
   median ratio is that of pure A fibres). ``spillover=False`` turns it off.

Combining channels
------------------
Per fibre, each pattern of positive channels has the probability of the
product of its channels' probabilities. Patterns map to types by their isoform
set: I; IIa; IIx; I + IIa = I/IIa; IIa + IIx = IIa/IIx; none, I + IIx or all three
are unclassified. The call is the most probable type if its probability is at
least ``min_confidence`` (an uncertain deciding channel keeps it below),
otherwise unclassified. ``type_confidence`` is the probability of the called
type; for unclassified fibres, that of a pattern no type explains (low when
the fibre is unclassified for uncertainty). A channel NaN for a fibre, or not
fitted or undecided on the slide, counts 0.5 there (unimodal channels: their slide-wide
call); a fibre NaN in every channel is unclassified with confidence 0.
With a channel missing, types that need it cannot be called and
types that differ only by it are merged under the name of the one without it
(no IIx channel: "IIa" includes IIa/IIx, and IIx fibres are unclassified);
:attr:`FibreTypes.callable_types` and :attr:`FibreTypes.notes` say so.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

__all__ = [
    "TYPE_ISOFORMS",
    "TYPE_ROLES",
    "ChannelFit",
    "FibreTypes",
    "call_fibre_types",
    "slide_fibre_types",
]

#: Channel role -> the MyHC isoform it stains.
TYPE_ROLES = {"myh1": "I", "myh2a": "IIa", "myh2x": "IIx"}
#: Isoforms each callable type expresses (any other positive pattern is unclassified).
TYPE_ISOFORMS: dict[str, frozenset[str]] = {
    "I": frozenset({"I"}),
    "IIa": frozenset({"IIa"}),
    "IIx": frozenset({"IIx"}),
    "I/IIa": frozenset({"I", "IIa"}),
    "IIa/IIx": frozenset({"IIa", "IIx"}),
}

#: Fixed weight of the uniform outlier component of every mixture.
_OUTLIER_WEIGHT = 0.01
#: Shares of the sorted values where EM also starts (beside the least-squares split).
_INIT_QUANTILES = (0.1, 0.5, 0.9)
_EM_ITERATIONS = 300
_EM_TOLERANCE = 1e-9
#: ``c`` of the asinh scale, in multiples of the channel's median absolute intensity.
_LINEAR_SPAN = 3.0
#: Smallest share of fibres negative in every other channel that makes a lone unimodal channel positive.
_ORPHAN_SHARE = 0.8
#: Ashman's D below which a channel's populations are reported as overlapping.
_CLEAN_SEPARATION = 2.0
#: A channel's lower and upper probabilities that count as confidently negative / positive (spillover).
_CONFIDENT = 0.1


@dataclass(frozen=True)
class ChannelFit:
    """How one channel's positive / negative threshold was chosen on a slide.

    Attributes
    ----------
    role, isoform : str
        Channel role (``myh2a``) and the isoform it stains (``IIa``).
    method : str
        ``mixture`` or ``mixture, shared width (few fibres)`` (either + ``, overlapping``
        when D < 2), ``unimodal: all negative``, ``unimodal: all positive``,
        ``unimodal: all undecided`` or ``too few fibres``.
    bimodal : bool
        Whether a positive and a negative population were found.
    threshold : float
        Intensity where the positive probability crosses 0.5, in the input's
        units after spillover subtraction; NaN when not bimodal.
    positive_share : float
        Share of the fitted fibres called positive (probability >= 0.5).
    separation : float
        Ashman's D of the two components (NaN when not fitted).
    n_fit : int
        Fibres the threshold was fitted on (finite values within the fit mask).
    spillover : dict of str to float
        Source role -> coefficient subtracted from this channel (``x - s * x_source``).
    """

    role: str
    isoform: str
    method: str
    bimodal: bool
    threshold: float
    positive_share: float
    separation: float
    n_fit: int
    spillover: dict[str, float] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """One line for a report, e.g. ``MyHC IIa (myh2a): mixture, D 4.2, threshold 131, 48 % positive``."""
        text = f"MyHC {self.isoform} ({self.role}): {self.method}"
        if self.bimodal:
            text += f", D {self.separation:.1f}, threshold {self.threshold:.4g}"
        if np.isfinite(self.positive_share):
            text += f", {100 * self.positive_share:.0f} % positive"
        for source, s in self.spillover.items():
            text += f", {s:.3g} x {source} subtracted (spillover)"
        return f"{text}, {self.n_fit} fibres fitted"


@dataclass(frozen=True)
class FibreTypes:
    """Fibre types of one slide.

    Attributes
    ----------
    fibre_type : Series of str
        One of :data:`~nclsm_scale.tables.FIBRE_TYPES` per fibre (the input's index).
    type_confidence : Series of float
        Probability of the called type, in [0, 1].
    positive_probability : DataFrame
        Per fibre and channel role, the probability of being positive: from the
        mixture, 0 or 1 on a unimodal channel; NaN where the fibre's value is NaN
        or the channel was not fitted or is undecided.
    channels : dict of str to ChannelFit
        Per channel role, its threshold and fit.
    callable_types : tuple of str
        Types the present channels can call.
    notes : tuple of str
        Slide-level caveats (merged or uncallable types, unimodal channels, spillover).
    """

    fibre_type: pd.Series
    type_confidence: pd.Series
    positive_probability: pd.DataFrame
    channels: dict[str, ChannelFit]
    callable_types: tuple[str, ...]
    notes: tuple[str, ...]

    def table(self) -> pd.DataFrame:
        """Per-fibre columns ``fibre_type``, ``type_confidence`` and ``<role>_positive_probability``."""
        out = pd.DataFrame({"fibre_type": self.fibre_type, "type_confidence": self.type_confidence})
        for role in self.positive_probability.columns:
            out[f"{role}_positive_probability"] = self.positive_probability[role]
        return out


@dataclass(frozen=True)
class _Mixture:
    """Gaussian components (weights, means, SDs) on the transformed scale and their log-likelihood."""

    weight: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    loglik: float


def _log_normal_pdf(y: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Log density of each value (rows) under each Gaussian (columns)."""
    z = (y[:, None] - mean[None, :]) / sd[None, :]
    return -0.5 * z * z - np.log(sd)[None, :] - 0.5 * np.log(2 * np.pi)


def _em(y: np.ndarray, groups: list[np.ndarray], *, tied: bool, floor_sd: float) -> _Mixture | None:
    """Fit Gaussians (one per initial group) plus the fixed uniform outlier component by EM.

    Untied SDs are shrunk towards the pooled SD by one pseudo-fibre each, so a
    component of a few fibres cannot collapse. None if a component empties.
    """
    n = y.size
    span = float(y.max() - y.min())
    outlier = np.log(_OUTLIER_WEIGHT / span) if span > 0 else -np.inf
    mean = np.array([g.mean() for g in groups])
    sd = np.full(len(groups), max(float(np.std(y)), floor_sd))
    weight = np.array([g.size for g in groups], np.float64) / n * (1 - _OUTLIER_WEIGHT)
    loglik = -np.inf
    for _ in range(_EM_ITERATIONS):
        logd = np.log(weight)[None, :] + _log_normal_pdf(y, mean, sd)
        total = np.logaddexp(np.logaddexp.reduce(logd, axis=1), outlier)
        resp = np.exp(logd - total[:, None])
        size = resp.sum(axis=0)
        if np.any(size < 1e-6):
            return None
        weight = size / size.sum() * (1 - _OUTLIER_WEIGHT)
        mean = (resp * y[:, None]).sum(axis=0) / size
        sq = (resp * (y[:, None] - mean[None, :]) ** 2).sum(axis=0)
        pooled = sq.sum() / size.sum()
        var = np.full(len(groups), pooled) if tied else (sq + pooled) / (size + 1.0)
        sd = np.sqrt(np.maximum(var, floor_sd**2))
        new = float(total.sum())
        if abs(new - loglik) < _EM_TOLERANCE * max(1.0, abs(new)):
            loglik = new
            break
        loglik = new
    return _Mixture(weight, mean, sd, loglik)


def _initial_splits(y: np.ndarray, min_size: int) -> list[int]:
    """Split points of the sorted values: the least-squares (Otsu) split and fixed shares."""
    n = y.size
    ks = np.arange(min_size, n - min_size + 1)
    csum = np.cumsum(y)
    left = csum[ks - 1]
    right = csum[-1] - left
    between = left**2 / ks + right**2 / (n - ks)  # maximal between-group sum of squares
    splits = {int(ks[np.argmax(between)])}
    splits.update(int(np.clip(round(q * n), min_size, n - min_size)) for q in _INIT_QUANTILES)
    return sorted(splits)


def _fit_two(y: np.ndarray, *, tied: bool, min_size: int, floor_sd: float) -> _Mixture | None:
    """The most likely two-Gaussian fit over the initial splits, components ordered dim then bright."""
    ys = np.sort(y)
    fits = [_em(y, [ys[:k], ys[k:]], tied=tied, floor_sd=floor_sd) for k in _initial_splits(ys, min_size)]
    best = max((f for f in fits if f is not None), key=lambda f: f.loglik, default=None)
    if best is None:
        return None
    order = np.argsort(best.mean)
    return _Mixture(best.weight[order], best.mean[order], best.sd[order], best.loglik)


def _positive_posterior(mix: _Mixture, y: np.ndarray) -> np.ndarray:
    """Posterior of the bright component at ``y`` clipped to the two means (non-decreasing in ``y``)."""
    yc = np.clip(y, mix.mean[0], mix.mean[1])
    logd = np.log(mix.weight)[None, :] + _log_normal_pdf(yc, mix.mean, mix.sd)
    return 1.0 / (1.0 + np.exp(np.clip(logd[:, 0] - logd[:, 1], -700, 700)))


def _crossing(mix: _Mixture) -> float:
    """Transformed value where the positive posterior crosses 0.5 (bisection between the means)."""
    lo, hi = float(mix.mean[0]), float(mix.mean[1])
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _positive_posterior(mix, np.array([mid]))[0] < 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


def _robust_sd(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else 0.0


@dataclass(frozen=True)
class _Settings:
    """Keyword arguments of :func:`call_fibre_types` that the channel fits use."""

    min_fibres_mixture: int
    min_component_fibres: int
    min_fold: float


def _fit_channel(x_fit: np.ndarray, x_all: np.ndarray, role: str, cfg: _Settings) -> tuple[ChannelFit, np.ndarray]:
    """Fit one channel on ``x_fit`` (finite values); positive probability of ``x_all`` (NaN unless bimodal)."""
    iso = TYPE_ROLES[role]
    n = x_fit.size
    nan = np.full(x_all.shape, np.nan)
    if n < 2 * cfg.min_component_fibres:
        return ChannelFit(role, iso, "too few fibres", False, np.nan, np.nan, np.nan, n), nan
    scale = _LINEAR_SPAN * float(np.median(np.abs(x_fit)))
    scale = scale if scale > 0 else float(np.max(np.abs(x_fit))) or 1.0
    y = np.arcsinh(x_fit / scale)
    tied = n < cfg.min_fibres_mixture
    floor_sd = max(0.02 * float(np.std(y)), 1e-6)
    one = _em(y, [y], tied=True, floor_sd=floor_sd)
    two = _fit_two(y, tied=tied, min_size=cfg.min_component_fibres, floor_sd=floor_sd)
    if one is None or two is None:
        return ChannelFit(role, iso, "unimodal", False, np.nan, np.nan, np.nan, n), nan
    d = float(np.sqrt(2) * (two.mean[1] - two.mean[0]) / np.sqrt(two.sd[0] ** 2 + two.sd[1] ** 2))
    positive = _positive_posterior(two, y) >= 0.5
    neg, pos = x_fit[~positive], x_fit[positive]
    n_params = 4 if tied else 5
    two_populations = (
        2 * (two.loglik - one.loglik) > (n_params - 2) * np.log(n)  # BIC
        and min(neg.size, pos.size) >= cfg.min_component_fibres
        and np.median(pos) >= cfg.min_fold * max(float(np.median(neg)), _robust_sd(neg), 1e-12 * scale)
    )
    if not two_populations:
        return ChannelFit(role, iso, "unimodal", False, np.nan, np.nan, d, n), nan
    method = "mixture, shared width (few fibres)" if tied else "mixture"
    if d < _CLEAN_SEPARATION:
        method += ", overlapping"
    threshold = scale * float(np.sinh(_crossing(two)))
    fit = ChannelFit(role, iso, method, True, threshold, float(positive.mean()), d, n)
    return fit, np.where(np.isfinite(x_all), _positive_posterior(two, np.arcsinh(x_all / scale)), np.nan)


def _spillover(x: pd.DataFrame, prob: pd.DataFrame, fit: np.ndarray, cfg: _Settings) -> dict[tuple[str, str], float]:
    """Spillover coefficients (source, target) -> s to subtract, from the first fits (module docstring, 6)."""
    out: dict[tuple[str, str], float] = {}
    m = cfg.min_component_fibres
    for a, b in itertools.permutations(prob.columns, 2):
        pa, pb = prob[a].to_numpy()[fit], prob[b].to_numpy()[fit]
        xa, xb = x[a].to_numpy(np.float64)[fit], x[b].to_numpy(np.float64)[fit]
        a_pos = (pa >= 1 - _CONFIDENT) & np.isfinite(xb) & (xa > 0)
        b_neg = (pa <= _CONFIDENT) & (pb <= _CONFIDENT)
        b_pos = (pa <= _CONFIDENT) & (pb >= 1 - _CONFIDENT)
        if min(a_pos.sum(), b_neg.sum(), b_pos.sum()) < m:
            continue
        low, high = float(np.median(xb[b_neg])), float(np.median(xb[b_pos]))
        s = float(np.median((xb[a_pos] - low) / xa[a_pos]))
        lift = s * float(np.median(xa[a_pos]))
        if 2 * _robust_sd(xb[b_neg]) <= lift < 0.5 * (high - low):
            out[a, b] = s
    return out


def _resolve_unimodal(fits: dict[str, ChannelFit], prob: pd.DataFrame, fit: np.ndarray) -> list[str]:
    """Set unimodal channels' probabilities to 0, 1 or NaN (module docstring, 4); return notes."""
    unimodal = [r for r, f in fits.items() if f.method == "unimodal"]
    bimodal = [r for r, f in fits.items() if f.bimodal]
    others = prob.loc[fit, bimodal].fillna(0.5).to_numpy()
    orphan_share = float(np.mean(np.all(others < 0.5, axis=1))) if len(others) else 1.0
    if orphan_share < _ORPHAN_SHARE:
        state, value, why = "negative", 0.0, ""
    elif len(unimodal) == 1 and bimodal:
        state, value, why = "positive", 1.0, " (most fibres are negative in every other channel)"
    else:
        state, value, why = "undecided", np.nan, " (the other channels cannot tell whether it is stained)"
    notes = []
    for role in unimodal:
        prob[role] = value
        fits[role] = replace(fits[role], method=f"unimodal: all {state}", positive_share=value)
        notes.append(f"MyHC {fits[role].isoform} ({role}): one population, {state} in every fibre{why}")
    return notes


def _type_probabilities(prob: pd.DataFrame) -> pd.DataFrame:
    """Probability of each callable type and of ``unclassified`` (patterns of no type), per fibre."""
    roles = list(prob.columns)
    p = prob.fillna(0.5).to_numpy(np.float64)
    out = pd.DataFrame(0.0, index=prob.index, columns=list(TYPE_ISOFORMS) + ["unclassified"])
    for pattern in itertools.product((False, True), repeat=len(roles)):
        isoforms = frozenset(TYPE_ROLES[r] for r, on in zip(roles, pattern, strict=True) if on)
        name = next((t for t, s in TYPE_ISOFORMS.items() if s == isoforms), "unclassified")
        out[name] += np.prod(np.where(pattern, p, 1 - p), axis=1)
    return out


def _call(types: pd.DataFrame, callable_types: tuple[str, ...], min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The most probable callable type if at least ``min_confidence`` probable, and its probability.

    Otherwise ``unclassified``, with the probability of the unclassifiable patterns.
    """
    if not callable_types:
        return np.full(len(types), "unclassified", dtype=object), types["unclassified"].to_numpy()
    p = types[list(callable_types)].to_numpy()
    best = p.argmax(axis=1)
    best_p = p[np.arange(len(p)), best]
    sure = best_p >= min_confidence
    called = np.where(sure, np.asarray(callable_types, dtype=object)[best], "unclassified")
    return called, np.clip(np.where(sure, best_p, types["unclassified"].to_numpy()), 0.0, 1.0)


def _missing_channel_notes(roles: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """Types the present channels can call, and notes on merged or uncallable types."""
    present = frozenset(TYPE_ROLES[r] for r in roles)
    callable_types = tuple(t for t, s in TYPE_ISOFORMS.items() if s <= present)
    notes = []
    for t in callable_types:
        merged = [u for u, s in TYPE_ISOFORMS.items() if not s <= present and s & present == TYPE_ISOFORMS[t]]
        if merged:
            notes.append(f"{t} includes {', '.join(merged)} (no channel for the isoform that tells them apart)")
    missing = [t for t in TYPE_ISOFORMS if t not in callable_types and not TYPE_ISOFORMS[t] & present]
    if missing:
        notes.append(f"{', '.join(missing)}: not callable (fibres negative in every stained channel are unclassified)")
    return callable_types, notes


def call_fibre_types(
    intensity: pd.DataFrame,
    *,
    fit_mask: pd.Series | np.ndarray | None = None,
    min_confidence: float = 0.7,
    min_fibres_mixture: int = 20,
    min_component_fibres: int = 3,
    min_fold: float = 2.0,
    spillover: bool = True,
) -> FibreTypes:
    """Call each fibre's type from its MyHC channel intensities, with thresholds fitted to the slide.

    The method, its fallbacks and how channels combine are in the module
    docstring (:mod:`nclsm_scale.curate.types`).

    Parameters
    ----------
    intensity : DataFrame
        One row per fibre; columns named by :data:`TYPE_ROLES` keys (any non-empty
        subset; other columns are ignored; a column without a finite value counts
        as absent): background-subtracted interior means, NaN where not measurable.
    fit_mask : Series or ndarray of bool, optional
        Fibres to fit thresholds on (e.g. analysable, not debris; a Series is
        aligned on the index, missing fibres are not fitted); default all.
        Every fibre is typed.
    min_confidence : float
        Smallest probability of the most probable type for a call; else unclassified.
    min_fibres_mixture : int
        Fewest fitted fibres for two components of separate widths (fewer: shared width).
    min_component_fibres : int
        Fewest fibres in each population of a bimodal channel.
    min_fold : float
        Smallest ratio of the positive to the negative median intensity (the
        negative counted as at least its robust SD).
    spillover : bool
        Estimate and subtract channel-to-channel spillover.

    Returns
    -------
    FibreTypes
        Per-fibre types, confidences and channel probabilities; per-channel fits; notes.

    Raises
    ------
    ValueError
        If no column is a channel role, or ``fit_mask`` does not match the rows.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> i_fibre = np.arange(60) < 24
    >>> x = pd.DataFrame({
    ...     "myh1": np.where(i_fibre, 900.0, 30.0) * rng.lognormal(0, 0.2, 60),
    ...     "myh2a": np.where(i_fibre, 20.0, 400.0) * rng.lognormal(0, 0.2, 60),
    ... })
    >>> result = call_fibre_types(x)
    >>> result.fibre_type.value_counts().to_dict()
    {'IIa': 36, 'I': 24}
    >>> result.notes[0]
    'IIa includes IIa/IIx (no channel for the isoform that tells them apart)'
    """
    given = [r for r in TYPE_ROLES if r in intensity.columns]
    roles = [r for r in given if np.isfinite(intensity[r].to_numpy(np.float64)).any()]
    if not roles:
        raise ValueError(
            f"no fibre-type channel with a finite value among the columns {list(intensity.columns)}; "
            f"expected any of {list(TYPE_ROLES)}."
        )
    if isinstance(fit_mask, pd.Series):
        fit_mask = fit_mask.reindex(intensity.index, fill_value=False)
    fit = np.ones(len(intensity), bool) if fit_mask is None else np.asarray(fit_mask, bool)
    if fit.shape != (len(intensity),):
        raise ValueError(f"fit_mask has shape {fit.shape}; expected one value per fibre ({len(intensity)}).")
    cfg = _Settings(min_fibres_mixture, min_component_fibres, min_fold)
    x = intensity[roles].astype(np.float64)

    def fit_all(values: pd.DataFrame) -> tuple[dict[str, ChannelFit], pd.DataFrame]:
        fits, prob = {}, pd.DataFrame(index=intensity.index)
        for role in roles:
            v = values[role].to_numpy()
            fits[role], prob[role] = _fit_channel(v[fit & np.isfinite(v)], v, role, cfg)
        return fits, prob

    fits, prob = fit_all(x)
    spill = _spillover(x, prob, fit, cfg) if spillover else {}
    if spill:
        for (a, b), s in spill.items():
            x[b] = x[b] - s * x[a].clip(lower=0).fillna(0.0)
        fits, prob = fit_all(x)
        for (a, b), s in spill.items():
            fits[b] = replace(fits[b], spillover={**fits[b].spillover, a: s})
    callable_types, notes = _missing_channel_notes(roles)
    notes += [f"{r}: no finite value, treated as absent" for r in given if r not in roles]
    notes += _resolve_unimodal(fits, prob, fit)
    notes += [f.description for f in fits.values() if f.method == "too few fibres" or "overlapping" in f.method]
    notes += [f"{s:.3g} x {a} subtracted from {b} (spillover)" for (a, b), s in spill.items()]
    called, confidence = _call(_type_probabilities(prob), callable_types, min_confidence)
    measured = x.notna().any(axis=1).to_numpy()
    called = np.where(measured, called, "unclassified")
    confidence = np.where(measured, confidence, 0.0)
    return FibreTypes(
        fibre_type=pd.Series(called, index=intensity.index, name="fibre_type", dtype=object),
        type_confidence=pd.Series(confidence, index=intensity.index, name="type_confidence"),
        positive_probability=prob.where(x.notna()),
        channels=fits,
        callable_types=callable_types,
        notes=tuple(notes),
    )


def slide_fibre_types(table: pd.DataFrame, fit_mask: np.ndarray | None = None) -> FibreTypes | None:
    """Types of a slide's fibres from its ``<role>_interior_mean`` columns; None without a myosin channel.

    ``fit_mask`` marks the fibres the thresholds are fitted on (e.g. whole fibres,
    not debris or non-fibres); every fibre is typed.
    """
    roles = [r for r in TYPE_ROLES if f"{r}_interior_mean" in table.columns]
    if not roles:
        return None
    intensity = pd.DataFrame({r: table[f"{r}_interior_mean"].to_numpy(np.float64) for r in roles}, index=table.index)
    return call_fibre_types(intensity, fit_mask=fit_mask)
