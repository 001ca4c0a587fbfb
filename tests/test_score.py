"""Tests for pipeline.score: metrics against direct sklearn calls, validation, and the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.score import (  # noqa: E402
    ScoringError,
    load_frames,
    main,
    padded_cmap,
    padded_cmap_per_class,
    roc_auc,
    roc_auc_per_class,
    score,
)

CLASSES = ["abethr1", "abhori1", "abythr1", "afbfly1", "afdfly1"]


def make_frames(seed: int, n_rows: int = 40, classes: list[str] = CLASSES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random labels (every class has a positive and a negative) and random scores."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n_rows, len(classes)))
    labels[0, :] = 1
    labels[1, :] = 0
    index = pd.Index([f"soundscape_{seed}_{i * 5}" for i in range(n_rows)], name="row_id")
    solution = pd.DataFrame(labels, index=index, columns=classes)
    submission = pd.DataFrame(rng.random((n_rows, len(classes))), index=index, columns=classes)
    return solution, submission


def sklearn_padded_cmap(solution: pd.DataFrame, submission: pd.DataFrame, padding_factor: int = 5) -> float:
    """The Kaggle BirdCLEF 2023 reference formulation, written independently."""
    pad = pd.DataFrame(np.ones((padding_factor, solution.shape[1])), columns=solution.columns)
    return average_precision_score(
        pd.concat([solution, pad]).to_numpy(), pd.concat([submission, pad]).to_numpy(), average="macro"
    )


def write_csvs(tmp_path: Path, solution: pd.DataFrame, submission: pd.DataFrame) -> tuple[str, str]:
    sol_path, sub_path = tmp_path / "solution.csv", tmp_path / "submission.csv"
    solution.reset_index().to_csv(sol_path, index=False)
    submission.reset_index().to_csv(sub_path, index=False)
    return str(sol_path), str(sub_path)


def write_text(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- metrics against sklearn -------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("padding_factor", [0, 1, 5])
def test_padded_cmap_matches_sklearn(seed: int, padding_factor: int) -> None:
    solution, submission = make_frames(seed)
    expected = sklearn_padded_cmap(solution, submission, padding_factor)
    assert padded_cmap(solution, submission, padding_factor) == pytest.approx(expected, abs=1e-12)
    assert score(solution, submission, "padded_cmap", padding_factor) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_padded_cmap_per_class_matches_sklearn(seed: int) -> None:
    solution, submission = make_frames(seed)
    per_class = padded_cmap_per_class(solution, submission)
    ones = np.ones(5)
    for cls in CLASSES:
        expected = average_precision_score(
            np.r_[solution[cls].to_numpy(), ones], np.r_[submission[cls].to_numpy(), ones]
        )
        assert per_class[cls] == pytest.approx(expected, abs=1e-12)
    assert list(per_class.index) == CLASSES
    assert per_class.mean() == pytest.approx(padded_cmap(solution, submission), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn(seed: int) -> None:
    solution, submission = make_frames(seed)
    expected = roc_auc_score(solution.to_numpy(), submission.to_numpy(), average="macro")
    assert roc_auc(solution, submission) == pytest.approx(expected, abs=1e-12)
    assert score(solution, submission, "roc_auc") == pytest.approx(expected, abs=1e-12)
    per_class = roc_auc_per_class(solution, submission)
    for cls in CLASSES:
        assert per_class[cls] == pytest.approx(roc_auc_score(solution[cls], submission[cls]), abs=1e-12)


def test_class_with_no_positives_counts_in_padded_cmap_but_is_dropped_by_roc_auc() -> None:
    solution, submission = make_frames(7)
    solution["abythr1"] = 0
    per_class = padded_cmap_per_class(solution, submission)
    assert "abythr1" in per_class.index and len(per_class) == len(CLASSES)
    assert padded_cmap(solution, submission) == pytest.approx(sklearn_padded_cmap(solution, submission), abs=1e-12)

    kept = [c for c in CLASSES if c != "abythr1"]
    auc = roc_auc_per_class(solution, submission)
    assert list(auc.index) == kept
    expected = roc_auc_score(solution[kept].to_numpy(), submission[kept].to_numpy(), average="macro")
    assert roc_auc(solution, submission) == pytest.approx(expected, abs=1e-12)


def test_all_zero_solution_padded_cmap_is_defined_and_roc_auc_errors() -> None:
    solution, submission = make_frames(3)
    solution[:] = 0
    value = padded_cmap(solution, submission)
    assert value == pytest.approx(sklearn_padded_cmap(solution, submission), abs=1e-12)
    assert 0 < value <= 1
    with pytest.raises(ScoringError, match="no class column has a positive"):
        roc_auc(solution, submission)
    with pytest.raises(ScoringError, match="no class column has a positive"):
        roc_auc_per_class(solution, submission)


def test_ties_in_scores_match_sklearn() -> None:
    solution, _ = make_frames(11)
    rng = np.random.default_rng(11)
    tied = pd.DataFrame(
        rng.choice([0.0, 0.5, 1.0], size=solution.shape), index=solution.index, columns=solution.columns
    )
    assert padded_cmap(solution, tied) == pytest.approx(sklearn_padded_cmap(solution, tied), abs=1e-12)
    assert roc_auc(solution, tied) == pytest.approx(
        roc_auc_score(solution.to_numpy(), tied.to_numpy(), average="macro"), abs=1e-12
    )
    constant = tied * 0 + 0.3
    assert roc_auc(solution, constant) == pytest.approx(0.5)


def test_perfect_submission_scores_one_and_reversed_scores_low() -> None:
    solution, _ = make_frames(5)
    perfect = solution.astype(float)
    reversed_ = 1.0 - perfect
    assert padded_cmap(solution, perfect) == pytest.approx(1.0)
    assert roc_auc(solution, perfect) == pytest.approx(1.0)
    assert roc_auc(solution, reversed_) == pytest.approx(0.0)
    assert padded_cmap(solution, reversed_, padding_factor=0) < 0.7
    assert padded_cmap(solution, reversed_) < padded_cmap(solution, perfect)


def test_metric_functions_reject_misaligned_frames_and_unknown_metric() -> None:
    solution, submission = make_frames(0)
    with pytest.raises(ValueError, match="same class columns"):
        padded_cmap(solution, submission[CLASSES[::-1]])
    with pytest.raises(ValueError, match="same class columns"):
        roc_auc(solution, submission.iloc[:-1])
    with pytest.raises(ValueError, match="unknown metric"):
        score(solution, submission, metric="f1")


# --- loading and alignment ---------------------------------------------------


@pytest.mark.parametrize("metric", ["padded_cmap", "roc_auc"])
def test_shuffled_rows_and_columns_give_same_score(tmp_path: Path, metric: str) -> None:
    solution, submission = make_frames(2)
    shuffled = submission.sample(frac=1, random_state=0)[CLASSES[::-1]]
    assert list(shuffled.index) != list(submission.index)
    sol_path, sub_path = write_csvs(tmp_path, solution, shuffled)
    loaded_sol, loaded_sub = load_frames(sol_path, sub_path)
    assert list(loaded_sub.index) == list(solution.index)
    assert list(loaded_sub.columns) == CLASSES
    np.testing.assert_allclose(loaded_sub.to_numpy(), submission.to_numpy())
    assert score(loaded_sol, loaded_sub, metric) == pytest.approx(score(solution, submission, metric), abs=1e-12)


def test_row_ids_are_compared_as_text(tmp_path: Path) -> None:
    sol = write_text(tmp_path, "sol.csv", "row_id,a\n007,1\n7,0\n")
    sub = write_text(tmp_path, "sub.csv", "row_id,a\n7,0.2\n007,0.9\n")
    solution, submission = load_frames(sol, sub)
    assert list(solution.index) == ["007", "7"]
    assert list(submission["a"]) == [0.9, 0.2]


HEADER = "row_id,a,b\n"
GOOD_SOLUTION = HEADER + "r1,1,0\nr2,0,1\nr3,1,1\n"
GOOD_SUBMISSION = HEADER + "r1,0.9,0.1\nr2,0.2,0.8\nr3,0.7,0.6\n"


@pytest.mark.parametrize(
    "solution_text, submission_text, bad_file, expected",
    [
        (
            GOOD_SOLUTION,
            HEADER + "r1,0.9,0.1\nr2,0.2,0.8\nr4,0.7,0.6\nr5,0.1,0.1\n",
            "sub",
            r"1 row_id missing from submission \(e.g. 'r3'\); 2 row_id extra in submission \(e.g. 'r4', 'r5'\)",
        ),
        (GOOD_SOLUTION, "row_id,a\nr1,0.9\nr2,0.2\nr3,0.7\n", "sub", r"missing columns \['b'\]"),
        (GOOD_SOLUTION, "row_id,a,b,c\nr1,0.9,0.1,0\nr2,0.2,0.8,0\nr3,0.7,0.6,0\n", "sub", r"extra columns \['c'\]"),
        (GOOD_SOLUTION, HEADER + "r1,0.9,0.1\nr2,high,0.8\nr3,0.7,0.6\n", "sub",
         r"non-numeric value 'high' in column 'a' at row_id 'r2'"),
        (GOOD_SOLUTION, HEADER + "r1,0.9,0.1\nr2,0.2,0.8\nr3,0.7,NaN\n", "sub",
         r"NaN, empty or infinite value in column 'b' at row_id 'r3'"),
        (GOOD_SOLUTION, HEADER + "r1,0.9,\nr2,0.2,0.8\nr3,0.7,0.6\n", "sub",
         r"NaN, empty or infinite value in column 'b' at row_id 'r1'"),
        (GOOD_SOLUTION, HEADER + "r1,0.9,0.1\nr2,0.2,0.8\nr2,0.7,0.6\n", "sub", r"duplicate row_id values: 'r2'"),
        (GOOD_SOLUTION, "id,a,b\nr1,0.9,0.1\nr2,0.2,0.8\nr3,0.7,0.6\n", "sub", r"missing 'row_id' column"),
        (HEADER + "r1,1,0\nr2,0,2\nr3,1,1\n", GOOD_SUBMISSION, "sol",
         r"solution values must be 0 or 1; found '2' in column 'b' at row_id 'r2'"),
        (HEADER + "r1,1,0\nr1,0,1\nr3,1,1\n", GOOD_SUBMISSION, "sol", r"duplicate row_id values: 'r1'"),
        (HEADER + "r1,1,0\nr2,0,1\nr3,yes,1\n", GOOD_SUBMISSION, "sol",
         r"non-numeric value 'yes' in column 'a' at row_id 'r3'"),
    ],
    ids=[
        "row_id_sets_differ", "missing_column", "extra_column", "non_numeric", "nan", "empty",
        "duplicate_row_id", "missing_row_id_column", "non_binary_solution", "duplicate_solution_row_id",
        "non_numeric_solution",
    ],
)
def test_validation_errors(
    tmp_path: Path, solution_text: str, submission_text: str, bad_file: str, expected: str
) -> None:
    sol = write_text(tmp_path, "sol.csv", solution_text)
    sub = write_text(tmp_path, "sub.csv", submission_text)
    with pytest.raises(ScoringError, match=expected) as info:
        load_frames(sol, sub)
    assert str(info.value).startswith(sol if bad_file == "sol" else sub)


def test_good_files_load(tmp_path: Path) -> None:
    sol = write_text(tmp_path, "sol.csv", GOOD_SOLUTION)
    sub = write_text(tmp_path, "sub.csv", GOOD_SUBMISSION)
    solution, submission = load_frames(sol, sub)
    assert solution.to_numpy().tolist() == [[1, 0], [0, 1], [1, 1]]
    assert submission.to_numpy().tolist() == [[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]]


def test_missing_file_is_a_scoring_error(tmp_path: Path) -> None:
    sub = write_text(tmp_path, "sub.csv", GOOD_SUBMISSION)
    with pytest.raises(ScoringError, match="cannot read CSV"):
        load_frames(str(tmp_path / "nope.csv"), sub)


# --- CLI -----------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["padded_cmap", "roc_auc"])
def test_cli_prints_score_last_and_writes_per_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], metric: str
) -> None:
    solution, submission = make_frames(4)
    solution["afbfly1"] = 0
    sol_path, sub_path = write_csvs(tmp_path, solution, submission.sample(frac=1, random_state=1))
    per_class_path = tmp_path / "per_class.csv"

    rc = main(["--solution", sol_path, "--submission", sub_path, "--metric", metric,
               "--per_class", str(per_class_path)])

    out = capsys.readouterr().out
    assert rc == 0
    expected = score(solution, submission, metric)
    assert float(out.splitlines()[-1]) == pytest.approx(expected, abs=5e-7)

    written = pd.read_csv(per_class_path)
    assert list(written.columns) == ["class", "score"]
    if metric == "padded_cmap":
        reference = padded_cmap_per_class(solution, submission)
    else:
        reference = roc_auc_per_class(solution, submission)
        assert "dropped 1 classes with no positive: afbfly1" in out
    assert list(written["class"]) == list(reference.index)
    np.testing.assert_allclose(written["score"].to_numpy(), reference.to_numpy(), atol=1e-12)


def test_cli_padding_factor_changes_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solution, submission = make_frames(9)
    sol_path, sub_path = write_csvs(tmp_path, solution, submission)
    assert main(["--solution", sol_path, "--submission", sub_path, "--padding_factor", "0"]) == 0
    value = float(capsys.readouterr().out.splitlines()[-1])
    assert value == pytest.approx(padded_cmap(solution, submission, padding_factor=0), abs=5e-7)
    assert value != pytest.approx(padded_cmap(solution, submission, padding_factor=5), abs=5e-7)


def test_cli_bad_file_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sol = write_text(tmp_path, "sol.csv", GOOD_SOLUTION)
    sub = write_text(tmp_path, "sub.csv", "row_id,a\nr1,0.9\nr2,0.2\nr3,0.7\n")
    rc = main(["--solution", sol, "--submission", sub])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.startswith("error: ")
    assert "missing columns ['b']" in captured.err and sub in captured.err
    assert captured.out == ""


def test_cli_roc_auc_without_positives_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sol = write_text(tmp_path, "sol.csv", HEADER + "r1,0,0\nr2,0,0\n")
    sub = write_text(tmp_path, "sub.csv", HEADER + "r1,0.1,0.2\nr2,0.3,0.4\n")
    assert main(["--solution", sol, "--submission", sub, "--metric", "roc_auc"]) == 2
    assert "no class column has a positive" in capsys.readouterr().err
