"""Decoding and checking user images: by their bytes, never by the client's content type."""

import hashlib
import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from core.preprocessing import WORKING_SIDE

# Formats we accept, by Pillow's name, with the content type we store and serve back.
ACCEPTED_FORMATS: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "GIF": "image/gif",
}

# Magic numbers, checked before Pillow sees the bytes so that no other decoder is tried.
_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
]


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
    image: Image.Image  # upright (EXIF orientation applied), first frame, fully loaded;
    # a big JPEG is decoded at a reduced scale (longer side >= DECODE_SIDE)
    format: str
    content_type: str
    width: int
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


def pixel_count(data: bytes) -> int | None:
    """width x height from the image's header, without decoding it. None where there is no
    header to read, or Pillow refuses to open it at all (far past its bomb limit): either
    way `decode_image` refuses such bytes at once."""
    sniffed = sniff_format(data)
    if sniffed is None:
        return None
    try:
        width, height = _open_header(data, sniffed).size
    except (*_UNREADABLE, Image.DecompressionBombError):
        return None
    return width * height


def _open_header(data: bytes, sniffed: str) -> Image.Image:
    """Pillow's lazy open: the header is read, the pixels are not; only the sniffed decoder."""
    with warnings.catch_warnings():
        # Pillow warns before it raises on big images; the callers check the size themselves.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=[sniffed])


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode an uploaded image fully, or raise ImageError saying what is wrong with it."""
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
        image = _open_header(data, sniffed)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                "image_too_many_pixels",
                f"the image is {width}x{height} = {width * height} pixels; "
                f"the limit is {max_pixels} pixels",
            )
        if width == 0 or height == 0:
            raise ImageError("empty_image", "the image has no pixels")
        image.seek(0)  # the first frame of an animation
        if sniffed == "JPEG":
            # JPEG can decode straight at 1/2 .. 1/8 scale (DCT scaling): a phone photo
            # costs a fraction of its full decode, and preprocessing would reduce it to
            # this size anyway. The whole stream is still decoded, so damage still fails.
            image.draft(None, _reduced_size(width, height, DECODE_SIDE))
        drafted = image.size
        image.load()
        upright = ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses to open an image far past its own limit before we see its size; its
        # message names that limit, not ours, so the reply states ours.
        raise ImageError(
            "image_too_many_pixels",
            f"the image has too many pixels to decode safely; the limit is {max_pixels} pixels",
        ) from exc
    except _UNREADABLE as exc:
        raise ImageError(
            "undecodable_image", f"the {sniffed} image could not be decoded: {exc}"
        ) from exc
    # The stored size is the picture's own, upright (EXIF orientations 5-8 swap the sides).
    swapped = upright.size != drafted
    return DecodedImage(
        image=upright,
        format=sniffed,
        content_type=ACCEPTED_FORMATS[sniffed],
        width=height if swapped else width,
        height=width if swapped else height,
        sha256=hashlib.sha256(data).hexdigest(),
    )
