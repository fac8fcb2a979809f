"""The cohort outputs of a batch: ``cohort.csv`` / ``cohort.parquet`` (one row per case), ``screening.csv``
(cases to follow up) and ``cohort.png`` / ``cohort.pdf`` (vBMD against age by sex with the ACR bands,
category counts, QC flag counts, failures by reason).

Rows of analysed cases are read back from each case's ``results.json`` (so a resumed case and a fresh
one give the same row) through :func:`results.csv_row`; values and categories are exactly what
results.json holds (a category only where validity.py backs one).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from ..labels import MEASURED_LEVELS
from ..results import ACR_NORMAL_ABOVE_MG_CM3, ACR_OSTEOPOROSIS_BELOW_MG_CM3, csv_row, write_csv

SCREENED_CATEGORIES = ("osteoporosis", "osteopenia")  # ACR (spine) and WHO T-score (hip) names alike
SUMMARY_KEYS = ("status_reasons", "summary_vbmd_mg_cm3", "summary_levels_used", "summary_category",
                "calibration_method", "calibration_slope", "calibration_intercept", "qc_codes", "qc_errors",
                "qc_warnings")
BASE_COLUMNS = ("id", "status", "reason", "seconds", "age", "sex", "ct", "seg", "series") + SUMMARY_KEYS
LEVEL_COLUMNS = tuple(f"{level}_vbmd_mg_cm3" for level in MEASURED_LEVELS)
# the category bars, best to worst then the cases without one, in the ACR bands' colours (the vBMD panel's)
CATEGORY_COLOURS = {"normal": "#54a24b", "osteopenia": "#f2a93b", "osteoporosis": "#e45756",
                    "no category": "#bab0ac", "not measurable": "#9d9d9d", "failed": "#555555"}
LABEL_WIDTH_CHARS, LABEL_LINES = 42, 2  # a bar label's wrap (design choice: the panel keeps its width)


def _hip_column(key: str) -> bool:
    return key.startswith("hip_") and key.endswith(("_abmd_g_cm2", "_t_score", "_category"))


def cohort_row(record: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """One row: the record's id, status, reason, seconds and series, plus results.json's figures."""
    row: dict[str, Any] = {"id": record["case_id"], "status": record["status"], "reason": record.get("reason"),
                           "seconds": record.get("seconds"), "ct": record.get("ct"), "seg": record.get("seg"),
                           "series": record.get("series")}
    results_path = out_dir / record["folder"] / "results.json" if record.get("folder") else None
    if results_path is None or not results_path.is_file():
        return row
    results = json.loads(results_path.read_text())
    flat = csv_row(results)
    options = results.get("options") or {}
    row.update(age=options.get("patient_age"), sex=options.get("patient_sex"))
    row.update({k: flat.get(k) for k in SUMMARY_KEYS})
    row.update({k: flat.get(k) for k in LEVEL_COLUMNS})
    row.update({k: v for k, v in flat.items() if _hip_column(k)})
    return row


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """A fixed column order: the same cases give the same table, whatever order they finished in."""
    hip = sorted({k for row in rows for k in row if _hip_column(k)})
    return [*BASE_COLUMNS, *LEVEL_COLUMNS, *hip]


def screening_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cases with osteoporosis or osteopenia (spine ACR category or a hip T-score category), the most
    severe first, then by vBMD."""
    picked = []
    for row in rows:
        why = [f"spine {row['summary_category']}"] if row.get("summary_category") in SCREENED_CATEGORIES else []
        why += [f"{k[:-len('_category')].replace('_', ' ')} {v}" for k, v in row.items()
                if k.startswith("hip_") and k.endswith("_category") and v in SCREENED_CATEGORIES]
        if why:
            picked.append({**row, "screening_because": "; ".join(why)})
    severity = {name: i for i, name in enumerate(SCREENED_CATEGORIES)}

    def order(row: dict[str, Any]) -> tuple:
        worst = min(severity[c] for c in SCREENED_CATEGORIES if c in row["screening_because"])
        vbmd = row.get("summary_vbmd_mg_cm3")
        return worst, vbmd if vbmd is not None else float("inf"), row["id"]

    return sorted(picked, key=order)


def failure_group(reason: str | None) -> str:
    """A failure's reason without the file path it starts with, so that like failures count together."""
    text = (reason or "no reason recorded").strip()
    head, sep, rest = text.partition(": ")
    if sep and (os.sep in head or "/" in head or head.endswith((".gz", ".nrrd", ".mha", ".csv"))):
        text = rest
    return text[:70] + ("..." if len(text) > 70 else "")


