"""The decode budget is an upper bound of what a decode really takes: for each way of decoding,
a fresh process decodes a 16-megapixel picture and its peak memory grows by no more than
`Header.decode_bytes()` says. A bound that is too low would let a picture past
MAX_DECODE_BYTES that costs more than the budget."""

import numpy as np
import pytest

from core.images import decode_image, read_header, sniff_format
from testkit.images import decode_peak_bytes, decode_route_pictures, flat_png

SIDE = 4000  # 16 MP
PICTURES = decode_route_pictures(SIDE)


@pytest.mark.parametrize("name", list(PICTURES))
def test_a_decode_takes_no_more_memory_than_its_budget_says(name: str) -> None:
    data, route = PICTURES[name]
    header = read_header(data, sniff_format(data) or "")
    assert header.route == route
    grown = decode_peak_bytes(data)
    assert grown <= header.decode_bytes(), (name, grown, header.decode_bytes())
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
