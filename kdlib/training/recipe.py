"""The fine-tuning recipe, apart from the torch code that follows it so that a command line can build flags from it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FineTuneRecipe(BaseModel):
    """How a classifier is fine-tuned on labels. Part of every cache key that depends on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(8e-5, gt=0, le=1)
    epochs: int = Field(2, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int = Field(64, ge=8, le=4096)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_train_examples: int | None = Field(None, ge=1)
    seed: int = 0
