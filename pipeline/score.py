"""Score a BirdCLEF submission CSV against a solution CSV.

Both files have a ``row_id`` column followed by one column per class code.
Two metrics are supported:

* ``padded_cmap`` (BirdCLEF 2023): padding rows of all 1s are appended so that
  classes with no positives still contribute a finite AP instead of being
  undefined, then macro average precision is taken over every class.
* ``roc_auc`` (BirdCLEF 2024+): macro ROC-AUC over the classes that have at
  least one positive in the solution (AUC is undefined for the others).

Usage::

    python -m pipeline.score --solution SOL.csv --submission SUB.csv \
        [--metric padded_cmap|roc_auc] [--padding_factor 5] [--per_class FILE]

The last line printed on stdout is the score alone, so scripts can ``tail -1``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

ROW_ID = "row_id"
METRICS = ("padded_cmap", "roc_auc")
_NAN_SPELLINGS = {"nan", "na", "n/a", "null", "none"}
_MAX_EXAMPLES = 5


class ScoringError(ValueError):
    """Raised for inputs that cannot be scored; the message names the file and the cause."""


def _examples(values: Sequence[str]) -> str:
    """Show a few values so a large mismatch stays readable."""
    shown = ", ".join(repr(v) for v in list(values)[:_MAX_EXAMPLES])
    return shown + (", ..." if len(values) > _MAX_EXAMPLES else "")


def _read_raw(path: str) -> pd.DataFrame:
    """Read every cell as text so bad values can be reported by column and row_id."""
    try:
        frame = pd.read_csv(path, dtype=object, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ScoringError(f"{path}: cannot read CSV ({exc})") from exc
    if ROW_ID not in frame.columns:
        raise ScoringError(f"{path}: missing '{ROW_ID}' column")
    if frame.empty:
        raise ScoringError(f"{path}: no rows")
    if len(frame.columns) < 2:
        raise ScoringError(f"{path}: no class columns besides '{ROW_ID}'")
    duplicated = frame[ROW_ID][frame[ROW_ID].duplicated()].unique()
    if len(duplicated):
        raise ScoringError(f"{path}: duplicate row_id values: {_examples(duplicated)}")
    return frame.set_index(ROW_ID)


def _to_numeric(raw: pd.DataFrame, path: str) -> pd.DataFrame:
    """Convert text cells to floats, rejecting non-numeric, empty, NaN and infinite values."""
    converted = {}
    for column in raw.columns:
        text = raw[column].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        missing = (text == "") | text.str.lower().isin(_NAN_SPELLINGS)
        non_numeric = values.isna() & ~missing
        if non_numeric.any():
            row_id = non_numeric.idxmax()
            raise ScoringError(
                f"{path}: non-numeric value {raw.at[row_id, column]!r} "
                f"in column '{column}' at row_id '{row_id}'"
            )
        not_finite = ~np.isfinite(values)
        if not_finite.any():
            row_id = not_finite.idxmax()
            raise ScoringError(
                f"{path}: NaN, empty or infinite value in column '{column}' at row_id '{row_id}'"
            )
        converted[column] = values.astype(float)
    return pd.DataFrame(converted, index=raw.index)


def _check_same(what: str, expected: Sequence[str], got: Sequence[str],
                describe: Callable[[str, list[str]], str], solution_path: str,
                submission_path: str) -> None:
    """Raises, naming both files, when the submission lacks or adds any of ``expected``."""
    expected_set, got_set = set(expected), set(got)
    missing = [name for name in expected if name not in got_set]
    extra = [name for name in got if name not in expected_set]
    parts = [describe(kind, names) for kind, names in (('missing', missing), ('extra', extra))
             if names]
    if parts:
        raise ScoringError(f"{submission_path}: {what} from solution {solution_path}: "
                           + "; ".join(parts))


def load_frames(solution_path: str, submission_path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read, validate and align both CSVs.

    Returns ``(solution, submission)`` indexed by ``row_id`` with only the class
    columns, the submission reordered to the solution's row and column order,
    so they can be passed straight to the metric functions.
    """
    solution_raw = _read_raw(solution_path)
    submission_raw = _read_raw(submission_path)

    _check_same('columns differ', list(solution_raw.columns), list(submission_raw.columns),
                lambda kind, names: f"{kind} columns {names}", solution_path, submission_path)
    _check_same('row_id set differs', list(solution_raw.index), list(submission_raw.index),
                lambda kind, names: (f"{len(names)} row_id {kind} "
                                     f"{'from' if kind == 'missing' else 'in'} submission "
                                     f"(e.g. {_examples(names)})"),
                solution_path, submission_path)

    solution = _to_numeric(solution_raw, solution_path)
    submission = _to_numeric(submission_raw, submission_path)

    non_binary = ~solution.isin([0.0, 1.0])
    if non_binary.to_numpy().any():
        column = non_binary.any().idxmax()
        row_id = non_binary[column].idxmax()
        raise ScoringError(
            f"{solution_path}: solution values must be 0 or 1; found "
            f"{solution_raw.at[row_id, column]!r} in column '{column}' at row_id '{row_id}'"
        )

    submission = submission.loc[solution.index, solution.columns]
    return solution.astype(int), submission


def _check_aligned(solution: pd.DataFrame, submission: pd.DataFrame) -> None:
    """Metric functions compare row-by-row, so a shape or column mismatch is a caller bug."""
    if solution.shape != submission.shape or list(solution.columns) != list(submission.columns):
        raise ValueError(
            "solution and submission must have the same class columns in the same order "
            f"and the same number of rows; got {solution.shape} and {submission.shape}"
        )


