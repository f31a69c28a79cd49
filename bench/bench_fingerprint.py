"""Whether an uploader can re-roll a picture's side (training or evaluation) by re-encoding it.

    .venv/bin/python -m bench.bench_fingerprint [--count 100] [--split dev check]

Every picture of the testkit corpus (every kind, NIST holdout characters) is stored once as
the service would, then sent again as other files of the same picture: 16-bit PNG, RGBA PNG,
a PNG with a text chunk, WebP lossless, BMP (all decode to the same pixels: the same sample),
and JPEG at quality 95 and 80 (new pixels: a new sample, its side from its own fingerprint).
Printed: the share moved to the other side, per re-encoding, for three keys, next to the
fingerprint used before (32x32 cells, 16 levels), and the evaluation share per kind.
"""

import hashlib
import hmac
from collections.abc import Callable

import numpy as np

from bench.common import BenchRun, bench_parser, report
from domain.samples import _area_reduce, is_evaluation_sample
from testkit.corpus import make_corpus
from testkit.reencode import REENCODINGS, Flips, side_flips
from testkit.tables import markdown_table

KEYS = [b"k" * 32, b"another key", b"a third one"]


def before(key: bytes) -> Callable[[np.ndarray], bool]:
    """The fingerprint of the previous release: 32x32 by area, 16 levels, on 8-bit grey."""

    def side(grey: np.ndarray) -> bool:
        levels = np.clip(_area_reduce(grey, 32).astype(np.uint16) * 16 // 256, 0, 15)
        digest = hmac.new(key, levels.astype(np.uint8).tobytes(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") % 10 == 0

    return side


def now(key: bytes) -> Callable[[np.ndarray], bool]:
    return lambda grey: is_evaluation_sample(grey, key)


def row(name: str, flips: list[Flips]) -> list[str]:
    pictures = flips[0].pictures
    cells = [name]
    for encoding in REENCODINGS:
        moved = [f.flipped[encoding] for f in flips]
        cells.append(" / ".join(f"{m / pictures:.2%}" for m in moved))
    cells.append(" / ".join(f"{f.evaluation / pictures:.1%}" for f in flips))
    return cells


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--count", type=int, default=100, help="characters per kind")
    parser.add_argument("--split", nargs="+", default=["dev", "check"])
    args = parser.parse_args()
    run = BenchRun(args.wait_quiet)
    tables, raw = [], {}
    for split in args.split:
        corpus = make_corpus(split, args.count)
        pictures = [data for kind in corpus.pictures.values() for data in kind]
        flips = side_flips(pictures, [*map(before, KEYS), *map(now, KEYS)])
        results = {
            "before (32x32, 16 levels)": flips[: len(KEYS)],
            "now (8x8, 4 levels, ink box)": flips[len(KEYS) :],
        }
        header = ["fingerprint", *REENCODINGS, "evaluation share"]
        rows = [row(name, flips) for name, flips in results.items()]
        tables.append(
            f"**{split}** draw, {len(pictures)} pictures, moved to the other side (keys "
            f"a / b / c):\n\n" + markdown_table(header, rows)
        )
        shares = []
        for kind, kind_pictures in corpus.pictures.items():
            share = [np.mean([now(k)(g) for g in map(_grey, kind_pictures)]) for k in KEYS]
            shares.append([kind, *(f"{s:.0%}" for s in share)])
        tables.append(
            f"**{split}**: evaluation share per kind ({args.count} each), keys a / b / c:\n\n"
            + markdown_table(["kind", "a", "b", "c"], shares)
        )
        raw[split] = {n: [f.__dict__ for f in fl] for n, fl in results.items()}
    report(run, "fingerprint", tables, raw)


def _grey(data: bytes) -> np.ndarray:
    from testkit.reencode import grey_of

    return grey_of(data)


if __name__ == "__main__":
    main()
