"""The same picture in other files: what an uploader can do to one picture to re-roll which side
(training or evaluation) it lands on. Lossless re-encodings must land where the picture did,
and JPEG's noise rarely moves it (domain/samples.py: pixel_fingerprint).

    from testkit.reencode import REENCODINGS, side_flips
"""

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.images import decode_image


def _png(grey: np.ndarray) -> bytes:
    return cv2.imencode(".png", grey)[1].tobytes()


def _png16(grey: np.ndarray) -> bytes:
    return cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes()


def _rgba(grey: np.ndarray) -> bytes:
    opaque = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    return cv2.imencode(".png", opaque)[1].tobytes()


def _text_chunk(grey: np.ndarray) -> bytes:
    out = io.BytesIO()
    info = PngInfo()
    info.add_text("Comment", "another try")
    Image.fromarray(grey).save(out, "PNG", pnginfo=info, compress_level=1)
    return out.getvalue()


def _webp(grey: np.ndarray) -> bytes:
    return cv2.imencode(".webp", grey, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()


def _bmp(grey: np.ndarray) -> bytes:
    return cv2.imencode(".bmp", cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))[1].tobytes()


def _jpeg(quality: int) -> Callable[[np.ndarray], bytes]:
    return lambda grey: cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


# name -> (encoder, lossless)
REENCODINGS: dict[str, tuple[Callable[[np.ndarray], bytes], bool]] = {
    "16-bit PNG": (_png16, True),
    "RGBA PNG": (_rgba, True),
    "PNG, text chunk": (_text_chunk, True),
    "WebP lossless": (_webp, True),
    "BMP": (_bmp, True),
    "JPEG q95": (_jpeg(95), False),
    "JPEG q80": (_jpeg(80), False),
}


def grey_of(data: bytes) -> np.ndarray:
    return decode_image(data, max_bytes=len(data), max_pixels=10**9).image


@dataclass(frozen=True)
class Flips:
    pictures: int
    flipped: dict[str, int]  # per re-encoding
    same_pixels: dict[str, int]  # decoded to the very same pixels (the same sample)
    evaluation: int  # pictures on the evaluation side


def side_flips(pictures: list[bytes], sides: Sequence[Callable[[np.ndarray], bool]]) -> list[Flips]:
    """For each of `sides` (grey -> bool), how many pictures each re-encoding moves to the
    other side. Each picture is re-encoded and decoded once, whatever the number of sides."""
    flipped = [dict.fromkeys(REENCODINGS, 0) for _ in sides]
    same = dict.fromkeys(REENCODINGS, 0)
    evaluation = [0 for _ in sides]
    for data in pictures:
        grey = grey_of(_png(grey_of(data)))  # the picture as the service first stores it
        ours = [side(grey) for side in sides]
        evaluation = [total + here for total, here in zip(evaluation, ours, strict=True)]
        digest = hashlib.sha256(grey.tobytes()).digest()
        for name, (encode, _) in REENCODINGS.items():
            again = grey_of(encode(grey))
            for i, side in enumerate(sides):
                flipped[i][name] += side(again) != ours[i]
            same[name] += (
                again.shape == grey.shape and hashlib.sha256(again.tobytes()).digest() == digest
            )
    return [
        Flips(len(pictures), moved, same, total)
        for moved, total in zip(flipped, evaluation, strict=True)
    ]
