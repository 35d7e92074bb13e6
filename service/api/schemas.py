"""Response schemas for the OpenAPI document. Handlers return orjson responses of these shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(examples=["model 'vgg' not found; available models: flatten, gap"])


class VersionStatus(BaseModel):
    version: int
    state: str = Field(examples=["ready"], description="available, loading, ready or failed")
    error: str | None = None
    load_seconds: float | None = None


class InputSpec(BaseModel):
    shape: list[int] = Field(examples=[[28, 28, 1]], description="height, width, channels")
    dtype: str = Field(examples=["uint8"])
    channels: str = Field(examples=["L"], description="L (grayscale) or RGB")


class LayerSpec(BaseModel):
    name: str = Field(examples=["conv1"])
    shape: list[int] = Field(examples=[[28, 28, 32]])
    kind: str = Field(examples=["map"])


class ModelSummary(BaseModel):
    name: str = Field(examples=["gap"])
    served_version: int | None = Field(examples=[1])
    versions: list[VersionStatus]
    device: str | None = Field(None, examples=["/CPU:0"])
    variant: str | None = None
    bridge: str | None = None
    input: InputSpec | None = None
    classes: list[str] | None = None
    layers: list[LayerSpec] | None = None
    accuracy: float | None = Field(None, description="held-out accuracy from training")
    parameters: int | None = None
    endpoints: dict[str, str] = Field(default_factory=dict)


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelDetail(ModelSummary):
    card: dict[str, Any] = Field(description="the model card of the version shown")


class Score(BaseModel):
    label: str = Field(examples=["7"])
    index: int = Field(examples=[7])
    score: float = Field(examples=[0.987])


class ImageInfo(BaseModel):
    filename: str | None = Field(None, examples=["seven.png"])
    format: str = Field(examples=["PNG"])
    original_size: list[int] = Field(
        examples=[[280, 280]], description="width, height as sent, after EXIF orientation"
    )
    original_mode: str = Field(examples=["RGBA"])
    frames: int = Field(examples=[1], description="frames in the file; the first is used")
    model_size: list[int] = Field(examples=[[28, 28]], description="width, height fed to the model")
    resize_filter: str = Field(examples=["bilinear"])


class Prediction(BaseModel):
    top_k: list[Score]
    image: ImageInfo


class ClassifyResponse(BaseModel):
    model: str = Field(examples=["gap"])
    version: int = Field(examples=[1])
    device: str = Field(examples=["/CPU:0"])
    predictions: list[Prediction]
    timings_ms: dict[str, float] = Field(examples=[{"decode": 0.4, "queue": 1.1, "compute": 2.3}])


class LayerValues(BaseModel):
    shape: list[int]
    dtype: str = Field(examples=["float32"])
    kind: str = Field(examples=["map"], description="map (h, w, c) or vector (c)")
    reduce: str = Field(examples=["none"])
    channels: list[int] = Field(description="indices of the channels returned")
    total_channels: int
    min: float | None
    max: float | None
    mean: float | None
    values: Any = Field(description="nested lists in the stated shape")


class FeatureMapsResponse(BaseModel):
    model: str
    version: int
    image: ImageInfo
    layers: dict[str, LayerValues]
    timings_ms: dict[str, float]


class ExplainResponse(BaseModel):
    model: str = Field(examples=["gap"])
    version: int = Field(examples=[1])
    layer: str | None = Field(
        examples=["conv3"], description="the spatial layer whose maps Grad-CAM weighs"
    )
    image: ImageInfo
    class_index: int = Field(examples=[7], description="the class explained")
    label: str = Field(examples=["7"])
    score: float = Field(examples=[0.987], description="the class's probability")
    heatmap: list[list[float]] = Field(
        description="height x width at the model's input size, 0..1 (all 0: no evidence)"
    )
    timings_ms: dict[str, float]


class Readiness(BaseModel):
    ready: bool
    models: dict[str, str] = Field(examples=[{"gap": "ready", "flatten": "loading"}])
    error: str | None = None
