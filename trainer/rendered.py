"""Training pictures as people send them: NIST training glyphs drawn as every kind of picture
of testkit/corpus.py (pens, paper, light, scans, crops...), then decoded and preprocessed by the
very code the API runs (`glyph_as_served`), kept as uint8 glyphs and mixed into every epoch.

The model thus learns what the preprocessing makes of real pictures, rather than the
preprocessing undoing each kind by a rule (issue 27). The glyphs come from the training split
only, drawn in the corpus's dev style (the check draw's sizes stay unseen), with their own
seed. Rendering costs a few ms per picture, so a set is cached under `cache_dir` by what made
it: the code of the decoder, the preprocessing and the makers, the count and the seed.

Needs the repository's testkit/ (the makers): the CLI has it, and the worker's image carries
it, since every retrain renders too (RETRAIN_RENDERED_PER_KIND).
"""

import hashlib
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from core.config import REPO_ROOT, get_settings

log = logging.getLogger(__name__)

SOURCES = ("core/images.py", "core/preprocessing.py", "testkit/corpus.py")


def kinds() -> list[str]:
    """Every corpus kind but the clean scan, which NIST itself is."""
    from testkit.corpus import KINDS

    return [kind for kind in KINDS if kind != "clean"]


def glyph_as_served(picture: bytes) -> np.ndarray:
    """What the API makes of an uploaded file before the model: decode with its limits, then
    preprocess. uint8 (28, 28), as training stores glyphs."""
    from core.preprocessing import preprocess_image
    from testkit.corpus import decoded

    return np.rint(preprocess_image(decoded(picture)) * 255).astype(np.uint8)


def render_pictures(glyphs: np.ndarray, kind: str, seed: int) -> list[bytes]:
    """Each glyph (upright uint8 28x28) drawn as a picture of `kind`: encoded files."""
    from testkit.corpus import KINDS, Style

    rng = np.random.default_rng([seed, list(KINDS).index(kind)])
    return [KINDS[kind](glyph, rng, Style(check=False)) for glyph in glyphs]


def _render_kind(job: tuple[np.ndarray, str, int]) -> np.ndarray:
    glyphs, kind, seed = job
    return np.stack([glyph_as_served(picture) for picture in render_pictures(glyphs, kind, seed)])


def rendered_set(
    x: np.ndarray,
    y: np.ndarray,
    per_kind: int,
    seed: int = 0,
    workers: int = 2,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`per_kind` training glyphs of `x` (drawn at random, labels `y`) rendered as each kind and
    preprocessed: (uint8 (K * per_kind, 28, 28), int32 labels). Cached under `cache_dir`
    (default: the CACHE_DIR setting's rendered/)."""
    if cache_dir is None:
        cache_dir = get_settings().cache_dir / "rendered"
    key = hashlib.sha256()
    for source in SOURCES:
        key.update((REPO_ROOT / source).read_bytes())
    key.update(f"{per_kind}/{seed}/{len(y)}".encode())
    key.update(np.ascontiguousarray(y).tobytes())
    path = cache_dir / f"rendered-{key.hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as cached:
            return cached["x"], cached["y"]
    rng = np.random.default_rng(seed)
    names = kinds()
    chosen = [rng.choice(len(y), min(per_kind, len(y)), replace=False) for _ in names]
    jobs = [(x[index], kind, seed) for index, kind in zip(chosen, names, strict=True)]
    log.info(
        "rendering %d pictures of %d kinds (cached in %s)", per_kind * len(names), len(names), path
    )
    if multiprocessing.current_process().daemon:  # a Celery worker's child has no children
        glyphs = np.concatenate([_render_kind(job) for job in jobs])
    else:  # spawned, not forked: the trainer has TensorFlow's threads running by now
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            glyphs = np.concatenate(list(pool.map(_render_kind, jobs)))
    labels = np.concatenate([y[index] for index in chosen]).astype(np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=glyphs, y=labels)
    return glyphs, labels
