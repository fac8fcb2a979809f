"""Agreement and precision statistics for the benchmarks (accuracy against truth, repeat-scan precision)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ACR-SPR-SSR practice parameter for QCT: trabecular vBMD < 80 mg/cm3 is osteoporosis.
OSTEOPOROSIS_MG_CM3 = 80.0


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("need two 1-D sequences of equal length")
    return a, b


def spearman_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import rankdata

    a, b = _pair(x, y)
    ra, rb = rankdata(a), rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def icc(x: Sequence[float], y: Sequence[float], form: str = "2,1") -> float:
    """Intraclass correlation of two raters (measured, truth) over n subjects, Shrout & Fleiss, Psychol
    Bull 86:420 (1979). ``"2,1"``: two-way random, single measure, absolute agreement (what an accuracy
    study against truth needs; McGraw & Wong's ICC(A,1)); ``"3,1"``: two-way mixed, consistency."""
    a, b = _pair(x, y)
    return icc_matrix(np.stack([a, b], axis=1), form)


def icc_matrix(data: np.ndarray, form: str = "2,1") -> float:
    """ICC of an (n subjects x k raters) table; see :func:`icc`."""
    data = np.asarray(data, float)
    n, k = data.shape
    grand = data.mean()
    ss_rows = k * np.sum((data.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((data.mean(axis=0) - grand) ** 2)
    ss_total = np.sum((data - grand) ** 2)
    ss_err = ss_total - ss_rows - ss_cols
    ms_rows = ss_rows / (n - 1)
    ms_cols = ss_cols / (k - 1)
    ms_err = ss_err / ((n - 1) * (k - 1))
    if form == "2,1":
        return float((ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n))
    if form == "3,1":
        return float((ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err))
    raise ValueError("form must be '2,1' or '3,1'")


def bland_altman(measured: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """Bias (mean of measured - truth) and 95 % limits of agreement (bias +- 1.96 SD, SD with n-1);
    Bland & Altman, Lancet 1986;1:307."""
    a, b = _pair(measured, truth)
    diff = a - b
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def rmse(measured: Sequence[float], truth: Sequence[float]) -> float:
    a, b = _pair(measured, truth)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties count 1/2
    (Mann-Whitney form; Hanley & McNeil, Radiology 143:29 (1982)). NaN if a class is empty."""
    s = np.asarray(scores, float)
    p = np.asarray(positive, bool)
    pos, neg = s[p], s[~p]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def diagnostic(measured: Sequence[float], truth: Sequence[float], threshold: float = OSTEOPOROSIS_MG_CM3) -> dict:
    """Osteoporosis (vBMD < threshold) detection: AUC of -measured for truth < threshold, and sensitivity/
    specificity of measured < threshold."""
    a, b = _pair(measured, truth)
    disease = b < threshold
    called = a < threshold
    n_pos, n_neg = int(disease.sum()), int((~disease).sum())
    return {
        "auc": roc_auc(-a, disease),
        "sensitivity": float((called & disease).sum() / n_pos) if n_pos else float("nan"),
        "specificity": float((~called & ~disease).sum() / n_neg) if n_neg else float("nan"),
        "n_positive": n_pos,
        "n_negative": n_neg,
    }


def rmscv_percent(groups: Sequence[Sequence[float]]) -> float:
    """Root-mean-square coefficient of variation over subjects with repeated measurements (%), each CV
    = SD (n-1) / mean; Glüer et al., Osteoporos Int 5:262 (1995)."""
    cvs = []
    for values in groups:
        v = np.asarray(values, float)
        if v.size < 2:
            continue
        cvs.append(v.std(ddof=1) / v.mean())
    if not cvs:
        raise ValueError("need at least one subject with two or more measurements")
    return float(100.0 * np.sqrt(np.mean(np.square(cvs))))


def agreement(measured: Sequence[float], truth: Sequence[float], icc_form: str = "2,1") -> dict[str, float]:
    """All accuracy figures of the benchmark, keyed as in its JSON contract."""
    a, b = _pair(measured, truth)
    ba = bland_altman(a, b)
    diag = diagnostic(a, b)
    return {
        "n": int(a.size),
        "spearman_r": spearman_r(a, b),
        "icc": icc(a, b, icc_form),
        "bias_mg_cm3": ba["bias"],
        "loa_low_mg_cm3": ba["loa_low"],
        "loa_high_mg_cm3": ba["loa_high"],
        "rmse_mg_cm3": rmse(a, b),
        "auc": diag["auc"],
        "sensitivity": diag["sensitivity"],
        "specificity": diag["specificity"],
    }
