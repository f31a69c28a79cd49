"""A neighbour index for a model version stored without one (before indexes existed, or
installed from a model directory that had none): built once by the worker, from the NIST data
and the version's own ONNX, so that uploads are weighed against NIST examples (domain/evidence.py).
"""

import logging

from core.config import get_settings
from core.labels import LabelSet
from db.session import get_sessionmaker, unit_of_work
from domain import registry

log = logging.getLogger(__name__)


def index_active_version() -> int | None:
    """Build and store the active version's index if it has none; its number, or None when
    there was nothing to do."""
    import onnx

    from trainer.data import load_nist
    from trainer.export import with_embedding
    from trainer.neighbours import build_index

    with get_sessionmaker()() as session:
        version = registry.active_version(session)
        if version is None or version.neighbour_index is not None:
            return None
        number, model, labels = version.version, version.onnx, version.labels
    data = load_nist(get_settings().nist_data_dir, LabelSet(labels))
    served = with_embedding(onnx.load_from_string(model)).SerializeToString()
    index = build_index(served, data).to_bytes()
    with unit_of_work() as session:
        stored = registry.store_index(session, number, served, index)
    if stored:
        log.info("built the neighbour index of model version %s", number)
    return number if stored else None
