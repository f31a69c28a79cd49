"""The label set: which characters the model tells apart, and how user labels map onto it."""

from dataclasses import dataclass

# Lowercase letters whose handwritten shape is the uppercase shape, scaled. EMNIST's
# bymerge/balanced splits merge these into the uppercase class.
LOOKALIKE_LOWERCASE = frozenset("cijklmopsuvwxyz")


@dataclass(frozen=True)
class LabelMatch:
    label: str
    merged: bool


class UnknownLabelError(ValueError):
    pass


@dataclass(frozen=True)
class LabelSet:
    characters: str

    @property
    def classes(self) -> list[str]:
        return list(self.characters)

    def __len__(self) -> int:
        return len(self.characters)

    def index(self, label: str) -> int:
        return self.characters.index(label)

    def match(self, label: str) -> LabelMatch:
        """Map a user-supplied character onto the set, merging look-alike lowercase letters."""
        if len(label) != 1:
            raise UnknownLabelError(f"label must be exactly one character, got {len(label)}")
        if label in self.characters:
            return LabelMatch(label, merged=False)
        if label in LOOKALIKE_LOWERCASE and label.upper() in self.characters:
            return LabelMatch(label.upper(), merged=True)
        raise UnknownLabelError(f"label {label!r} is not in the label set")

    def resolve(self, character: str) -> str | None:
        """The class a character of the NIST data belongs to, or None if the set has none."""
        try:
            return self.match(character).label
        except UnknownLabelError:
            return None
