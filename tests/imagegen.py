"""Images made in tests: drawn strokes, and deliberately broken or hostile files."""

import io
import random

from PIL import Image, ImageDraw


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
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def noise_png(size: tuple[int, int], seed: int = 0) -> bytes:
    """Random RGB noise: it barely compresses, so its byte size is about 3 bytes per pixel."""
    rng = random.Random(seed)
    return encode(Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)))
