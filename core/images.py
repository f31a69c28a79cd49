"""Decoding and checking user images: by their bytes, never by the client's content type.

Each format is decoded by whichever library is faster for it (measured: OpenCV for PNG, JPEG,
BMP and WebP, Pillow for GIF), after the same checks: the format by its magic number, the
pixel count from the header before any pixel is decoded, EXIF orientation, the first frame.
Where OpenCV would lose something Pillow keeps (a PNG's tRNS colour key or eXIf orientation)
or cannot read a file at all, Pillow decodes it.
"""

import hashlib
import io
import math
import struct
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from core.preprocessing import WORKING_SIDE, pixels_from_pil

# Formats we accept, by Pillow's name, with the content type we store and serve back.
ACCEPTED_FORMATS: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
}

# Magic numbers, checked before any decoder sees the bytes so that no other decoder is tried.
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
]

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # damaged files: our error

# What Pillow raises on bytes it cannot read as the image they claim to be.
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError)

# Decoding may stop at this longer side (JPEG only): preprocessing works at WORKING_SIDE.
DECODE_SIDE = WORKING_SIDE


class ImageError(ValueError):
    """A user image we cannot accept; `code` names the problem for the API reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedImage:
    # Upright (EXIF orientation applied), first frame, in OpenCV's layout: (H, W) grey,
    # (H, W, 2) grey + alpha, (H, W, 3) BGR or (H, W, 4) BGRA; uint8 or uint16 (16-bit PNG).
    # A big JPEG is decoded at a reduced scale (longer side >= DECODE_SIDE).
    image: np.ndarray
    format: str
    content_type: str
    width: int  # the picture's own size, upright, whatever scale it was decoded at
    height: int
    sha256: str


def _reduced_size(width: int, height: int, side: int) -> tuple[int, int]:
    """The size with the longer side brought down to `side` (never up), aspect kept."""
    scale = min(1.0, side / max(width, height))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def sniff_format(data: bytes) -> str | None:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def accepted_types() -> list[str]:
    return sorted(set(ACCEPTED_FORMATS.values()))


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    pillow: bool  # decode with Pillow: OpenCV would lose something, or is slower


def _png_header(data: bytes) -> _Header | None:
    """A PNG's size from its IHDR chunk, and whether it has a tRNS colour key (on a grey or
    RGB image; OpenCV keeps only a palette's) or eXIf orientation before its pixels."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    colour_type = data[25]
    position, pillow = 33, False
    while position + 8 <= len(data):  # the chunks before the first IDAT
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            break
        pillow |= kind == b"eXIf" or (kind == b"tRNS" and colour_type in (0, 2))
        position += 12 + length
    return _Header(width, height, pillow)


def _read_header(data: bytes, sniffed: str) -> _Header:
    """The picture's stored size, without decoding it. Raises what Pillow raises."""
    if sniffed == "PNG":
        header = _png_header(data)
        if header is None:
            raise SyntaxError("not a PNG file: no IHDR chunk")
        return header
    width, height = _open_header(data, sniffed).size
    return _Header(width, height, pillow=sniffed == "GIF")


def pixel_count(data: bytes) -> int | None:
    """width x height from the image's header, without decoding it (a PNG's IHDR, Pillow's
    lazy open for the others). None where there is no header to read, or Pillow refuses to
    open it at all (far past its bomb limit): either way `decode_image` refuses such bytes
    at once."""
    sniffed = sniff_format(data)
    if sniffed is None:
        return None
    try:
        header = _read_header(data, sniffed)
    except (*_UNREADABLE, struct.error, Image.DecompressionBombError):
        return None
    return header.width * header.height


def _open_header(data: bytes, sniffed: str) -> Image.Image:
    """Pillow's lazy open: the header is read, the pixels are not; only the sniffed decoder."""
    with warnings.catch_warnings():
        # Pillow warns before it raises on big images; the callers check the size themselves.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=[sniffed])


def decode_image(
    data: bytes, *, max_bytes: int, max_pixels: int, side: int = DECODE_SIDE
) -> DecodedImage:
    """Decode an uploaded image fully, or raise ImageError saying what is wrong with it. A big
    JPEG may be decoded at a reduced scale, its longer side still at least `side`."""
    if not data:
        raise ImageError("empty_image", "the image file is empty")
    if len(data) > max_bytes:
        raise ImageError(
            "image_too_large", f"the image is {len(data)} bytes; the limit is {max_bytes} bytes"
        )
    sniffed = sniff_format(data)
    if sniffed is None:
        raise ImageError(
            "unsupported_image",
            "the file is not a PNG, JPEG, WebP, BMP or GIF image (checked by its content)",
        )
    try:
        header = _read_header(data, sniffed)
        _check_size(header.width, header.height, max_pixels)
        pixels = None if header.pillow else _decode_opencv(data, sniffed, header, side)
        if pixels is None:  # Pillow's turn; it raises on what it cannot read either
            pixels = _decode_pillow(data, sniffed, header, side)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses to open an image far past its own limit before we see its size; its
        # message names that limit, not ours, so the reply states ours.
        raise ImageError(
            "image_too_many_pixels",
            f"the image has too many pixels to decode safely; the limit is {max_pixels} pixels",
        ) from exc
    except (*_UNREADABLE, struct.error) as exc:
        raise ImageError(
            "undecodable_image", f"the {sniffed} image could not be decoded: {exc}"
        ) from exc
    # The stored size is the picture's own, upright (EXIF orientations 5-8 swap the sides).
    width, height = header.width, header.height
    turned = width != height and (pixels.shape[0] > pixels.shape[1]) != (height > width)
    return DecodedImage(
        image=pixels,
        format=sniffed,
        content_type=ACCEPTED_FORMATS[sniffed],
        width=height if turned else width,
        height=width if turned else height,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            "image_too_many_pixels",
            f"the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {max_pixels} pixels",
        )
    if width == 0 or height == 0:
        raise ImageError("empty_image", "the image has no pixels")


# JPEG decodes straight at 1/2 .. 1/8 scale (DCT scaling): a phone photo costs a fraction of
# its full decode, and preprocessing would reduce it to this size anyway.
_JPEG_SCALES = ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4))
_JPEG_SCALES += ((2, cv2.IMREAD_REDUCED_GRAYSCALE_2),)


def _decode_opencv(data: bytes, sniffed: str, header: _Header, side: int) -> np.ndarray | None:
    """OpenCV's decode, None where it cannot read the bytes (then Pillow tries, and says why)."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if sniffed == "JPEG":
        # ANYCOLOR keeps a grey JPEG grey and applies the EXIF orientation.
        flags = cv2.IMREAD_ANYCOLOR
        longer = max(header.width, header.height)
        for denominator, reduced in _JPEG_SCALES:
            if longer / denominator >= side:
                flags |= reduced
                break
    else:
        flags = cv2.IMREAD_UNCHANGED  # alpha and 16 bits kept (no orientation outside JPEG)
    try:
        return cv2.imdecode(buffer, flags)
    except cv2.error:
        return None


def _decode_pillow(data: bytes, sniffed: str, header: _Header, side: int) -> np.ndarray:
    image = _open_header(data, sniffed)
    image.seek(0)  # the first frame of an animation
    if sniffed == "JPEG":
        image.draft(None, _reduced_size(header.width, header.height, side))
    image.load()
    return pixels_from_pil(ImageOps.exif_transpose(image))
