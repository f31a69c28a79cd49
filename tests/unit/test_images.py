"""The decode budget is an upper bound of what a decode really takes: for each way of decoding,
a fresh process decodes a 16-megapixel picture and its peak memory grows by no more than
`Header.decode_bytes()` says. A bound that is too low would let a picture past
MAX_DECODE_BYTES that costs more than the budget."""

import cv2
import numpy as np
import pytest
from PIL import Image

from core.images import Route, decode_image, read_header, sniff_format
from core.preprocessing import preprocess_image
from testkit.images import (
    decode_peak_bytes,
    decode_route_pictures,
    encode,
    flat_png,
    isoluminant,
)

SIDE = 4000  # 16 MP
PICTURES = decode_route_pictures(SIDE)
WARM_UPS = decode_route_pictures(64)  # the same kinds, small: the decoders' code mapped first


@pytest.mark.parametrize("name", list(PICTURES))
def test_a_decode_takes_no_more_memory_than_its_budget_says(name: str) -> None:
    data, route = PICTURES[name]
    header = read_header(data, sniff_format(data) or "")
    assert header.route == route
    grown = decode_peak_bytes(data, WARM_UPS[name][0])
    budget = header.decode_bytes()
    if name == "red on green PNG":  # flat in grey: decoded again in colour, counted as such
        budget = header.decode_bytes(Route.COLOUR_ALPHA)
    assert grown <= budget, (name, grown, budget)
    # The measurement sees the decode: a 16 MP picture takes at least a byte a pixel (a JPEG
    # decodes at 1/4 scale here, a sixteenth of that).
    assert grown >= header.width * header.height // header.scale**2, (name, grown)


def test_every_picture_becomes_8_bit_grey_the_way_it_looks() -> None:
    for name, (data, _) in PICTURES.items():
        grey = decode_image(data, max_bytes=10**9, max_pixels=10**9).image
        assert grey.dtype == np.uint8 and grey.ndim == 2, name


def test_a_picture_over_the_budget_is_refused_before_decoding_naming_the_limit() -> None:
    bomb = flat_png(7071, 7071, 16, 6)  # 0.4 MB on the wire, under the 50 MP limit
    assert len(bomb) < 500_000
    with pytest.raises(Exception) as refused:
        decode_image(bomb, max_bytes=10**7, max_pixels=50_000_000, max_decode_bytes=2**27)
    assert getattr(refused.value, "code", None) == "image_too_large"
    assert "16-bit RGBA PNG" in str(refused.value) and str(2**27) in str(refused.value)


def test_ink_and_paper_of_one_luminance_are_told_apart_by_their_colours() -> None:
    """Red on green of one luminance: the grey is flat (a person sees the character, the grey
    does not), so the picture is read in its most contrasted channel; the character is found."""
    ink = np.zeros((120, 90), np.uint8)
    cv2.line(ink, (45, 15), (45, 105), 255, 9)  # a "1"
    picture = isoluminant(ink)
    assert np.ptp(cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)) < 8  # flat in grey
    for fmt in (".png", ".jpg", ".bmp"):
        data = cv2.imencode(fmt, picture)[1].tobytes()
        decoded = decode_image(data, max_bytes=10**7, max_pixels=10**8).image
        assert np.ptp(decoded) > 128, fmt
        assert preprocess_image(decoded).any(), fmt
    # Over the limit for a colour decode, it is left as it is: no ink (not a refusal).
    data = cv2.imencode(".png", picture)[1].tobytes()
    grey_cost = read_header(data, "PNG").decode_bytes()  # the grey fits, the colour does not
    limits = {"max_bytes": 10**7, "max_pixels": 10**8, "max_decode_bytes": grey_cost}
    grey_only = decode_image(data, **limits).image
    assert np.ptp(grey_only) < 8


def test_a_picture_whose_grey_holds_its_character_decodes_to_that_grey() -> None:
    """Blue ink on white, black on grey, a blank page: the colour path never replaces them."""
    ink = np.zeros((120, 90), np.uint8)
    cv2.line(ink, (45, 15), (45, 105), 255, 9)
    share = ink.astype(np.float32)[..., np.newaxis] / 255
    pictures = {
        "blue on white": np.rint(255 + (np.array([200, 40, 0]) - 255) * share),
        "black on grey": np.rint(180 - 180 * share).repeat(3, axis=2),
        "blank": np.full((120, 90, 3), 200.0),
    }
    for name, picture in pictures.items():
        data = cv2.imencode(".png", picture.astype(np.uint8))[1].tobytes()
        expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        decoded = decode_image(data, max_bytes=10**7, max_pixels=10**8).image
        assert np.array_equal(decoded, expected), name


def test_an_alpha_channel_opaque_everywhere_leaves_the_grey_as_it_is() -> None:
    """The drawing board's canvas is an RGBA PNG, opaque everywhere: its grey is the picture's
    grey as it is (Pillow's, which decodes it), pixel for pixel; one transparent pixel and
    that pixel alone is composited (onto white or black, whichever the ink contrasts with)."""
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    as_is = np.asarray(Image.fromarray(rgb).convert("L"))
    rgba = np.dstack([rgb, np.full((40, 30), 255, np.uint8)])

    def grey(pixels: np.ndarray) -> np.ndarray:
        data = encode(Image.fromarray(pixels))
        return decode_image(data, max_bytes=10**6, max_pixels=10**6).image

    assert np.array_equal(grey(rgba), as_is)
    rgba[0, 0, 3] = 0
    composited = grey(rgba)
    assert composited[0, 0] in (0, 255)
    assert np.array_equal(composited.ravel()[1:], as_is.ravel()[1:])
