"""One Settings object for every process, read from the environment (and an optional .env)."""

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
# NIST's official EMNIST archive (gzip IDX files inside a zip), about 560 MB.
NIST_EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"

# The 47 EMNIST-balanced classes: digits, uppercase letters, and the lowercase letters
# that do not look like their uppercase form.
EMNIST_BALANCED_LABELS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"


class Settings(BaseSettings):
    # An empty variable (`FOO=` in .env) means "the default", not an empty value.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    # Where things live.
    database_url: str = Field(
        default=f"sqlite:///{REPO_ROOT / 'var' / 'handwriting.db'}",
        description="SQLAlchemy URL. Postgres in production: postgresql+psycopg://...",
    )
    broker_url: str = Field(
        default=f"sqla+sqlite:///{REPO_ROOT / 'var' / 'broker.db'}",
        description="Celery broker. Redis in production: redis://host:6379/0",
    )
    task_queue: str = Field(default="handwriting", description="Celery queue name.")
    nist_data_dir: Path = Field(
        default=REPO_ROOT.parent / "shared" / "data",
        description="Directory with the EMNIST files (emnist/ and emnist-holdout/).",
    )
    nist_source: str = Field(
        default=NIST_EMNIST_URL,
        description="Where a retrain fetches the NIST data from when NIST_DATA_DIR has none: "
        "NIST's EMNIST archive (a URL, a file:// URL or a path to gzip.zip) or a directory laid "
        "out as NIST_DATA_DIR (trainer/fetch.py).",
    )
    cache_dir: Path = Field(
        default=REPO_ROOT / "var" / "cache",
        description="Writable directory for derived data (the de-duplicated NIST pool).",
    )

    # What the model recognises.
    labels: str = Field(default=EMNIST_BALANCED_LABELS, description="The label set.")

    # Learning loop.
    retrain_threshold: int = Field(default=100, ge=1)
    retrain_architecture: str = Field(default="cnn", description="trainer.model architecture")
    retrain_epochs: int = Field(default=2, ge=1, description="Epochs of a warm-start retrain.")
    retrain_nist_samples: int = Field(
        default=30_000, ge=1, description="NIST training images drawn for a warm-start retrain."
    )
    retrain_learning_rate: float = Field(default=1e-3, gt=0)
    retrain_rendered_per_kind: int = Field(
        default=300,
        ge=0,
        description="Pictures of each kind people send (testkit/corpus.py) rendered from a warm "
        "retrain's NIST sample and preprocessed as the API does (trainer/rendered.py), so that a "
        "retrain keeps what the starter model learnt about how pictures look; 0: none.",
    )
    full_retrain_epochs: int = Field(default=4, ge=1)
    full_retrain_nist_samples: int | None = Field(
        default=None, ge=1, description="NIST images for a full retrain (None: all of them)."
    )
    full_retrain_rendered_per_kind: int = Field(
        default=2000, ge=0, description="The same for a retrain from scratch (the starter's)."
    )
    upload_share: float = Field(
        default=0.1, gt=0, lt=1, description="Share of each epoch made of (oversampled) uploads."
    )
    max_upload_oversample: int = Field(default=50, ge=1)
    gate_max_nist_drop: float = Field(
        default=0.005,
        ge=0,
        description="How far below the baseline, and below the active model, a candidate's "
        "NIST test and holdout accuracy may fall.",
    )
    gate_max_class_drop: float = Field(
        default=0.03,
        ge=0,
        description="A class of the NIST test split whose loss against the baseline or the "
        "active model is significant (McNemar, 5% family-wise) is refused from this loss on.",
    )
    gate_min_class_images: int = Field(
        default=50, ge=1, description="Classes with fewer NIST test images are not compared."
    )
    max_key_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Most of a class's new training samples one uploader (a key, or an "
        "anonymous address) gives to one run; the rest wait for a later run. Samples from "
        "admin and labeller keys, and confirmed ones, are not counted against anyone.",
    )
    evidence_neighbours: int = Field(
        default=20, ge=1, le=200, description="NIST examples an upload is compared with."
    )
    evidence_max_label_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="An upload contradicts its label when at most this share of its nearest "
        "NIST examples carry it...",
    )
    evidence_depth: float = Field(
        default=0.4,
        ge=0,
        le=1,
        description="...and it sits at least as deep among them as this share of NIST's own "
        "examples of their class (0.5: as the median one). Such an upload is held as suspect. "
        "0.4 holds 68% of NIST 1s labelled 7 and at most 1.3% of honest uploads of every kind "
        "(bench/bench_evidence.py, docs/BENCHMARKS.md).",
    )
    registry_lock_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long an activation waits for the registry lock before answering 409.",
    )
    evaluation_key: str = Field(
        default="",
        description="Secret keying which samples are kept for evaluation (empty: one generated "
        "once and stored in the database).",
    )
    run_stale_seconds: float = Field(
        default=180.0, gt=0, description="A running run without heartbeat this long is retried."
    )
    max_run_attempts: int = Field(default=3, ge=1)

    # Security and limits.
    admin_token: str = Field(
        default="", description="Bearer token for admin routes (besides admin API keys)."
    )
    anonymous_uploads: bool = Field(
        default=True,
        description="Whether a client without an API key may store samples (uploads and "
        "corrections); predictions and readings stay open to it either way.",
    )
    key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long an API process trusts a key it has checked (a revocation takes "
        "effect within this time).",
    )
    max_upload_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    max_decode_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1,
        description="Most memory one picture's decode may take, judged from its header before "
        "decoding (core/images.py: bytes per pixel by how it is decoded).",
    )
    api_cpu_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Threads of each API process's pool for CPU work (decoding, preprocessing, "
        "inference, heat maps): at most this many pictures are worked on at once per process.",
    )
    rate_limit_storage_url: str = Field(
        default="",
        description="Where rate-limit counters live, shared by every API process: a redis:// "
        "URL, or memory:// (one process). Empty: the broker when it is Redis, else memory.",
    )
    rate_limit_cpu_anonymous: str = Field(
        default="5000/minute",
        description="CPU milliseconds the API may spend for one anonymous address.",
    )
    rate_limit_cpu_client: str = Field(
        default="30000/minute", description="CPU milliseconds per `client` key."
    )
    rate_limit_storage_anonymous: str = Field(
        default="20000/hour", description="Kilobytes of pictures one anonymous address may store."
    )
    rate_limit_storage_client: str = Field(
        default="200000/hour", description="Kilobytes of pictures per `client` key."
    )
    max_batch_images: int = Field(default=256, ge=1)
    max_batch_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_reading_characters: int = Field(
        default=64, ge=1, description="At most this many characters are read in one row."
    )
    cors_origins: list[str] = Field(default_factory=list)

    # Serving.
    model_poll_seconds: float = Field(
        default=5.0, gt=0, description="How often each API process checks the active model."
    )
    onnx_intra_op_threads: int = Field(default=1, ge=1)
    low_confidence_threshold: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="A prediction less (calibrated) confident than this is flagged as unsure.",
    )

    # Observability.
    log_level: str = "INFO"

    @field_validator("nist_source")
    @classmethod
    def _empty_source_is_nists_archive(cls, value: str) -> str:
        # Compose passes .env's NIST_SOURCE (empty: the nist-data service's default folder).
        return value.strip() or NIST_EMNIST_URL

    @field_validator("labels")
    @classmethod
    def _labels_are_distinct_characters(cls, value: str) -> str:
        if not value:
            raise ValueError("LABELS must not be empty")
        if len(set(value)) != len(value):
            raise ValueError("LABELS must not repeat a character")
        if any(c.isspace() for c in value):
            raise ValueError("LABELS must not contain whitespace")
        return value

    @field_validator(
        "rate_limit_cpu_anonymous",
        "rate_limit_cpu_client",
        "rate_limit_storage_anonymous",
        "rate_limit_storage_client",
    )
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        from limits import parse  # the format of the library that enforces them

        parse(value)
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def rate_limit_storage(self) -> str:
        if self.rate_limit_storage_url:
            return self.rate_limit_storage_url
        return self.broker_url if self.broker_url.startswith("redis") else "memory://"


@lru_cache
def get_settings() -> Settings:
    return Settings()
