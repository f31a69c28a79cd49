"""Which samples may train or judge: one rule, read by the runs (when one is due, what it
trains on) and by the samples' lists (which are held). Its own module: domain.samples imports
domain.runs, so neither could hold it for the other."""

from sqlalchemy import ColumnElement, or_

from db.models import Sample


def cleared_samples() -> ColumnElement[bool]:
    """Samples that may train or judge: not suspect, or confirmed by an admin since."""
    return or_(Sample.suspect.is_(False), Sample.confirmed_at.is_not(None))
