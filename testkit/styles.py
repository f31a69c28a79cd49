"""New handwriting styles for the learning loop: NIST characters drawn in a way NIST has none of,
with their right labels. What a service that learns from its users must pick up by itself.

    rotated(glyph)   a quarter turn (a 7 lying on its side)
    outlined(glyph)  hollow strokes: only the outline of each stroke is drawn
"""

import cv2
import numpy as np

STYLES = ("rotated", "outlined")


def rotated(glyph: np.ndarray) -> np.ndarray:
    return np.rot90(glyph).copy()


def outlined(glyph: np.ndarray) -> np.ndarray:
    """The strokes' outline, one pixel wide, around the strokes thickened to leave a hollow."""
    ink = (glyph > 96).astype(np.uint8)
    thick = cv2.dilate(ink, np.ones((3, 3), np.uint8), iterations=1)
    outline = thick - cv2.erode(thick, np.ones((3, 3), np.uint8), iterations=1)
    return (outline * 255).astype(np.uint8)


def in_style(style: str, glyphs: np.ndarray) -> np.ndarray:
    draw = {"rotated": rotated, "outlined": outlined}[style]
    return np.stack([draw(g) for g in glyphs]) if len(glyphs) else glyphs
