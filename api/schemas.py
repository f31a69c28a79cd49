"""Request and response bodies, as the OpenAPI schema shows them: every route's in one place."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, StrictInt, model_validator

from db.models import Role, Sample, SampleStatus
from domain.keys import Client
from domain.samples import status_of

# --- Errors ---------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    error: str = Field(description="Machine-readable code")
    detail: str = Field(description="What is wrong, for a person")


# --- Samples --------------------------------------------------------------------------------


class SampleOut(BaseModel):
    id: int
    label: str = Field(description="The class stored, after merging look-alike lowercase letters")
    submitted_label: str = Field(description="The label as the client sent it")
    label_merged: bool = Field(description="True when a lowercase letter was stored as uppercase")
    sha256: str
    width: int
    height: int
    content_type: str
    source: str = Field(description="What the client said the picture is; it decides nothing")
    evaluation: bool | None = Field(
        description="Kept for judging candidate models, not for training. Shown only to admin "
        "and labeller keys (null for others): an uploader cannot learn, and so cannot steer, "
        "which side a picture lands on"
    )
    trusted: bool = Field(
        description="Stored by an admin's or a labeller's key: its label is vouched for (never "
        "held as suspect; as an evaluation sample it judges candidates)"
    )
    confirmed_at: datetime | None = Field(
        description="When an admin or labeller confirmed the label; an untrusted evaluation "
        "sample judges candidates only once confirmed"
    )
    status: SampleStatus = Field(
        description="suspect: held, because its nearest NIST examples contradict the label "
        "or a refused training run found it pushed a class over (`suspect_reason` says which); "
        "kept out of training (and evaluation) until an admin or labeller confirms, relabels "
        "or deletes it. confirmed: vouched for since. accepted: neither."
    )
    model_label: str | None = Field(description="What the serving model read when it was stored")
    suspect_reason: str | None = Field(
        description="What the NIST examples nearest to it said about its label, in words (why "
        "it is suspect, when it is)"
    )
    model_probability: float | None = Field(description="The model's probability of model_label")
    created_at: datetime


def sample_out(sample: Sample, client: Client) -> SampleOut:
    """A sample as `client` may see it: which side it landed on only for a trusted key."""
    return SampleOut(
        id=sample.id,
        label=sample.label,
        submitted_label=sample.submitted_label,
        label_merged=sample.label != sample.submitted_label,
        sha256=sample.sha256,
        width=sample.width,
        height=sample.height,
        content_type=sample.content_type,
        source=sample.source,
        evaluation=sample.evaluation if client.trusted else None,
        trusted=sample.trusted,
        confirmed_at=sample.confirmed_at,
        status=status_of(sample),
        model_label=sample.model_label,
        model_probability=sample.model_probability,
        suspect_reason=sample.suspect_reason,
        created_at=sample.created_at,
    )


class RelabelIn(BaseModel):
    label: str = Field(min_length=1, max_length=8, description="The sample's right label")


class SamplePage(BaseModel):
    items: list[SampleOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end")


class SampleStats(BaseModel):
    total: int
    training: int
    evaluation: int
    by_label: dict[str, int]
    new_since_last_training_run: int
    retrain_threshold: int
    suspect: int = Field(description="Samples kept out of training until an admin confirms them")


# --- Predictions ----------------------------------------------------------------------------


class CandidateOut(BaseModel):
    label: str
    probability: float


class TimingsOut(BaseModel):
    decode_ms: float
    preprocess_ms: float
    inference_ms: float


class PredictionOut(BaseModel):
    label: str
    confidence: float = Field(description="Probability of `label`")
    top: list[CandidateOut] = Field(description="The 5 most likely labels, best first")
    low_confidence: bool = Field(
        description="The confidence is below LOW_CONFIDENCE_THRESHOLD: check the answer"
    )
    doubt: str | None = Field(description="When low_confidence: why, in words")
    model_version: int
    allowed_labels: str | None = Field(
        default=None, description="The labels the answer was chosen among (None: all the model's)"
    )
    timings: TimingsOut
    input: str | None = Field(
        default=None,
        description="With ?include=input: the 28x28 picture the model saw, as a base64 PNG",
    )
    heatmap: str | None = Field(
        default=None,
        description="With ?include=heatmap: where the model looked, as a 28x28 base64 PNG "
        "(white: blanking this part lowers the answer's probability most)",
    )


class BatchItemOut(BaseModel):
    index: int
    filename: str | None
    label: str | None = None
    confidence: float | None = None
    top: list[CandidateOut] | None = None
    low_confidence: bool | None = None
    doubt: str | None = None
    error: str | None = Field(default=None, description="Set when this image was not usable")
    detail: str | None = None


class BatchPredictionOut(BaseModel):
    model_version: int
    allowed_labels: str | None = Field(
        default=None, description="The labels the answer was chosen among (None: all the model's)"
    )
    results: list[BatchItemOut]
    timings: TimingsOut


# --- Readings -------------------------------------------------------------------------------


class ReadCharacterOut(BaseModel):
    index: int
    box: list[int] = Field(description="[x, y, width, height] in the picture's own pixels")
    label: str
    confidence: float = Field(description="Probability of `label`")
    top: list[CandidateOut] = Field(description="The 5 most likely labels, best first")
    low_confidence: bool = Field(description="Below LOW_CONFIDENCE_THRESHOLD: check it")
    space_before: bool = Field(description="A gap much wider than the others comes before it")


class ReadingOut(BaseModel):
    id: int
    text: str = Field(description="The characters read, left to right; spaces at wide gaps")
    confidence: float = Field(
        description="The chance the whole text is right: the product of the characters' confidences"
    )
    low_confidence: bool = Field(description="Some character is below the threshold")
    characters: list[ReadCharacterOut]
    width: int
    height: int
    allowed_labels: str | None = Field(description="The labels the reading was limited to")
    expected_length: int | None
    model_version: int
    corrected_text: str | None = Field(description="The text a user gave as right, if any")
    max_character_width: int = Field(
        description="The widest box a correction may label as one character, in the picture's "
        "pixels: 1.28 times the median height of the characters read (1.6 typical character "
        "widths, a typical width being at most 0.8 of the height). A wider box likely holds "
        "several characters: split it"
    )
    created_at: datetime


class CorrectedBoxIn(BaseModel):
    box: list[StrictInt] = Field(
        min_length=4,
        max_length=4,
        description="[x, y, width, height] in the picture's own pixels, as a reading's boxes",
    )
    label: str = Field(min_length=1, max_length=8, description="The character the box holds")


class CorrectionIn(BaseModel):
    """Either `text` or `characters`, exactly one."""

    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="The right text, one character per character read (spaces are ignored)",
    )
    characters: list[CorrectedBoxIn] | None = Field(
        default=None,
        max_length=256,
        description="The row's characters as boxes, left to right, each with its label: the "
        "reading's boxes, or boxes made by splitting or merging them. A box of the reading not "
        "listed is not a character (skipped). Refused (422, nothing stored): a box empty "
        "(`empty_box`) or outside the picture (`box_outside_picture`), boxes not left to right "
        "(`boxes_out_of_order`) or sharing more than half of the smaller one "
        "(`boxes_overlap`), a box without ink (`no_ink`), and a box wider than the reading's "
        "`max_character_width` (`box_holds_several_characters`: its shape says it holds "
        "several characters, which one label would misname)",
    )

    @model_validator(mode="after")
    def _one_of(self) -> "CorrectionIn":
        if (self.text is None) == (self.characters is None):
            raise ValueError("give either text or characters, exactly one of them")
        return self


class CorrectedCharacterOut(BaseModel):
    index: int = Field(description="In the correction: its text's character, or its box")
    read: str | None = Field(
        description="What the model read in this box; null for a box the correction made"
    )
    label: str = Field(description="The stored label")
    sample: SampleOut = Field(description="The character's picture, stored as a sample")


class CorrectionOut(BaseModel):
    reading: ReadingOut
    corrected: list[CorrectedCharacterOut] = Field(
        description="The characters read wrong, each now a sample (source `reading`)"
    )


# --- Models ---------------------------------------------------------------------------------


class ScoreChangeOut(BaseModel):
    against: int | None = Field(description="The version compared with")
    test: float | None = Field(description="NIST test accuracy, this version's minus the other's")
    holdout: float | None = Field(description="Accuracy on NIST writers no model trained on")
    evaluation: float | None = Field(description="Accuracy on users' evaluation uploads")


class VersionChangeOut(BaseModel):
    """What the version's training run measured, on the same images for both versions."""

    previous: ScoreChangeOut | None = Field(description="Against the version serving then")
    baseline: ScoreChangeOut | None = Field(description="Against the label set's baseline")
    training_uploads: int = Field(description="Users' uploads it trained on")
    evaluation_uploads: int = Field(description="Users' evaluation uploads it was judged on")
    notes: list[str] = Field(description="Why a figure is missing")


