"""Rules about samples that need no database: which are kept for evaluation, how many copies
of each training sample an epoch sees, and the stored report's shape."""

import hashlib

from core.model_report import ModelReport
from domain.registry import BUNDLED_MODEL_DIR
from domain.samples import is_evaluation_sample, upload_copies


def test_about_a_tenth_of_samples_are_kept_for_evaluation_and_it_never_changes() -> None:
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    kept = [is_evaluation_sample(h) for h in hashes]
    assert 150 <= sum(kept) <= 250
    assert kept == [is_evaluation_sample(h) for h in hashes]


def test_samples_make_about_their_share_of_an_epoch() -> None:
    # 100 samples next to 30,000 NIST images at a 10% share: 33 copies (3,300 of 33,300).
    assert upload_copies(100, 30_000, share=0.1, max_copies=50) == 33
    assert upload_copies(1000, 30_000, share=0.1, max_copies=50) == 3  # 3.3 rounded


def test_a_few_samples_are_not_repeated_past_the_cap_and_none_gives_one() -> None:
    assert upload_copies(3, 30_000, share=0.1, max_copies=50) == 50
    assert upload_copies(0, 30_000, share=0.1, max_copies=50) == 1
    assert upload_copies(100_000, 30_000, share=0.1, max_copies=50) == 1


def test_the_bundled_report_has_the_stored_shape() -> None:
    report = ModelReport.model_validate_json((BUNDLED_MODEL_DIR / "report.json").read_text())
    assert report.metrics.test_accuracy == report.evaluation["test"].accuracy
    slice_name = report.metrics.holdout_slice
    assert slice_name and report.evaluation[f"holdout/{slice_name}"].images == 9120
