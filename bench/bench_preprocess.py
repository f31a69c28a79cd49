"""Microseconds per image for decoding and for preprocessing, at the sizes the service sees.

    .venv/bin/python -m bench.bench_preprocess [--seconds 5] [--compare REV]

`core.images.decode_image` (sniff, size check, full decode, EXIF orientation, sha256) and
`core.preprocessing.preprocess_image` (any picture -> the 28x28 model input), timed separately,
single thread, on: a NIST character as a 28x28 PNG, the web page's 280x280 canvas PNG, a
3000x4000 phone photo (JPEG) of a character on paper, and a batch of 256 NIST 28x28 PNGs
(`preprocess_batch`, per image; and the same pictures one call each: the batch's mix of
pictures, not the batching, is what makes it differ from the one NIST character).
`--compare REV` times a git revision's code the same way in the same run (the figures before
a change); `--clock cpu` counts the thread's CPU time instead of wall time (on a busy
machine).
"""

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import median
from types import ModuleType
from typing import Any

from bench.common import BenchRun, bench_parser, load_revision, report
from testkit.images import canvas_png, photo_jpeg, small_png
from testkit.nist import nist_glyphs
from testkit.tables import markdown_table, percentile

BATCH = 256
BATCH_NAME = f"batch of {BATCH} NIST 28x28 PNGs, per image (preprocess_batch)"
SINGLES_NAME = f"the same {BATCH} PNGs one by one, per image (preprocess_image)"


# What a call costs: wall time (perf_counter), or with --clock cpu this thread's CPU time, which
# leaves out the time the thread waited for a core on a busy machine.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCKS["wall"]


def time_calls(call: Callable[[], Any], seconds: float, min_calls: int = 5) -> list[float]:
    """Seconds per call, repeated for about `seconds` (after 3 untimed calls)."""
    for _ in range(3):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < min_calls:
        start = clock()
        call()
        times.append(clock() - start)
    return sorted(times)


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per image and step")
    parser.add_argument(
        "--compare", metavar="REV", help="also time this git revision's decoding and preprocessing"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="cpu: this thread's CPU time per call (for a busy machine: waits left out)",
    )
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]

    import core.images
    import core.preprocessing

    run = BenchRun(args.wait_quiet)
    versions = {"now": (core.images, core.preprocessing)}
    with tempfile.TemporaryDirectory(prefix="hwr-bench-") as folder:
        if args.compare:
            versions[args.compare] = load_revision(args.compare, Path(folder))
        rows, raw = measure(versions, args.seconds)
    headers = ["code", "image", "bytes", "decode calls", "decode µs (median)", "decode µs (p99)"]
    headers += ["preprocess µs (median)", "preprocess µs (p99)", "both µs", "images/s on one core"]
    table = markdown_table(headers, rows)
    report(
        run, "preprocess", [table], {"args": vars(args), "images": raw}, [f"Clock: {args.clock}."]
    )


def measure(
    versions: dict[str, tuple[ModuleType, ModuleType]], seconds: float
) -> tuple[list[list[Any]], dict[str, Any]]:
    """Rows of the table, and the raw timings, for every version and image."""
    from core.config import get_settings

    settings = get_settings()
    limits = {"max_bytes": 64 * 1024 * 1024, "max_pixels": settings.max_image_pixels}
    glyphs, _ = nist_glyphs(BATCH)
    images = {
        "NIST character, 28x28 PNG": small_png(glyphs[0]),
        "web canvas, 280x280 RGBA PNG": canvas_png(glyphs[0]),
        "phone photo, 3000x4000 JPEG (q90)": photo_jpeg(),
    }
    batch = [small_png(glyph) for glyph in glyphs]
    rows: list[list[Any]] = []
    raw: dict[str, Any] = {}
    # Image by image, every version in turn: figures to compare are taken minutes apart at most.
    for name in [*images, BATCH_NAME, SINGLES_NAME]:
        for version, (images_module, preprocessing) in versions.items():
            if name in (BATCH_NAME, SINGLES_NAME):
                size = sum(map(len, batch)) // len(batch)
                decode_s, prep_s = time_batch(
                    images_module, preprocessing, batch, limits, seconds, name == BATCH_NAME
                )
            else:
                size = len(images[name])
                decode_s, prep_s = time_image(
                    images_module, preprocessing, images[name], limits, seconds
                )
            raw[f"{version}: {name}"] = {
                "bytes": size,
                "decode_s": decode_s,
                "preprocess_s": prep_s,
            }
            rows.append(row(version, name, size, decode_s, prep_s))
            print(f"# {version} {name}: {rows[-1][4]:,} + {rows[-1][6]:,} us", flush=True)
    return rows, raw


def time_image(
    images_module: ModuleType,
    preprocessing: ModuleType,
    data: bytes,
    limits: dict[str, int],
    seconds: float,
) -> tuple[list[float], list[float]]:
    """Seconds per decode and per preprocessing of one picture, with one version's code."""
    decode = images_module.decode_image
    decoded = decode(data, **limits)
    decode_s = time_calls(lambda: decode(data, **limits), seconds)
    return decode_s, time_calls(lambda: preprocessing.preprocess_image(decoded.image), seconds)


def time_batch(
    images_module: ModuleType,
    preprocessing: ModuleType,
    batch: list[bytes],
    limits: dict[str, int],
    seconds: float,
    together: bool = True,
) -> tuple[list[float], list[float]]:
    """The same per picture of a batch, as the route does it: each decoded, then all
    preprocessed together (`preprocess_batch`), or (not `together`) one call each."""
    decode = images_module.decode_image
    decoded = [decode(data, **limits).image for data in batch]
    decode_s = time_calls(lambda: [decode(data, **limits) for data in batch], seconds)
    if together:
        prep_s = time_calls(lambda: preprocessing.preprocess_batch(decoded), seconds)
    else:
        single = preprocessing.preprocess_image
        prep_s = time_calls(lambda: [single(image) for image in decoded], seconds)
    return [t / len(batch) for t in decode_s], [t / len(batch) for t in prep_s]


def row(version: str, name: str, size: int, decode: list[float], prep: list[float]) -> list[Any]:
    d_us, p_us = median(decode) * 1e6, median(prep) * 1e6
    return [
        version,
        name,
        size,
        len(decode),
        round(d_us),
        round(percentile(decode, 0.99) * 1e6),
        round(p_us),
        round(percentile(prep, 0.99) * 1e6),
        round(d_us + p_us),
        round(1e6 / (d_us + p_us), 1),
    ]


if __name__ == "__main__":
    main()
