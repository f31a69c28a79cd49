"""Decoding and checking user images: by their bytes, never by the client's content type.

Every picture becomes 8-bit grey (H, W) as early as its decoder allows: 16-bit samples are
stripped and colour converted inside libpng / libjpeg row by row (OpenCV's IMREAD_GRAYSCALE),
a transparent picture is composited on the background its ink contrasts with. A picture whose
grey is flat though its colours are not (ink and paper of one luminance) is decoded again in
colour and kept as its most contrasted channel. Nothing after the decoder (preprocessing,
fingerprints, readings) ever sees colour, alpha or 16 bits.

What a decode may cost is checked before it starts, in bytes, not pixels: the header gives
the size and the pixel format, and each way of decoding has a measured cost per pixel
(`DECODE_BYTES_PER_PIXEL`, an upper bound checked by tests/unit/test_images.py). A picture
over `max_decode_bytes` is refused (413 `image_too_large`) before one pixel is decoded. Only
the first frame of an animation is decoded; a big JPEG decodes at 1/2..1/8 scale straight
from its DCT coefficients.
"""

import hashlib
import io
import math
import struct
import warnings
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np
from PIL import Image, ImageOps

from core.errors import CodedError
from core.preprocessing import WORKING_SIDE

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


class Route(Enum):
    """How a picture is decoded into 8-bit grey, chosen from its header."""

    GREY = "grey"  # OpenCV straight into 8-bit grey (libpng/libjpeg convert row by row)
    COLOUR_ALPHA = "colour_alpha"  # OpenCV keeps alpha (WebP, BMP); composited here
    PILLOW = "pillow"  # transparency, a colour key, EXIF in a PNG, GIF: Pillow, then composited


# Peak bytes a decode allocates per pixel of the picture (as decoded: a JPEG's reduced size),
# decoder, conversion to 8-bit grey and the pixels' hash together: the growth of ru_maxrss
# of a fresh process decoding a 16 MP picture (tests/unit/test_images.py checks each bound),
# rounded up: grey PNG/BMP 2.1, JPEG 3.8 (libjpeg's buffers, on a decoded size 1/16 of the
# picture's), RGBA WebP through OpenCV 8.1, RGBA PNG through Pillow 6.2 (16-bit too: Pillow
# reduces it to 8 bits while decoding), a GIF with transparency 7.0.
DECODE_BYTES_PER_PIXEL = {Route.GREY: 3, Route.COLOUR_ALPHA: 9, Route.PILLOW: 8}
DECODE_OVERHEAD_BYTES = 8 * 1024 * 1024  # a decoder's fixed buffers, whatever the size


class ImageError(CodedError):
    """A user image we cannot accept; `code` names the problem for the API reply."""


def require_ink(glyph: np.ndarray) -> np.ndarray:
    """The model's input, or ImageError `no_ink` when the preprocessing found no ink in the
    picture (it gives all zeros): a blank picture is never answered with a character."""
    if not glyph.any():
        raise ImageError("no_ink", "no ink was found in the picture: there is nothing to read")
    return glyph


@dataclass(frozen=True)
class DecodedImage:
    # Upright (EXIF orientation applied), first frame, 8-bit grey (H, W), transparency
    # composited. A big JPEG is decoded at a reduced scale (longer side >= DECODE_SIDE).
    image: np.ndarray
    format: str
    content_type: str
    width: int  # the picture's own size, upright, whatever scale it was decoded at
    height: int
    sha256: str  # of the file's bytes

    @property
    def pixels_sha256(self) -> str:
        """Of the decoded grey pixels and their shape: the same for re-encodings of one
        picture that lose nothing (another container, bit depth, alpha, metadata)."""
        digest = hashlib.sha256(f"{self.image.shape[0]}x{self.image.shape[1]}:".encode())
        digest.update(np.ascontiguousarray(self.image).data)
        return digest.hexdigest()


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
class Header:
    """What the header says, before any pixel is decoded."""

    width: int
    height: int
    route: Route
    description: str  # the pixel format in words, for a refusal ("16-bit RGBA PNG")
    scale: int = 1  # a JPEG decodes at 1/scale

    def decode_bytes(self, route: "Route | None" = None) -> int:
        """What decoding it may take, by its own route (or another: a colour decode's)."""
        decoded = math.ceil(self.width / self.scale) * math.ceil(self.height / self.scale)
        return decoded * DECODE_BYTES_PER_PIXEL[route or self.route] + DECODE_OVERHEAD_BYTES


_PNG_COLOURS = {0: "grey", 2: "RGB", 3: "palette", 4: "grey + alpha", 6: "RGBA"}


