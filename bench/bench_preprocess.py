"""Microseconds per image for decoding and for preprocessing, at the sizes the service sees.

    .venv/bin/python -m bench.bench_preprocess [--seconds 5]

`core.images.decode_image` (sniff, size check, full decode, EXIF orientation, sha256) and
`core.preprocessing.preprocess_image` (any picture -> the 28x28 model input), timed separately,
single thread, on: a NIST character as a 28x28 PNG, the web page's 280x280 canvas PNG, and a
3000x4000 phone photo (JPEG) of a character on paper.
"""

import argparse
import time
from collections.abc import Callable, Sequence
from statistics import median
from typing import Any

from bench.common import (
    REPO_ROOT,
    BenchRun,
    add_quiet_option,
    canvas_png,
    markdown_table,
    nist_glyphs,
    photo_jpeg,
    save_results,
    small_png,
)
from bench.httpload import percentile


def time_calls(call: Callable[[], Any], seconds: float, min_calls: int = 5) -> list[float]:
    """Seconds per call, repeated for about `seconds` (after 3 untimed calls)."""
    for _ in range(3):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < min_calls:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per image and step")
    add_quiet_option(parser)
    args = parser.parse_args(argv)

    from core.config import get_settings
    from core.images import decode_image
    from core.preprocessing import preprocess_image

    run = BenchRun(args.wait_quiet)
    settings = get_settings()
    limits = {"max_bytes": 64 * 1024 * 1024, "max_pixels": settings.max_image_pixels}
    glyphs, _ = nist_glyphs(1)
    images = {
        "NIST character, 28x28 PNG": small_png(glyphs[0]),
        "web canvas, 280x280 RGBA PNG": canvas_png(glyphs[0]),
        "phone photo, 3000x4000 JPEG (q90)": photo_jpeg(),
    }
    rows, raw = [], {}
    for name, data in images.items():
        decoded = decode_image(data, **limits)
        decode = time_calls(lambda data=data: decode_image(data, **limits), args.seconds)
        prep = time_calls(lambda d=decoded: preprocess_image(d.image), args.seconds)
        raw[name] = {"bytes": len(data), "decode_s": decode, "preprocess_s": prep}
        d_us, p_us = median(decode) * 1e6, median(prep) * 1e6
        rows.append(
            [
                name,
                len(data),
                len(decode),
                round(d_us),
                round(percentile(decode, 99) * 1e6),
                round(p_us),
                round(percentile(prep, 99) * 1e6),
                round(d_us + p_us),
                round(1e6 / (d_us + p_us), 1),
            ]
        )
        print(f"# {name}: decode {d_us:,.0f} us, preprocess {p_us:,.0f} us", flush=True)
    run.finish()

    print()
    print(run.header())
    print()
    print(
        markdown_table(
            [
                "image",
                "bytes",
                "decode calls",
                "decode µs (median)",
                "decode µs (p99)",
                "preprocess µs (median)",
                "preprocess µs (p99)",
                "both µs",
                "images/s on one core",
            ],
            rows,
        )
    )
    path = save_results(
        "preprocess",
        {
            **run.record(),
            "images": raw,
        },
    )
    print(f"\n# raw results: {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
