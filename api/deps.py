"""Dependencies shared by the routers."""

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request, UploadFile
from sqlalchemy.orm import Session

from api.errors import ApiError, image_error
from core.config import Settings, get_settings
from core.images import DECODE_SIDE, DecodedImage, ImageError, decode_image
from core.labels import LabelSet
from db.session import get_db
from domain.predictor import LoadedModel, Predictor

# scope "function": the request's transaction commits before the reply is sent, so a 201 means
# stored (the default scope would commit after the reply: a failed commit the client never hears).
SessionDep = Annotated[Session, Depends(get_db, scope="function")]

# Keys as Postgres stores them: BIGINT ids (samples, training runs), INTEGER model versions. A
# number outside that range is refused by validation (422) instead of reaching the database,
# where it would be an out-of-range error and a 500.
BIGINT_MAX = 2**63 - 1
INTEGER_MAX = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
VersionNumber = Annotated[int, Path(ge=1, le=INTEGER_MAX)]

Row = TypeVar("Row")


def get_or_404(session: Session, model: type[Row], key: int, code: str, what: str) -> Row:
    """The row with this primary key, or a 404 that says which one is missing."""
    row = session.get(model, key)
    if row is None:
        raise ApiError(404, code, f"there is no {what} {key}")
    return row


def decode_upload(data: bytes, settings: Settings, side: int = DECODE_SIDE) -> DecodedImage:
    """An uploaded image's bytes decoded (a big JPEG at no less than `side`), or the 4xx saying
    what is wrong with it. CPU work: called in the pool (api/cpu.py)."""
    try:
        return decode_image(
            data,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            max_decode_bytes=settings.max_decode_bytes,
            side=side,
        )
    except ImageError as exc:
        raise image_error(exc, settings) from exc


def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """An uploaded file's bytes, one past the limit at most: "too large" is told from "exactly
    at the limit" without reading more."""
    return upload.file.read(settings.max_upload_bytes + 1)


async def current_settings() -> Settings:
    # async: FastAPI runs a plain `def` dependency in the thread pool, a hop per request.
    return get_settings()


SettingsDep = Annotated[Settings, Depends(current_settings)]


def sent_once(*fields: str) -> Any:
    """A route dependency refusing a form that repeats one of `fields` (e.g. two `image` files).

    FastAPI would quietly keep the last of the repeated values: the client then gets a reply
    about an image, or a label, other than the one it may have meant. Told instead of guessed.
    """

    async def check(request: Request) -> None:
        form = await request.form()  # already parsed for the route's own parameters: cached
        for name in fields:
            count = len(form.getlist(name))
            if count > 1:
                raise ApiError(
                    422,
                    "repeated_field",
                    f"the form field {name!r} was sent {count} times; send it once",
                    field=name,
                )

    return Depends(check)


async def get_label_set(settings: SettingsDep) -> LabelSet:
    # async for the same reason as current_settings: a frozen dataclass, nothing to wait for.
    return LabelSet(settings.labels)


LabelSetDep = Annotated[LabelSet, Depends(get_label_set)]


def allowed_labels(labels: str | None, model_labels: LabelSet) -> str | None:
    """The labels a field may hold, each one the serving model knows; None: all of them. A
    look-alike lowercase letter the set merges (c, o, s...) stands for its class, as it does
    for an upload's label."""
    if not labels:
        return None
    classes = {c: model_labels.resolve(c) for c in labels}
    unknown = sorted(c for c, label in classes.items() if label is None)
    if unknown:
        raise ApiError(
            422,
            "invalid_labels",
            f"{''.join(unknown)!r} not among the model's labels {model_labels.characters!r}",
            allowed=model_labels.classes,
        )
    known = {label for label in classes.values() if label is not None}
    return "".join(sorted(known, key=model_labels.characters.index))


async def get_serving_model(request: Request) -> LoadedModel | None:
    """The model serving now (None before one is loaded), held for the whole request even if
    a swap happens meanwhile. async: no thread-pool hop per request."""
    server = request.app.state.model_server
    return server.current or server.refresh()


ServingModelDep = Annotated[LoadedModel | None, Depends(get_serving_model)]


async def get_serving_predictor(model: ServingModelDep, settings: SettingsDep) -> Predictor | None:
    """A predictor on the model serving now; None before one is loaded (an upload is stored
    without the model's opinion then)."""
    return Predictor.from_settings(model, settings) if model is not None else None


ServingPredictorDep = Annotated[Predictor | None, Depends(get_serving_predictor)]


async def get_predictor(predictor: ServingPredictorDep) -> Predictor:
    """A predictor on the model serving now; 503 until a model is loaded."""
    if predictor is None:
        raise ApiError(
            503,
            "no_model",
            "no model is serving yet: train one or install the bundled model",
            headers={"Retry-After": "10"},
        )
    return predictor


PredictorDep = Annotated[Predictor, Depends(get_predictor)]
