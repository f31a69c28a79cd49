"""Evidence about an upload's label from the data, not from the model's disbelief.

A wrong label contradicts many established examples that look the same: a NIST '1' uploaded as
'7' sits deep among NIST '1's (and 'I's and 'L's), none of them a '7'. A new style is far from
everything the model learnt, and an ambiguous shape (1/I/l, 0/O) sits among several classes,
its label among them: both are accepted, and the gate is the backstop.

So an upload contradicts its label when, among its k nearest NIST examples (the model's
neighbour index, core/neighbours.py):
- its label is at most `max_label_share` of them, and
- it sits about as deep inside the class most of them have as the typical NIST example of
  that class does (`depth`: the share of held-out NIST glyphs of that class that sit less close
  to their own neighbours; 0.5 = closer than the median one; EVIDENCE_DEPTH is 0.4).
Measured with the bundled model (docs/BENCHMARKS.md, bench/bench_evidence.py): NIST glyphs with
their own labels are held 1.3% of the time, honest uploads of every testkit corpus kind
0.3-1.3%, a rotated 3/4/7 (a new style) 5.0%, NIST '1's labelled '7' 70% (the rest is the per-
uploader cap's, the gate's and the healing's work).
"""

from dataclasses import dataclass

import numpy as np

from core.config import Settings
from core.neighbours import NeighbourIndex


@dataclass(frozen=True)
class EvidenceRules:
    neighbours: int
    max_label_share: float
    depth: float


def evidence_rules(settings: Settings) -> EvidenceRules:
    return EvidenceRules(
        settings.evidence_neighbours, settings.evidence_max_label_share, settings.evidence_depth
    )


@dataclass(frozen=True)
class Evidence:
    contradicts: bool
    label_share: float  # of the k nearest NIST examples, the share with the upload's label
    majority: str  # the class most of them have
    majority_share: float
    similarity: float  # mean cosine similarity to them
    depth: float  # share of held-out NIST examples of `majority` that sit less close
    reason: str  # in words, for the sample's reader


def weigh(
    index: NeighbourIndex, embedding: np.ndarray, label: str, rules: EvidenceRules
) -> Evidence:
    """What the NIST examples nearest to one upload say about its label."""
    found = index.nearest(embedding[np.newaxis], rules.neighbours)
    classes = found.classes[0]
    similarity = float(found.similarities[0].mean())
    counts = np.bincount(classes, minlength=len(index.labels))
    majority = int(counts.argmax())
    share = float(np.mean(classes == index.labels.index(label))) if label in index.labels else 0.0
    depth = index.depth(majority, similarity)
    contradicts = share <= rules.max_label_share and depth >= rules.depth
    others = index.labels[majority]
    k = len(classes)
    where = f"closer to them than {depth:.0%} of NIST's own {others!r}s"
    if contradicts:
        reason = (
            f"its {k} nearest NIST examples are {counts[majority]} {others!r} and "
            f"{round(share * k)} {label!r}, and it sits deep among them ({where}): the data "
            f"contradicts the label"
        )
    elif share > rules.max_label_share:
        reason = f"{round(share * k)} of its {k} nearest NIST examples are {label!r}"
    else:
        reason = f"far from NIST's {others!r}s ({where}): a new style, not a contradiction"
    return Evidence(contradicts, share, others, counts[majority] / k, similarity, depth, reason)
