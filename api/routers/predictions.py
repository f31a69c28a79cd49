"""/v1/predictions: what the serving model reads in an image."""

import base64
import io
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, Form, Query, UploadFile
from PIL import Image

from api.deps import PredictorDep, SettingsDep, allowed_labels, sent_once
from api.errors import NO_MODEL, ApiError, image_error
from api.ratelimit import MeterDep
from api.routers import API_PREFIX
from api.schemas import (
    BatchItemOut,
    BatchPredictionOut,
    CandidateOut,
    PredictionOut,
    TimingsOut,
)
from core.images import ImageError
from domain.predictor import Prediction, Predictor, Timings

router = APIRouter(prefix=f"{API_PREFIX}/predictions", tags=["predictions"])


def glyph_png(glyph: np.ndarray) -> str:
    """A 28x28 picture in [0, 1] as a base64 PNG: the model's input (white ink on black, as the
    model sees it), or a heat map (white where it matters most)."""
    buffer = io.BytesIO()
    Image.fromarray(np.rint(glyph * 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


Include = Literal["input", "heatmap"]

# Every class is equal a priori for the model (trainer/calibrate.py); a client that knows its
# field holds only some characters says so, and the answer is chosen among them.
LabelsField = Annotated[
    str | None,
    Form(max_length=128, description="Only these characters may be the answer, e.g. 0123456789"),
]


def to_out(
    prediction: Prediction,
    version: int,
    timings: Timings,
    include: set[Include],
    allowed: str | None,
) -> PredictionOut:
    heatmap = prediction.heatmap
    return PredictionOut(
        label=prediction.label,
        confidence=prediction.confidence,
        top=[CandidateOut(label=c.label, probability=c.probability) for c in prediction.top],
        low_confidence=prediction.doubt is not None,
        doubt=prediction.doubt,
        model_version=version,
        allowed_labels=allowed,
        timings=TimingsOut(**timings.__dict__),
        input=glyph_png(prediction.glyph) if "input" in include else None,
        heatmap=glyph_png(heatmap) if heatmap is not None else None,
    )


def predict_one(
    predictor: Predictor, data: bytes, allowed: str | None, include: set[Include]
) -> PredictionOut:
    """Decode, preprocess, infer (and the heat map, asked for) and the reply's pictures: the
    whole of a prediction's CPU work, done in the pool."""
    prediction, timings = predictor.predict(data, allowed, heatmap="heatmap" in include)
    return to_out(prediction, predictor.model.version, timings, include, allowed)


@router.post("", responses=NO_MODEL, dependencies=[sent_once("image", "labels")])
async def predict(
    image: Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP or GIF")],
    predictor: PredictorDep,
    settings: SettingsDep,
    meter: MeterDep,
    labels: LabelsField = None,
    include: Annotated[
        list[Include] | None,
        Query(
            description="`input`: also return the 28x28 picture the model saw; `heatmap`: "
            "where it looked (occlusion sensitivity, 28x28). Repeat for both."
        ),
    ] = None,
) -> PredictionOut:
    """Predict the character in one image."""
    allowed = allowed_labels(labels, predictor.model.labels)
    # Reading one byte past the limit tells "too large" from "exactly at the limit".
    data = await image.read(settings.max_upload_bytes + 1)
    try:
        return await meter.run(predict_one, predictor, data, allowed, set(include or []))
    except ImageError as exc:
        raise image_error(exc, settings) from exc


def batch_item(index: int, filename: str | None, result: Prediction | ImageError) -> BatchItemOut:
    if isinstance(result, ImageError):
        return BatchItemOut(
            index=index, filename=filename, error=result.code, detail=result.message
        )
    return BatchItemOut(
        index=index,
        filename=filename,
        label=result.label,
        confidence=result.confidence,
        top=[CandidateOut(label=c.label, probability=c.probability) for c in result.top],
        low_confidence=result.doubt is not None,
        doubt=result.doubt,
    )


@router.post("/batch", responses=NO_MODEL, dependencies=[sent_once("labels")])
async def predict_batch(
    images: Annotated[list[UploadFile], File(description="Up to MAX_BATCH_IMAGES images")],
    predictor: PredictorDep,
    settings: SettingsDep,
    meter: MeterDep,
    labels: LabelsField = None,
) -> BatchPredictionOut:
    """Predict many images in one model call. A bad image gets its own error entry."""
    allowed = allowed_labels(labels, predictor.model.labels)
    if len(images) > settings.max_batch_images:
        raise ApiError(
            413,
            "too_many_images",
            f"{len(images)} images sent; at most {settings.max_batch_images} per batch",
            max_batch_images=settings.max_batch_images,
        )
    payloads = [await upload.read(settings.max_upload_bytes + 1) for upload in images]
    results, timings = await meter.run(predictor.predict_many, payloads, allowed)
    return BatchPredictionOut(
        model_version=predictor.model.version,
        allowed_labels=allowed,
        results=[
            batch_item(index, upload.filename, result)
            for index, (upload, result) in enumerate(zip(images, results, strict=True))
        ],
        timings=TimingsOut(**timings.__dict__),
    )
