"""A reading corrected by its boxes: the row's characters as the user sees them, where the
reader's boxes were wrong (a box over two touching characters split in two, two boxes of one
character merged, a box that is no character left out).

Each box is checked against the reading (nothing stored when one does not fit), a new box's
picture is cut from the stored row exactly as the reader cut the others
(`core.segmentation.cut_boxes`), and then every box read wrong or new goes the way of a text
correction (`domain.readings.correct`: one transaction, samples through `samples.accept`).
A box wider than `several_characters_width` likely holds several characters: one label would
store a sample whose picture is not that character, so it is refused.
"""

import base64
from dataclasses import replace

import numpy as np

from core.labels import LabelSet
from core.segmentation import cut_boxes, max_character_width
from db.models import Reading
from domain.readings import CharacterFix, CorrectionError, crop_png, ensure_open

Box = tuple[int, int, int, int]  # x, y, width, height in the picture's own pixels

# Two boxes of a correction may share at most this share of the smaller one's area: a piece of
# ink belongs to one character.
MAX_OVERLAP = 0.5


def several_characters_width(reading: Reading) -> int:
    """The widest box a correction may label as one character: `max_character_width` of the
    reading's own characters (1.28 times their median height). A wider box likely holds
    several characters, as a box over a touching "AB1" does."""
    return max_character_width([c["box"][3] for c in reading.characters])


def box_fixes(
    reading: Reading,
    characters: list[tuple[list[int], str]],
    label_set: LabelSet,
    max_characters: int,
) -> tuple[str, list[CharacterFix]]:
    """A correction by boxes: each character's box (left to right, in the picture's own pixels)
    and label; a box of the reading not listed is not a character. The corrected text, and the
    boxes to store: a box of the reading given another label (its crop as read), and every
    box the reading did not have (its crop cut later, `cut_crops`). CorrectionError saying
    which box does not fit, or that the reading was corrected already. Nothing is stored."""
    ensure_open(reading)
    if len(characters) > max_characters:
        raise CorrectionError(
            "too_many_characters",
            f"{len(characters)} boxes; at most {max_characters} characters in one row",
            max_characters=max_characters,
        )
    boxes: list[Box] = [(b[0], b[1], b[2], b[3]) for b, _ in characters]
    check_boxes(reading, boxes)
    resolved = [(label_set.resolve(c) if len(c) == 1 else None, c) for _, c in characters]
    unknown = [c for label, c in resolved if label is None]
    if unknown:
        raise CorrectionError(
            "invalid_label",
            f"{unknown[0]!r} is not one character of the label set {label_set.characters!r}",
        )
    read = {tuple(c["box"]): i for i, c in enumerate(reading.characters)}
    changed = []
    for index, (box, (label, submitted)) in enumerate(zip(boxes, resolved, strict=True)):
        assert label is not None
        source = read.get(box)
        if source is None:
            changed.append(CharacterFix(index, None, label, submitted, None, box))
        elif reading.characters[source]["label"] != label:
            crop = base64.b64decode(reading.crops[source])
            read_as = reading.characters[source]["label"]
            changed.append(CharacterFix(index, read_as, label, submitted, crop, box))
    return "".join(c for _, c in characters), changed


def check_boxes(reading: Reading, boxes: list[Box]) -> None:
    """CorrectionError naming the first box that cannot be a character of this reading: empty,
    outside the picture, out of order, overlapping another by more than MAX_OVERLAP of the
    smaller one, or wider than `several_characters_width` (it likely holds several)."""
    widest = several_characters_width(reading)
    for i, (x, y, width, height) in enumerate(boxes):
        where = f"characters[{i}] (box {[x, y, width, height]})"
        if width < 1 or height < 1:
            raise CorrectionError(
                "empty_box", f"{where} is empty: width and height are at least 1 px", index=i
            )
        if x < 0 or y < 0 or x + width > reading.width or y + height > reading.height:
            raise CorrectionError(
                "box_outside_picture",
                f"{where} reaches outside the picture, {reading.width}x{reading.height} px",
                index=i,
            )
        if i and x < boxes[i - 1][0]:
            raise CorrectionError(
                "boxes_out_of_order", f"{where} starts left of the box before it", index=i
            )
        if width > widest:
            raise CorrectionError(
                "box_holds_several_characters",
                f"{where} is {width} px wide: wider than {widest} px (1.28 times the median "
                "height of the characters read), it likely holds several characters and cannot "
                "be labelled as one; split it into one box per character, or leave it out",
                index=i,
                max_width=widest,
            )
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            shared = _overlap(a, boxes[j])
            if shared > MAX_OVERLAP * min(a[2] * a[3], boxes[j][2] * boxes[j][3]):
                raise CorrectionError(
                    "boxes_overlap",
                    f"characters[{i}] and characters[{j}] overlap by more than half of the "
                    "smaller box: a piece of ink belongs to one character",
                    index=j,
                )


def _overlap(a: Box, b: Box) -> int:
    across = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    down = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(across, 0) * max(down, 0)


def cut_crops(fixes: list[CharacterFix], image: np.ndarray, scale: float) -> list[CharacterFix]:
    """The fixes with each new box's picture cut from the row (`image`, decoded as the reader
    had it; `scale` its own width over the array's), as a PNG like the reader's crops (CPU
    work: the API does it in its pool). CorrectionError `no_ink` for a box without ink."""
    new = [fix for fix in fixes if fix.crop is None]
    cut = cut_boxes(image, [fix.box for fix in new], scale)
    crops: dict[int, np.ndarray] = {}
    for fix, crop in zip(new, cut, strict=True):
        if crop is None:
            raise CorrectionError(
                "no_ink",
                f"characters[{fix.index}] (box {list(fix.box)}) holds no ink: not a character; "
                "leave it out",
                index=fix.index,
            )
        crops[fix.index] = crop
    return [fix if fix.crop else replace(fix, crop=crop_png(crops[fix.index])) for fix in fixes]
