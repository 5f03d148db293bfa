"""Supervised fine-tuning of a sequence classifier: AdamW, linear warm-up/decay, best-on-validation weights."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import datasets
import torch
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from distilsearch.kdlib.core.device import autocast
from distilsearch.kdlib.core.progress import progress_bar
from distilsearch.kdlib.data.batching import training_batches
from distilsearch.kdlib.measure.scoring import accuracy, labels_of, predict_logits
from distilsearch.kdlib.training.recipe import FineTuneRecipe

__all__ = ["FineTuneHistory", "FineTuneRecipe", "TrainingDivergedError", "fine_tune"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; training stopped."""


@dataclass
class FineTuneHistory:
    """What happened during fine-tuning: per-epoch validation accuracy, the chosen epoch, seconds taken."""

    validation_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = 0
    steps: int = 0
    seconds: float = 0.0


def fine_tune(
    model: PreTrainedModel,
    train_set: datasets.Dataset,
    validation_set: datasets.Dataset,
    recipe: FineTuneRecipe,
    *,
    pad_id: int,
    device: torch.device,
    progress: bool = True,
    description: str = "fine-tuning",
) -> FineTuneHistory:
    """Train ``model`` in place; it ends with the weights of the epoch with the best validation accuracy."""
    started = time.perf_counter()
    torch.manual_seed(recipe.seed)
    if recipe.max_train_examples is not None and len(train_set) > recipe.max_train_examples:
        train_set = train_set.shuffle(seed=recipe.seed).select(range(recipe.max_train_examples))
    model.to(device).train()
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.learning_rate,
    )
    steps_per_epoch = math.ceil(len(train_set) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * total_steps), total_steps)
    history = FineTuneHistory()
    best_state: dict[str, torch.Tensor] | None = None
    bar = progress_bar(total=total_steps, desc=description, unit="step", disable=not progress)
    for epoch in range(recipe.epochs):
        model.train()
        for batch in training_batches(train_set, recipe.batch_size, pad_id, recipe.seed, epoch):
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            with autocast(device):
                loss = model(**batch).loss
            if not torch.isfinite(loss):
                bar.close()
                raise TrainingDivergedError(f"loss became {loss.item()} at step {history.steps} (epoch {epoch})")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            history.steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        logits = predict_logits(model, validation_set, pad_id=pad_id, device=device)
        history.validation_accuracy.append(accuracy(logits, labels_of(validation_set)))
        bar.set_postfix(val_acc=f"{history.validation_accuracy[-1]:.3f}")
        if history.validation_accuracy[-1] >= max(history.validation_accuracy):
            history.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict()) if recipe.epochs > 1 else None
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - started
    return history
