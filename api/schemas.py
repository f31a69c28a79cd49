"""Response bodies, as the OpenAPI schema shows them."""

from datetime import datetime

from pydantic import BaseModel, Field


class SampleOut(BaseModel):
    id: int
    label: str = Field(description="The class stored, after merging look-alike lowercase letters")
    submitted_label: str = Field(description="The label as the client sent it")
    label_merged: bool = Field(description="True when a lowercase letter was stored as uppercase")
    sha256: str
    width: int
    height: int
    content_type: str
    source: str
    holdout: bool = Field(description="Kept for evaluating models rather than for training")
    created_at: datetime


class SamplePage(BaseModel):
    items: list[SampleOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end")


class SampleStats(BaseModel):
    total: int
    training: int
    holdout: int
    by_label: dict[str, int]
    new_since_last_training_run: int
    retrain_threshold: int


class ErrorOut(BaseModel):
    error: str = Field(description="Machine-readable code")
    detail: str = Field(description="What is wrong, for a person")
