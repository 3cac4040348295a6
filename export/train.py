"""Training loops: `frozen` (encoder frozen, head + lexical branch on cached pooled embeddings) and
`finetune` (everything trains). Deterministic for a seed on this CPU.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from export.config import ProgressHook, TrainConfig, no_progress
from export.model import TorchCategorizer, joint_loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pad(batch: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(x) for x in batch))
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Batches of similar length (little padding). With an rng: shuffled pools, shuffled batch order."""
    indices = list(range(len(lengths)))
    if rng is None:
        indices.sort(key=lambda i: lengths[i])
        return [indices[s : s + batch_size] for s in range(0, len(indices), batch_size)]
    rng.shuffle(indices)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for s in range(0, len(indices), pool):
        chunk = sorted(indices[s : s + pool], key=lambda i: lengths[i])
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def pooled_embeddings(model: TorchCategorizer, ids: Sequence[Sequence[int]], batch_size: int,
                      progress: ProgressHook = no_progress, description: str = "embedding") -> torch.Tensor:
    """Mean-pooled (unnormalized) encoder outputs, in input order."""
    model.eval()
    out = torch.zeros((len(ids), model.encoder.config.hidden_size))
    advance = progress(description, len(ids))
    for batch in length_batches([len(x) for x in ids], batch_size, None):
        input_ids, mask = pad([ids[i] for i in batch])
        out[batch] = model.pooled(input_ids, mask)
        advance(len(batch))
    return out


def _schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_frozen(model: TorchCategorizer, ids: Sequence[Sequence[int]], targets: np.ndarray, config: TrainConfig,
                 progress: ProgressHook = no_progress, offsets: np.ndarray | None = None,
                 pooled: torch.Tensor | None = None) -> dict[str, float]:
    """Encoder frozen: cache pooled embeddings once, then train head and lexical branch.

    `offsets` [N, C]: fixed logits added to the model's while training (see `joint_loss`).
    `pooled` [N, d]: `pooled_embeddings` of `ids`, when the caller has them already (the build
    also fits the drift centroids on them, so the training rows are embedded once)."""
    seed_everything(config.seed)
    offset = None if offsets is None else torch.tensor(offsets, dtype=torch.float32)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    if pooled is None:
        pooled = pooled_embeddings(model, ids, 64, progress, "frozen encoder: embedding train split")
    y = torch.tensor(targets, dtype=torch.float32)
    params = [{"params": model.head.parameters(), "lr": config.lr_head * 3}]
    if model.lexical is not None and model.lexical.project is not None:
        params.append({"params": model.lexical.project.parameters(), "lr": config.lr_lexical})
    optimizers = [torch.optim.Adam(params), *_sparse_optimizer(model, config)]
    rng = random.Random(config.seed)
    lengths = [len(x) for x in ids]
    epochs = max(config.epochs, 8)  # head-only epochs are cheap; more of them make up for the frozen encoder
    batches_per_epoch = math.ceil(len(ids) / config.batch_size)
    advance = progress("frozen encoder: training head + lexical branch", epochs * batches_per_epoch)
    model.train()
    loss_value = 0.0
    threads = torch.get_num_threads()
    # Every op here is tiny ([batch, hidden] at most): a second intra-op thread only adds
    # synchronization, which on a loaded 2-core machine made this loop 20x slower (37 s vs 2 s for
    # 2,048 steps, measured here).
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            for batch in length_batches(lengths, config.batch_size, rng):
                if model.lexical is None:  # the head alone reads only the cached embeddings
                    transformer, lexical = model.head(model.dropout(pooled[batch])), None
                else:
                    input_ids, mask = pad([ids[i] for i in batch])
                    transformer, lexical = model.branch_logits(pooled[batch], input_ids, mask)
                loss = joint_loss(transformer, lexical, y[batch], config.aux_weight,
                                  None if offset is None else offset[batch])
                loss_value = _step(loss, optimizers)
                advance(1)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return {"epochs": epochs, "final_loss": loss_value}


def _step(loss: torch.Tensor, optimizers: list[torch.optim.Optimizer], clip: list[torch.Tensor] | None = None,
          scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> float:
    """One optimization step over every optimizer; gradient clipping only on dense parameters."""
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(clip, 1.0)
    for optimizer in optimizers:
        optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()


def _sparse_optimizer(model: TorchCategorizer, config: TrainConfig) -> list[torch.optim.Optimizer]:
    """SparseAdam for the lexical table (its gradients are sparse rows)."""
    if model.lexical is None:
        return []
    return [torch.optim.SparseAdam(list(model.lexical.table.parameters()), lr=config.lr_lexical)]


def train_finetune(model: TorchCategorizer, ids: Sequence[Sequence[int]], targets: np.ndarray, config: TrainConfig,
                   progress: ProgressHook = no_progress, offsets: np.ndarray | None = None) -> dict[str, float]:
    """Encoder, head and lexical branch train together, with per-part learning rates.

    `offsets` [N, C]: fixed logits added to the model's while training (see `joint_loss`)."""
    seed_everything(config.seed)
    offset = None if offsets is None else torch.tensor(offsets, dtype=torch.float32)
    y = torch.tensor(targets, dtype=torch.float32)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm")
    encoder_decay = [p for n, p in model.encoder.named_parameters() if not any(k in n for k in no_decay)]
    encoder_plain = [p for n, p in model.encoder.named_parameters() if any(k in n for k in no_decay)]
    groups = [
        {"params": encoder_decay, "lr": config.lr_encoder, "weight_decay": config.weight_decay},
        {"params": encoder_plain, "lr": config.lr_encoder, "weight_decay": 0.0},
        {"params": list(model.head.parameters()), "lr": config.lr_head, "weight_decay": 0.0},
    ]
    if model.lexical is not None and model.lexical.project is not None:
        groups.append({"params": list(model.lexical.project.parameters()), "lr": config.lr_lexical,
                       "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups)
    sparse = _sparse_optimizer(model, config)
    dense_params = [p for g in groups for p in g["params"]]
    rng = random.Random(config.seed)
    lengths = [len(x) for x in ids]
    batches_per_epoch = math.ceil(len(ids) / config.batch_size)
    total = config.epochs * batches_per_epoch
    scheduler = _schedule(optimizer, total, config.warmup)
    advance = progress("fine-tuning encoder + head + lexical branch", total)
    model.train()
    loss_value = 0.0
    for _ in range(config.epochs):
        for batch in length_batches(lengths, config.batch_size, rng):
            input_ids, mask = pad([ids[i] for i in batch])
            pooled = model.pooled(input_ids, mask)
            transformer, lexical = model.branch_logits(pooled, input_ids, mask)
            loss = joint_loss(transformer, lexical, y[batch], config.aux_weight,
                              None if offset is None else offset[batch])
            loss_value = _step(loss, [optimizer, *sparse], clip=dense_params, scheduler=scheduler)
            advance(1)
    model.eval()
    return {"epochs": config.epochs, "final_loss": loss_value}


def iterate_chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
