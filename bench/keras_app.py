"""The usual alternative, for comparison only: the way earlier projects served such a model.

A FastAPI app that loads the Keras model (the bundled weights) once per process and calls
`model.predict` on each request, with the same decoding and preprocessing as the service.
Served by uvicorn exactly like the service (bench/bench_predict.py starts it):

    .venv/bin/python -m uvicorn bench.keras_app:app --workers 2

TensorFlow keeps its defaults (its thread pools use every core), as such apps usually do.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile

from core.config import REPO_ROOT, get_settings
from core.images import ImageError, decode_image
from core.labels import LabelSet
from core.preprocessing import preprocess_image

BUNDLED = REPO_ROOT / "trainer" / "bundled"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    from trainer.model import build_model

    labels = LabelSet((BUNDLED / "labels.txt").read_text().strip())
    model = build_model("cnn", len(labels))
    model.load_weights(BUNDLED / "model.weights.h5")
    app.state.model, app.state.labels = model, labels
    yield


app = FastAPI(title="Keras model.predict per request (benchmark baseline)", lifespan=lifespan)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/predictions")
def predict(
    image: Annotated[UploadFile, File()],
    request: Request,
) -> dict[str, Any]:
    settings = get_settings()
    data = image.file.read(settings.max_upload_bytes + 1)
    try:
        decoded = decode_image(
            data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
        )
    except ImageError as exc:
        raise HTTPException(422, exc.message) from exc
    batch = preprocess_image(decoded.image)[np.newaxis, :, :, np.newaxis]
    probabilities = request.app.state.model.predict(batch, verbose=0)[0]
    best = np.argsort(probabilities)[::-1][:5]
    characters = request.app.state.labels.characters
    top = [{"label": characters[i], "probability": float(probabilities[i])} for i in best]
    return {"label": top[0]["label"], "confidence": top[0]["probability"], "top": top}
