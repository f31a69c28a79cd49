"""Image files for tests and benchmarks: drawn strokes, NIST glyphs as PNG and canvas
drawings, photos, and deliberately broken or hostile files."""

import io
import random
import struct
import subprocess
import sys
import zlib
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:
    from core.images import Route


def stroke_image(seed: int, size: tuple[int, int] = (64, 64), mode: str = "L") -> Image.Image:
    """A random scribble, white on black; distinct seeds give distinct images."""
    rng = random.Random(seed)
    image = Image.new(mode, size, 0)
    draw = ImageDraw.Draw(image)
    points = [(rng.randrange(size[0]), rng.randrange(size[1])) for _ in range(5)]
    draw.line(points, fill=255 if mode == "L" else (255,) * len(mode), width=max(2, size[0] // 12))
    return image


def encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png(seed: int = 0, size: tuple[int, int] = (64, 64)) -> bytes:
    return encode(stroke_image(seed, size))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (a decompression bomb's header), no real data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def flat_png(width: int, height: int, bit_depth: int = 16, colour_type: int = 6) -> bytes:
    """A real, valid PNG of one flat colour, written row by row (never the whole picture in
    memory): a few hundred kB on the wire for a huge decode. colour_type 6 is RGBA, 0 grey."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\x00" + bytes([0x5A]) * (width * channels * bit_depth // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def noise_png(size: tuple[int, int], seed: int = 0) -> bytes:
    """Random RGB noise: it barely compresses, so its byte size is about 3 bytes per pixel."""
    rng = random.Random(seed)
    return encode(Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)))


def png_of_exactly(size_bytes: int, seed: int = 0) -> bytes:
    """A valid PNG of exactly `size_bytes` bytes: a drawn image plus a private ancillary chunk
    (decoders skip it) of padding, for testing a byte limit at its boundary."""
    base = png(seed)
    padding = size_bytes - len(base) - 12  # a chunk is length, type, payload, CRC
    if padding < 0:
        raise ValueError(f"a PNG cannot be as small as {size_bytes} bytes here")
    payload = b"\x00" * padding
    kind = b"prVt"
    chunk = (
        struct.pack(">I", padding)
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )
    ihdr_end = 8 + 25  # signature, then the IHDR chunk (13 bytes of payload)
    return base[:ihdr_end] + chunk + base[ihdr_end:]


def jpeg_with_orientation(upright: Image.Image, orientation: int = 6) -> bytes:
    """A JPEG whose pixels are stored turned, with the EXIF Orientation tag that turns them back
    upright (6: the viewer rotates 90 degrees clockwise), as phone cameras write them."""
    inverse = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    stored = upright.transpose(inverse[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored.convert("RGB"), "JPEG", quality=100, exif=exif.tobytes())


def small_png(glyph: np.ndarray) -> bytes:
    """A NIST image as a 28x28 grayscale PNG (a few hundred bytes)."""
    return encode(Image.fromarray(glyph, mode="L"))


def canvas_png(glyph: np.ndarray) -> bytes:
    """What the web page's drawing board sends: a 280x280 RGBA PNG, white strokes on opaque
    black, the glyph drawn large with smooth edges."""
    big = Image.fromarray(glyph, mode="L").resize((280, 280), Image.Resampling.BICUBIC)
    big = big.point(lambda v: 255 if v > 110 else 0).filter(ImageFilter.GaussianBlur(1.2))
    return encode(big.convert("RGBA"))


def photo_jpeg(width: int = 3000, height: int = 4000, seed: int = 0) -> bytes:
    """A phone photo of one character on paper: 12 MP JPEG, uneven light, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 200 + 40 * (xx / width) - 30 * (yy / height)  # a shadow across the sheet
    paper = np.stack([light, light * 0.97, light * 0.9], axis=-1)
    paper += rng.normal(0, 4, paper.shape).astype(np.float32)
    photo = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8), "RGB")
    pen = ImageDraw.Draw(photo)
    cx, cy, size = width / 2, height / 2, min(width, height) / 4
    pen.line([(cx - size, cy + size), (cx, cy - size), (cx + size, cy + size)], (40, 40, 50), 60)
    pen.line([(cx - size / 2, cy + size / 5), (cx + size / 2, cy + size / 5)], (40, 40, 50), 60)
    return encode(photo, "JPEG", quality=90)


def tagged_png(png_data: bytes, tag: str) -> bytes:
    """The same PNG with a tEXt chunk after its header: same pixels, distinct bytes (and so a
    distinct sha256), without encoding the image again."""
    payload = b"tag\x00" + tag.encode()
    chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + payload))
    header_end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 bytes, CRC
    return png_data[:header_end] + chunk + png_data[header_end:]