def _pad(solution: pd.DataFrame, submission: pd.DataFrame, padding_factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Append ``padding_factor`` all-1 rows to both, so no class lacks a positive."""
    _check_aligned(solution, submission)
    if padding_factor < 0:
        raise ValueError(f"padding_factor must be >= 0, got {padding_factor}")
    ones = np.ones((padding_factor, solution.shape[1]))
    return (
        np.vstack([solution.to_numpy(dtype=float), ones]),
        np.vstack([submission.to_numpy(dtype=float), ones]),
    )


def padded_cmap(solution: pd.DataFrame, submission: pd.DataFrame, padding_factor: int = 5) -> float:
    """BirdCLEF 2023 padded cmAP: macro average precision over all classes after padding."""
    y_true, y_score = _pad(solution, submission, padding_factor)
    return float(average_precision_score(y_true, y_score, average="macro"))


def padded_cmap_per_class(solution: pd.DataFrame, submission: pd.DataFrame, padding_factor: int = 5) -> pd.Series:
    """Per-class average precision on the padded data (its mean is ``padded_cmap``)."""
    y_true, y_score = _pad(solution, submission, padding_factor)
    scores = average_precision_score(y_true, y_score, average=None)
    return pd.Series(np.atleast_1d(scores), index=solution.columns, name="score", dtype=float)


def scored_classes(solution: pd.DataFrame) -> list[str]:
    """Classes ROC-AUC can score: those with at least one positive (AUC is undefined otherwise)."""
    return [c for c in solution.columns if solution[c].sum() > 0]


def _roc_inputs(solution: pd.DataFrame, submission: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the classes ROC-AUC is defined for, refusing inputs where it is defined for none."""
    _check_aligned(solution, submission)
    kept = scored_classes(solution)
    if not kept:
        raise ScoringError("solution: no class column has a positive label, so ROC-AUC is undefined")
    no_negative = [c for c in kept if (solution[c] == 0).sum() == 0]
    if no_negative:
        raise ScoringError(
            f"solution: ROC-AUC is undefined for classes with no negative label: {_examples(no_negative)}"
        )
    return solution[kept], submission[kept]


def roc_auc(solution: pd.DataFrame, submission: pd.DataFrame) -> float:
    """BirdCLEF 2024+ metric: macro ROC-AUC over classes with at least one positive."""
    y_true, y_score = _roc_inputs(solution, submission)
    return float(roc_auc_score(y_true.to_numpy(), y_score.to_numpy(dtype=float), average="macro"))


def roc_auc_per_class(solution: pd.DataFrame, submission: pd.DataFrame) -> pd.Series:
    """ROC-AUC of each class with at least one positive (its mean is ``roc_auc``)."""
    y_true, y_score = _roc_inputs(solution, submission)
    scores = roc_auc_score(y_true.to_numpy(), y_score.to_numpy(dtype=float), average=None)
    return pd.Series(np.atleast_1d(scores), index=y_true.columns, name="score", dtype=float)


def _metric_functions(
    metric: str, padding_factor: int
) -> tuple[Callable[[pd.DataFrame, pd.DataFrame], float], Callable[[pd.DataFrame, pd.DataFrame], pd.Series]]:
    """Resolve a metric name to its (overall, per-class) functions."""
    if metric == "padded_cmap":
        return (
            lambda sol, sub: padded_cmap(sol, sub, padding_factor),
            lambda sol, sub: padded_cmap_per_class(sol, sub, padding_factor),
        )
    if metric == "roc_auc":
        return roc_auc, roc_auc_per_class
    raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def score(solution: pd.DataFrame, submission: pd.DataFrame, metric: str = "padded_cmap", padding_factor: int = 5) -> float:
    """Score aligned class-column frames with the named metric."""
    overall, _ = _metric_functions(metric, padding_factor)
    return overall(solution, submission)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--solution", required=True, help="solution CSV: row_id then 0/1 label per class")
    parser.add_argument("--submission", required=True, help="submission CSV: row_id then a score per class")
    parser.add_argument("--metric", choices=METRICS, default="padded_cmap")
    parser.add_argument(
        "--padding_factor", type=_non_negative_int, default=5, help="all-1 rows appended for padded_cmap (default 5)"
    )
    parser.add_argument("--per_class", metavar="FILE", help="also write per-class scores as CSV 'class,score'")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: prints details then the score alone on the last line; returns 2 on bad input."""
    args = _parse_args(argv)
    try:
        solution, submission = load_frames(args.solution, args.submission)
        overall, per_class = _metric_functions(args.metric, args.padding_factor)
        value = overall(solution, submission)
        print(f"metric: {args.metric}" + (f" (padding_factor={args.padding_factor})" if args.metric == "padded_cmap" else ""))
        print(f"rows: {len(solution)}, classes: {solution.shape[1]}")
        if args.metric == "roc_auc":
            kept = set(scored_classes(solution))
            dropped = [c for c in solution.columns if c not in kept]
            print(f"dropped {len(dropped)} classes with no positive" + (f": {', '.join(dropped)}" if dropped else ""))
        if args.per_class:
            per_class(solution, submission).rename_axis("class").reset_index().to_csv(args.per_class, index=False)
            print(f"per-class scores written to {args.per_class}")
    except (ScoringError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{value:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