def _png_header(data: bytes) -> Header:
    """A PNG's size and pixel format from its IHDR chunk, and the chunks before its pixels
    that decide the route: tRNS (a colour key: transparency), eXIf (orientation)."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise SyntaxError("not a PNG file: no IHDR chunk")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    position, transparent, exif = 33, colour in (4, 6), False
    while position + 8 <= len(data):  # the chunks before the first IDAT
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            break
        transparent |= kind == b"tRNS"
        exif |= kind == b"eXIf"
        position += 12 + length
    route = Route.PILLOW if transparent or exif else Route.GREY
    described = f"{depth}-bit {_PNG_COLOURS.get(colour, 'unknown')} PNG"
    return Header(width, height, route, described)


# JPEG decodes straight at 1/2 .. 1/8 scale (DCT scaling): a phone photo costs a fraction of
# its full decode, and preprocessing would reduce it to this size anyway.
_JPEG_FLAGS = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def _jpeg_scale(width: int, height: int, side: int) -> int:
    """The largest DCT scale that keeps the longer side at least `side`."""
    longer = max(width, height)
    return next(s for s in (8, 4, 2, 1) if s == 1 or longer / s >= side)


def read_header(data: bytes, sniffed: str, side: int = DECODE_SIDE) -> Header:
    """The picture's stored size and how it will be decoded, without decoding it. Raises what
    Pillow raises on a header it cannot read."""
    if sniffed == "PNG":
        return _png_header(data)
    image = _open_header(data, sniffed)
    width, height = image.size
    alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    described = f"{image.mode} {sniffed}"
    if sniffed == "JPEG":
        return Header(width, height, Route.GREY, described, _jpeg_scale(width, height, side))
    if sniffed == "GIF":
        return Header(width, height, Route.PILLOW, described)
    return Header(width, height, Route.COLOUR_ALPHA if alpha else Route.GREY, described)


def _open_header(data: bytes, sniffed: str) -> Image.Image:
    """Pillow's lazy open: the header is read, the pixels are not; only the sniffed decoder."""
    with warnings.catch_warnings():
        # Pillow warns before it raises on big images; the callers check the size themselves.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=[sniffed])


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    max_decode_bytes: int | None = None,
    side: int = DECODE_SIDE,
) -> DecodedImage:
    """Decode an uploaded image into 8-bit grey, or raise ImageError saying what is wrong with
    it. A big JPEG may be decoded at a reduced scale, its longer side still at least `side`.
    `max_decode_bytes`: refuse a picture whose decode would allocate more (None: no limit, for
    pictures accepted before)."""
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
        header = read_header(data, sniffed, side)
        _check_size(header, max_pixels, max_decode_bytes)
        pixels = None if header.route is Route.PILLOW else _decode_opencv(data, header)
        if pixels is not None and _flat_in_grey(pixels, header, max_decode_bytes):
            pixels = None  # freed before the colour decode
            pixels = _most_contrasted_channel(data, header)
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


# A grey picture whose darkest and brightest pixels are closer than this (of 255) holds no
# character in its luminance; its colours may still (ink and paper of one luminance). Whole
# pictures, no reduction: nothing is allocated to tell, and a thin stroke is not averaged
# away (a noisy picture is never taken for flat, so it keeps its grey).
_FLAT_SPREAD = 16
_COLOUR_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def _spread(grey: np.ndarray) -> int:
    low, high = cv2.minMaxLoc(grey)[:2]
    return int(high - low)


def _flat_in_grey(grey: np.ndarray, header: Header, max_decode_bytes: int | None) -> bool:
    """Ink and paper of one luminance (red on green, blue on grey) leave the grey flat though a
    person sees the character: such a picture is decoded again in colour, when that decode
    fits the limit too."""
    if header.route is not Route.GREY or _spread(grey) >= _FLAT_SPREAD:
        return False
    colour = header.decode_bytes(Route.COLOUR_ALPHA)  # the colour route's budget
    return max_decode_bytes is None or colour <= max_decode_bytes


def _most_contrasted_channel(data: bytes, header: Header) -> np.ndarray | None:
    """The picture decoded in colour (the grey freed before: its peak is the colour route's),
    as its channel of the widest spread where that is wider than the grey's; else its grey.
    None where OpenCV cannot decode it in colour."""
    try:
        colour = cv2.imdecode(np.frombuffer(data, np.uint8), _COLOUR_FLAGS[header.scale])
    except cv2.error:
        return None
    if colour is None or colour.ndim != 3:
        return colour
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    pixels = colour.reshape(-1, colour.shape[2])  # a view: the reductions allocate nothing big
    spreads = pixels.max(axis=0).astype(np.int16) - pixels.min(axis=0)
    best = int(np.argmax(spreads))
    if spreads[best] < max(_FLAT_SPREAD, 2 * _spread(grey)):  # no more in colour than in grey
        return grey
    return np.ascontiguousarray(colour[:, :, best])


