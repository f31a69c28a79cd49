"""Rules about samples that need no database: which are kept for evaluation, how many copies
of each training sample an epoch sees, and the stored report's shape."""

import io

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.images import decode_image
from core.model_report import ModelReport
from domain.registry import BUNDLED_MODEL_DIR
from domain.samples import is_evaluation_sample, pixel_fingerprint, upload_copies

KEY = b"k" * 32


def pictures(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(count)]


def png_with_text(pixels: np.ndarray, text: str, compress_level: int = 6) -> bytes:
    """The same pixels, saved with a tEXt chunk of the uploader's choosing."""
    info = PngInfo()
    info.add_text("Comment", text)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", pnginfo=info, compress_level=compress_level)
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return decode_image(data, max_bytes=len(data), max_pixels=10**6).image


def test_about_a_tenth_of_samples_are_kept_for_evaluation_and_it_never_changes() -> None:
    images = pictures(2000)
    kept = [is_evaluation_sample(image, KEY) for image in images]
    assert 150 <= sum(kept) <= 250
    assert kept == [is_evaluation_sample(image, KEY) for image in images]


def test_re_encodings_of_one_picture_land_on_the_same_side() -> None:
    # The attack: re-save with a changing PNG text chunk until the flag flips.
    for pixels in pictures(20, seed=1):
        encodings = [png_with_text(pixels, f"try {n}", compress_level=n % 10) for n in range(30)]
        assert len(set(encodings)) == 30  # 30 distinct uploads (distinct sha256)
        sides = {is_evaluation_sample(decoded(data), KEY) for data in encodings}
        assert len(sides) == 1
        bmp = io.BytesIO()
        Image.fromarray(pixels).save(bmp, "BMP")
        assert pixel_fingerprint(decoded(bmp.getvalue())) == pixel_fingerprint(pixels)


def test_the_side_depends_on_the_key_so_it_cannot_be_predicted_without_it() -> None:
    images = pictures(300, seed=2)
    ours = [is_evaluation_sample(image, KEY) for image in images]
    theirs = [is_evaluation_sample(image, b"a guess") for image in images]
    assert ours != theirs
    assert 10 <= sum(theirs) <= 60  # any key keeps about a tenth


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