def _stroke(side: int) -> np.ndarray:
    base = np.zeros((side, side), np.uint8)
    cv2.line(base, (side // 8, side // 8), (side * 7 // 8, side * 6 // 8), 255, side // 20)
    return base


# Red ink on green paper of one luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, both ~76):
# the grey is flat, the colours are not. BGR.
ISOLUMINANT_INK = (0, 0, 255)
ISOLUMINANT_PAPER = (0, 130, 0)


def isoluminant(ink: np.ndarray) -> np.ndarray:
    """Ink coverage (uint8, 255 = ink) as red ink on green paper of the same luminance, BGR."""
    share = ink.astype(np.float32)[..., np.newaxis] / 255
    paper, red = np.array(ISOLUMINANT_PAPER, np.float32), np.array(ISOLUMINANT_INK, np.float32)
    return np.rint(paper + (red - paper) * share).astype(np.uint8)


def decode_route_pictures(side: int) -> dict[str, tuple[bytes, "Route"]]:
    """One side x side picture for each way core.images decodes, with that way (its Route)."""
    from core.images import Route

    ink = _stroke(side)
    clear = np.zeros_like(ink)
    rgba = np.dstack([clear, clear, clear, ink])
    paper = np.dstack([255 - ink] * 3)
    return {
        "grey PNG": (cv2.imencode(".png", 255 - ink)[1].tobytes(), Route.GREY),
        "16-bit RGB PNG": (
            cv2.imencode(".png", paper.astype(np.uint16) * 257)[1].tobytes(),
            Route.GREY,
        ),
        "RGBA PNG": (cv2.imencode(".png", rgba)[1].tobytes(), Route.PILLOW),
        "16-bit RGBA PNG": (flat_png(side, side, 16, 6), Route.PILLOW),
        "RGBA WebP": (
            cv2.imencode(".webp", rgba, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(),
            Route.COLOUR_ALPHA,
        ),
        "BMP": (cv2.imencode(".bmp", paper)[1].tobytes(), Route.GREY),
        "GIF with transparency": (
            encode(Image.fromarray(255 - ink), "GIF", transparency=255),
            Route.PILLOW,
        ),
        "JPEG": (cv2.imencode(".jpg", paper)[1].tobytes(), Route.GREY),
        # Flat in grey: decoded again in colour, within the colour route's budget.
        "red on green PNG": (cv2.imencode(".png", isoluminant(ink))[1].tobytes(), Route.GREY),
    }


_MEASURE_DECODE = """
import struct
import sys
from pathlib import Path
from core.images import decode_image

def status(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith(field)).split()[1]) * 1024

def decode(data):
    decode_image(data, max_bytes=10**9, max_pixels=10**9).pixels_sha256

stdin = sys.stdin.buffer.read()
(warm_up_size,) = struct.unpack(">Q", stdin[:8])
warm_up, data = stdin[8 : 8 + warm_up_size], stdin[8 + warm_up_size :]
del stdin
decode(warm_up)
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
before = status("VmRSS:")
decode(data)
print(status("VmHWM:") - before)
"""


def decode_peak_bytes(data: bytes, warm_up: bytes) -> int:
    """How much a fresh process's peak memory grows while it decodes `data` (and hashes its
    pixels), as the API does: the process first decodes `warm_up` (a small picture of the same
    kind), the peak is reset (/proc/self/clear_refs), and the peak's growth from the resident
    memory then is what the decode took. The warm-up maps the decoder's code as a serving
    process has it mapped: a cold first decode also counts the code pages it faults in (the
    same JPEG measured 5.9-11.8 MB that way, by how much of the library the kernel mapped
    around each fault), which is not what the budget counts."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE_DECODE],
        input=struct.pack(">Q", len(warm_up)) + warm_up + data,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return int(done.stdout)