def _check_size(header: Header, max_pixels: int, max_decode_bytes: int | None) -> None:
    width, height = header.width, header.height
    if width * height > max_pixels:
        raise ImageError(
            "image_too_many_pixels",
            f"the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {max_pixels} pixels",
        )
    if width == 0 or height == 0:
        raise ImageError("empty_image", "the image has no pixels")
    cost = header.decode_bytes()
    if max_decode_bytes is not None and cost > max_decode_bytes:
        raise ImageError(
            "image_too_large",
            f"decoding this {width}x{height} {header.description} would take {cost} bytes of "
            f"memory; the limit is {max_decode_bytes} bytes (a picture without transparency "
            f"costs {DECODE_BYTES_PER_PIXEL[Route.GREY]} bytes a pixel, one with transparency "
            f"{DECODE_BYTES_PER_PIXEL[Route.PILLOW]})",
        )


def _decode_opencv(data: bytes, header: Header) -> np.ndarray | None:
    """OpenCV's decode into 8-bit grey, None where it cannot read the bytes (then Pillow
    tries, and says why). JPEG: EXIF orientation applied, reduced scale."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    if header.route is Route.COLOUR_ALPHA:
        try:  # the decoded BGRA is referenced only inside _composite_bgra: freed there
            return _composite_bgra(cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED))
        except cv2.error:
            return None
    flags = _JPEG_FLAGS[header.scale] if header.scale > 1 else cv2.IMREAD_GRAYSCALE
    try:
        return cv2.imdecode(buffer, flags)
    except cv2.error:
        return None


def _composite_bgra(pixels: np.ndarray | None) -> np.ndarray | None:
    """An 8-bit picture OpenCV decoded with its alpha (BGRA) as composited 8-bit grey."""
    if pixels is None or pixels.ndim == 2:
        return pixels
    if pixels.shape[2] != 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    grey = cv2.cvtColor(pixels, cv2.COLOR_BGRA2GRAY)
    alpha = np.ascontiguousarray(pixels[:, :, 3])
    del pixels
    return composite(grey, alpha)


def composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """8-bit grey + alpha -> 8-bit grey: on a transparent canvas the opaque part is the ink,
    put on a background it contrasts with (dark strokes on white, light strokes on black).
    In place, in 8 bits: both arrays are used up, and no float copy of a big picture is made."""
    cv2.multiply(grey, alpha, dst=grey, scale=1 / 255)  # premultiplied: ink on black
    opaque = float(alpha.sum(dtype=np.int64)) / 255  # in pixels
    luminance = float(grey.sum(dtype=np.int64)) / max(opaque, 1.0)  # of the opaque part, 0..255
    if luminance >= 127.5:  # light strokes: on black as they are
        return grey
    np.subtract(255, alpha, out=alpha)
    return cv2.add(grey, alpha, dst=grey)  # dark strokes: on white


def _decode_pillow(data: bytes, sniffed: str, header: Header, side: int) -> np.ndarray:
    image = _open_header(data, sniffed)
    image.seek(0)  # the first frame of an animation
    if sniffed == "JPEG":
        scale = min(1.0, side / max(header.width, header.height))
        image.draft("L", (math.ceil(header.width * scale), math.ceil(header.height * scale)))
    image.load()
    ImageOps.exif_transpose(image, in_place=True)  # without in_place: a copy, always
    grey, alpha = planes(image)
    del image  # the decoded picture is freed before its planes become numpy arrays
    return _grey(grey, alpha)


def grey_from_pil(image: Image.Image) -> np.ndarray:
    """Any PIL image as 8-bit grey (H, W), transparency composited."""
    return _grey(*planes(image))


def planes(image: Image.Image) -> tuple[Image.Image | np.ndarray, Image.Image | None]:
    """A PIL image as its 8-bit grey plane and its alpha plane (None: it is opaque)."""
    if image.mode.startswith("I;16"):
        return (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8), None  # as libpng
    if image.mode in ("I", "F"):  # 32-bit: full scale by the values (Pillow's own files)
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max(initial=0))
        full = 1.0 if image.mode == "F" and top <= 1.0 else 255.0 if top <= 255 else 65535.0
        return np.clip(values * (255 / full), 0, 255).round().astype(np.uint8), None
    if "transparency" in image.info:
        image = image.convert("RGBA")  # a palette's or a colour key's transparency: alpha
    if image.mode == "LAB":
        image = image.getchannel("L")
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    return image.convert("L"), alpha  # convert("L") ignores alpha


def _grey(grey: Image.Image | np.ndarray, alpha: Image.Image | None) -> np.ndarray:
    # Opaque everywhere (a drawing board's canvas, most RGBA files): compositing would give
    # the grey back as it is, at five passes over the picture.
    if alpha is None or alpha.getextrema()[0] == 255:
        return np.asarray(grey)
    return composite(np.array(grey), np.array(alpha))
