"""/v1/predictions: what the serving model reads in an image."""

import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.deps import SettingsDep, sent_once
from api.errors import ApiError
from api.inference import LoadedModel, ModelServer
from api.routers.samples import ERRORS, check_image
from api.schemas import ErrorOut
from core.config import Settings
from core.images import DecodedImage, ImageError, decode_image, pixel_count
from core.preprocessing import preprocess_batch, preprocess_image

router = APIRouter(prefix="/v1/predictions", tags=["predictions"])

NO_MODEL = ERRORS | {503: {"model": ErrorOut, "description": "No model serving yet"}}


class Candidate(BaseModel):
    label: str
    probability: float


class Timings(BaseModel):
    decode_ms: float
    preprocess_ms: float
    inference_ms: float


class Prediction(BaseModel):
    label: str
    confidence: float = Field(description="Probability of `label`")
    top: list[Candidate] = Field(description="The 5 most likely labels, best first")
    model_version: int
    timings: Timings


class BatchItem(BaseModel):
    index: int
    filename: str | None
    label: str | None = None
    confidence: float | None = None
    top: list[Candidate] | None = None
    error: str | None = Field(default=None, description="Set when this image was not usable")
    detail: str | None = None


class BatchPrediction(BaseModel):
    model_version: int
    results: list[BatchItem]
    timings: Timings


def serving_model(request: Request) -> LoadedModel:
    server: ModelServer = request.app.state.model_server
    model = server.current or server.refresh()
    if model is None:
        raise ApiError(
            503,
            "no_model",
            "no model is serving yet: train one or install the bundled model",
            headers={"Retry-After": "10"},
        )
    return model


def top_candidates(model: LoadedModel, probabilities: np.ndarray, k: int = 5) -> list[Candidate]:
    best = np.argsort(probabilities)[::-1][:k]
    return [
        Candidate(label=model.labels.characters[i], probability=float(probabilities[i]))
        for i in best
    ]


def ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


# A picture up to this size (a canvas drawing, a scanned glyph) is predicted right on the
# event loop: it takes a few ms at most, less than the hop to the thread pool and back. A
# bigger one (a phone photo, a bomb-sized PNG) goes to the thread pool so that the loop keeps
# answering other requests meanwhile.
INLINE_MAX_PIXELS = 320 * 320


@router.post("", responses=NO_MODEL, dependencies=[sent_once("image")])
async def predict(
    image: Annotated[UploadFile, File(description="PNG, JPEG, WebP, BMP or GIF")],
    request: Request,
    settings: SettingsDep,
) -> Prediction:
    """Predict the character in one image."""
    model = serving_model(request)  # held for the whole request, even if a swap happens
    # Reading one byte past the limit tells "too large" from "exactly at the limit".
    data = await image.read(settings.max_upload_bytes + 1)
    pixels = pixel_count(data)
    if pixels is None or pixels <= INLINE_MAX_PIXELS:  # None: not an image, refused at once
        return predict_image(data, model, settings)
    return await run_in_threadpool(predict_image, data, model, settings)


def predict_image(data: bytes, model: LoadedModel, settings: Settings) -> Prediction:
    """Decode, preprocess and run one image: the whole prediction of `POST /v1/predictions`."""
    start = time.perf_counter()
    decoded = check_image(data, settings.max_upload_bytes, settings.max_image_pixels)
    decode_ms = ms_since(start)
    start = time.perf_counter()
    batch = preprocess_image(decoded.image)[np.newaxis, :, :, np.newaxis]
    preprocess_ms = ms_since(start)
    start = time.perf_counter()
    probabilities = model.probabilities(batch)[0]
    inference_ms = ms_since(start)
    top = top_candidates(model, probabilities)
    return Prediction(
        label=top[0].label,
        confidence=top[0].probability,
        top=top,
        model_version=model.version,
        timings=Timings(
            decode_ms=decode_ms, preprocess_ms=preprocess_ms, inference_ms=inference_ms
        ),
    )


def decode_upload(image: UploadFile, settings: Settings) -> DecodedImage:
    data = image.file.read(settings.max_upload_bytes + 1)
    return decode_image(
        data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
    )


@router.post("/batch", responses=NO_MODEL)
def predict_batch(
    images: Annotated[list[UploadFile], File(description="Up to MAX_BATCH_IMAGES images")],
    request: Request,
    settings: SettingsDep,
) -> BatchPrediction:
    """Predict many images in one model call. A bad image gets its own error entry."""
    if len(images) > settings.max_batch_images:
        raise ApiError(
            413,
            "too_many_images",
            f"{len(images)} images sent; at most {settings.max_batch_images} per batch",
            max_batch_images=settings.max_batch_images,
        )
    model = serving_model(request)
    start = time.perf_counter()
    results: list[BatchItem] = []
    decoded: dict[int, DecodedImage] = {}
    for index, upload in enumerate(images):
        try:
            decoded[index] = decode_upload(upload, settings)
        except ImageError as exc:
            results.append(
                BatchItem(index=index, filename=upload.filename, error=exc.code, detail=exc.message)
            )
    decode_ms = ms_since(start)
    start = time.perf_counter()
    order = sorted(decoded)
    tensors = preprocess_batch([decoded[i].image for i in order]) if order else None
    preprocess_ms = ms_since(start)
    start = time.perf_counter()
    if tensors is not None:
        probabilities = model.probabilities(tensors)
        for row, index in enumerate(order):
            top = top_candidates(model, probabilities[row])
            results.append(
                BatchItem(
                    index=index,
                    filename=images[index].filename,
                    label=top[0].label,
                    confidence=top[0].probability,
                    top=top,
                )
            )
    inference_ms = ms_since(start)
    results.sort(key=lambda item: item.index)
    return BatchPrediction(
        model_version=model.version,
        results=results,
        timings=Timings(
            decode_ms=decode_ms, preprocess_ms=preprocess_ms, inference_ms=inference_ms
        ),
    )