def write_parquet(rows: list[dict[str, Any]], columns: list[str], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        try:
            arrays[column] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # mixed types: kept as text
            arrays[column] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    pq.write_table(pa.table(arrays), path)
    return path


def plot_cohort(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0][0]
    measured = [r for r in rows if r.get("summary_vbmd_mg_cm3") is not None]
    ages = [r["age"] for r in measured if r.get("age") is not None] or [20.0, 90.0]
    top = max([r["summary_vbmd_mg_cm3"] for r in measured] + [ACR_NORMAL_ABOVE_MG_CM3 * 1.6])
    ax.axhspan(0, ACR_OSTEOPOROSIS_BELOW_MG_CM3, color=CATEGORY_COLOURS["osteoporosis"], alpha=0.15,
               label="osteoporosis (ACR)")
    ax.axhspan(ACR_OSTEOPOROSIS_BELOW_MG_CM3, ACR_NORMAL_ABOVE_MG_CM3, color=CATEGORY_COLOURS["osteopenia"],
               alpha=0.15, label="osteopenia (ACR)")
    ax.axhspan(ACR_NORMAL_ABOVE_MG_CM3, top * 1.05, color=CATEGORY_COLOURS["normal"], alpha=0.10,
               label="normal (ACR)")
    for sex, marker, colour in (("F", "o", "#b279a2"), ("M", "s", "#4c78a8"), (None, "^", "#777777")):
        pts = [r for r in measured if r.get("age") is not None and r.get("sex") == sex]
        if pts:
            ax.scatter([r["age"] for r in pts], [r["summary_vbmd_mg_cm3"] for r in pts], marker=marker, color=colour,
                       label={"F": "female", "M": "male", None: "sex unknown"}[sex], s=18, zorder=3)
    no_age = sum(1 for r in measured if r.get("age") is None)
    ax.set(xlabel="age (years)", ylabel="vBMD (mg/cm³ HA; summary levels)", ylim=(0, top * 1.05),
           xlim=(min(ages) - 5, max(ages) + 5),
           title="vBMD against age" + (f" ({no_age} without an age not shown)" if no_age else ""))
    ax.legend(fontsize=7, loc="upper right")
    categories = category_counts(rows)
    _bars(axes[0][1], categories, "spine category (ACR) per case",
          colours=[CATEGORY_COLOURS[name] for name in categories])
    qc = Counter(bar_label(code) for r in rows for code in (r.get("qc_codes") or "").split(";") if code)
    _bars(axes[1][0], dict(qc.most_common(15)), "QC flags (cases with each code)", horizontal=True)
    failures = Counter(bar_label(f"{r['status']}: {failure_group(r.get('reason'))}") for r in rows
                       if r["status"] in ("failed", "timed_out"))
    _bars(axes[1][1], dict(failures.most_common(12)), "failures by reason", horizontal=True)
    counts = Counter(r["status"] for r in rows)
    fig.suptitle(f"OpportunisticBMD cohort: {len(rows)} cases (" +
                 ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")")
    fig.tight_layout()
    paths = [out_dir / "cohort.png", out_dir / "cohort.pdf"]
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths


def category_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Cases per spine category, in :data:`CATEGORY_COLOURS`' order (normal, osteopenia, osteoporosis, no
    category, not measurable, failed); a category no case has is left out."""
    def category(row: dict[str, Any]) -> str:
        if row["status"] in ("failed", "timed_out"):
            return "failed"
        if row["status"] == "not_measurable":
            return "not measurable"
        return row.get("summary_category") or "no category"

    counts = Counter(category(r) for r in rows)
    return {name: counts[name] for name in CATEGORY_COLOURS if counts[name]}


def bar_label(text: str) -> str:
    """A bar's label wrapped to :data:`LABEL_LINES` lines of :data:`LABEL_WIDTH_CHARS`, cut with '…' beyond:
    a long failure reason neither runs off the figure nor squeezes the other panels."""
    lines = textwrap.wrap(str(text), LABEL_WIDTH_CHARS) or [""]
    if len(lines) > LABEL_LINES:
        lines = lines[:LABEL_LINES]
        lines[-1] = lines[-1][: LABEL_WIDTH_CHARS - 1].rstrip() + "…"
    return "\n".join(lines)


def _bars(ax, counts: dict[str, int], title: str, horizontal: bool = False,
          colours: list[str] | None = None) -> None:
    ax.set_title(title)
    if not counts:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    from matplotlib.ticker import MaxNLocator

    names, values = list(counts), list(counts.values())
    (ax.xaxis if horizontal else ax.yaxis).set_major_locator(MaxNLocator(integer=True))
    if horizontal:
        ax.barh(range(len(names)), values, color=colours or "#4c78a8")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("cases")
    else:
        ax.bar(range(len(names)), values, color=colours or "#4c78a8", edgecolor="black", linewidth=0.5)
        ax.set_xticks(range(len(names)), [n.replace(" ", "\n") for n in names], fontsize=8)  # no overlap
        ax.set_ylabel("cases")
    for i, v in enumerate(values):
        if horizontal:
            ax.text(v, i, f" {v}", va="center", fontsize=7)
        else:
            ax.text(i, v, str(v), ha="center", va="bottom", fontsize=8)


def write_cohort(records: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """Write the cohort tables and figure into ``out_dir`` from the cases' records (in input order)."""
    out_dir = Path(out_dir)
    rows = [cohort_row(r, out_dir) for r in records]
    columns = columns_of(rows)
    table = [{c: row.get(c) for c in columns} for row in rows]
    written = {"cohort.csv": write_csv(table, out_dir / "cohort.csv"),
               "cohort.parquet": write_parquet(table, columns, out_dir / "cohort.parquet")}
    screening = screening_rows(table)
    written["screening.csv"] = write_csv(screening or {c: None for c in [*columns, "screening_because"]},
                                         out_dir / "screening.csv")
    if not screening:  # header only
        lines = (out_dir / "screening.csv").read_text().splitlines()
        (out_dir / "screening.csv").write_text(lines[0] + "\n")
    for path in plot_cohort(table, out_dir):
        written[path.name] = path
    return written
