"""Class-count tables of a manifest: how many items (and patients) each class has per split or fold.

Rows are the classes in label order plus ``total``; columns are ``<source>/<split>`` (or
``<source>/fold<k>`` for a cross-validation manifest whose ``fold`` column is complete) plus
``total``. The manifest stage writes the table for every dataset as ``data/class_counts.csv`` with
a Markdown twin (patients per class, and the diagnoses left out of the diagnosis task).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from lungpipe.util.atomic import write_csv, write_text

UNITS: tuple[str, ...] = ("items", "recordings", "patients")


def count_columns(manifest: pd.DataFrame) -> pd.Series:
    """Column label of each row: ``<source>/fold<k>`` when every row has a fold, else
    ``<source>/<split>`` (source ``all`` when the manifest has no ``source`` column)."""
    source = manifest["source"].astype(str) if "source" in manifest.columns else pd.Series("all", manifest.index)
    if "fold" in manifest.columns and len(manifest) and manifest["fold"].notna().all():
        part = "fold" + manifest["fold"].astype(int).astype(str)
    else:
        part = manifest["split"].astype(str)
    return source + "/" + part


def _part_order(part: str) -> tuple[int, int]:
    if part in ("train", "test"):
        return (0, ("train", "test").index(part))
    if part.startswith("fold") and part[4:].isdigit():
        return (1, int(part[4:]))
    return (2, 0)


def _ordered_columns(manifest: pd.DataFrame, labels: pd.Series) -> list[str]:
    """Every source × split (or fold) that occurs anywhere, sources sorted, train before test."""
    sources = sorted(manifest["source"].astype(str).unique()) if "source" in manifest.columns else ["all"]
    parts = sorted(set(labels.str.split("/", n=1).str[1]), key=_part_order)
    return [f"{s}/{p}" for s in sources for p in parts]


def class_count_table(manifest: pd.DataFrame, *, unit: str = "items",
                      class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Items (manifest rows; ``recordings`` is a synonym) or distinct ``patients`` per class and
    column (see :func:`count_columns`).

    Class names come from ``class_names`` (indexed by label; classes without items get a zero row),
    else from the manifest's ``class_name`` column, else the label itself.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    frame = manifest.copy()
    if class_names is not None:
        names = [str(n) for n in class_names]
        bad = sorted({int(v) for v in frame["label"]} - set(range(len(names))))
        if bad:
            raise ValueError(f"labels {bad} have no class name among {names}")
        frame["class_name"] = [names[int(v)] for v in frame["label"]]
        order = names
    else:
        if "class_name" not in frame.columns:
            frame["class_name"] = frame["label"].astype(str)
        order = frame[["label", "class_name"]].drop_duplicates().sort_values("label")["class_name"].tolist()
    frame["column"] = count_columns(frame)
    columns = _ordered_columns(frame, frame["column"])

    def count(sub: pd.DataFrame) -> int:
        return int(sub["patient"].nunique()) if unit == "patients" else len(sub)

    table = pd.DataFrame(0, index=pd.Index([*order, "total"], name="class"), columns=[*columns, "total"])
    for (cls, col), sub in frame.groupby(["class_name", "column"]):
        table.loc[cls, col] = count(sub)
    for cls, sub in frame.groupby("class_name"):
        table.loc[cls, "total"] = count(sub)
    for col, sub in frame.groupby("column"):
        table.loc["total", col] = count(sub)
    table.loc["total", "total"] = count(frame)
    return table.astype("int64")


def table_to_markdown(table: pd.DataFrame) -> str:
    """A pipe table (index as the first column)."""
    head = [table.index.name or "", *map(str, table.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([str(idx), *(str(v) for v in row.tolist())]) + " |")
    return "\n".join(lines) + "\n"


def write_class_counts(
    manifest: pd.DataFrame,
    csv_path: str | Path,
    md_path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "Class counts",
    item_name: str = "items",
    excluded: pd.DataFrame | None = None,
    rejects: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Write the items-per-class table as CSV (``class`` column first) and a Markdown report with
    the same table, patients per class, the ``excluded`` table (e.g. diagnoses left out of the
    diagnosis task) and the number of ``rejects``. Returns the items table."""
    table = class_count_table(manifest, class_names=class_names)
    patients = class_count_table(manifest, unit="patients", class_names=class_names)
    write_csv(csv_path, table.reset_index())
    parts = [f"# {title}\n", f"## {item_name.capitalize()} per class\n", table_to_markdown(table),
             "## Patients per class\n", table_to_markdown(patients)]
    if excluded is not None and not excluded.empty:
        parts += ["## Excluded (not in any class)\n", table_to_markdown(excluded.set_index(excluded.columns[0]))]
    if rejects is not None and not rejects.empty:
        parts += [(f"## Rejected as bad input\n\n{len(rejects)} row(s) skipped (skip_bad); "
                   f"first: {rejects.iloc[0].to_dict()}\n")]
    write_text(md_path, "\n".join(parts))
    return table
