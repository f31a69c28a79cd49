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


def png_of_exactly(size_bytes: int, seed: int = 0) -> bytes:
    """A valid PNG of exactly `size_bytes` bytes: a drawn image plus a private ancillary chunk
    (decoders skip it) of padding, for testing a byte limit at its boundary."""
    import struct
    import zlib

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