class ModelOut(BaseModel):
    version: int
    status: str
    labels: str
    architecture: str
    onnx_sha256: str
    onnx_bytes: int
    metrics: dict[str, Any]
    training_run_id: int | None
    created_at: datetime
    activated_at: datetime | None
    blessed_at: datetime | None = Field(description="When it was made its label set's baseline")
    baseline: bool = Field(
        description="The gate's fixed reference: no promoted model may fall more than "
        "GATE_MAX_NIST_DROP below it"
    )
    change: VersionChangeOut | None = Field(
        default=None,
        description="What its training run measured (null: no run made it, e.g. the bundled)",
    )


class ModelDetail(ModelOut):
    report: dict[str, Any]


# --- Training runs --------------------------------------------------------------------------


class TrainingRunOut(BaseModel):
    id: int
    status: str
    trigger: str
    full_retrain: bool
    progress: float = Field(description="0..1 over the whole run, every phase moving it")
    phase: str | None = Field(
        description="While running: loading, fetching (a first run downloading the NIST "
        "data), training, calibrating, scoring, indexing, judging or registering"
    )
    phase_detail: str | None = Field(
        default=None, description="How far the phase is, in words (fetching: megabytes)"
    )
    epoch: int
    epochs: int
    metrics: dict[str, Any] | None
    decision: str | None
    decision_reason: str | None
    error: str | None = Field(
        description="Why the run failed, in a line, for admins (it names the server's files); "
        "others are told its kind"
    )
    sample_watermark: int
    attempts: int
    gated_against: int | None = Field(
        description="The model version the candidate was compared with (the one active then)"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class TrainingRunRequest(BaseModel):
    full_retrain: bool = Field(
        default=False, description="Train from scratch on all NIST data instead of warm-starting"
    )


# --- API keys -------------------------------------------------------------------------------


class KeyIn(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]+$",  # printable: no control characters (nor NUL)
        description="Who or what holds the key",
    )
    role: Role = Field(
        description="admin: everything; labeller: trusted labels (never held as suspect, its "
        "evaluation samples judge candidates), not rate-limited; client: an application, "
        "rate-limited"
    )


class KeyOut(BaseModel):
    id: int
    name: str
    role: Role
    prefix: str = Field(description="The key's public part: hwk_<prefix>_...")
    created_at: datetime
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, never stored")
