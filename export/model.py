"""The trainable categorizer (torch, build time only).

One module, one graph: a pretrained transformer encoder, mean pooling, a linear head, and a lexical
branch fed by the same `input_ids` (hashed unigram and bigram token features into a linear layer,
fastText-style). The two branches' logits add up; each also gets its own auxiliary loss while
training so that neither starves the other. Outputs: the L2-normalized pooled embedding and the
sigmoid probabilities, exactly what the ONNX graph exposes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel

# A prime bucket count keeps bigram keys (a * vocab + b) spread without a real hash op in the graph.
BIGRAM_BUCKETS = 262_139
LEXICAL_MAX_RANK = 32


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class LexicalBranch(nn.Module):
    """Bag of hashed token unigrams and bigrams -> logits, normalized by sqrt(token count)."""

    def __init__(self, vocab_size: int, num_labels: int, buckets: int = BIGRAM_BUCKETS) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.buckets = buckets
        rank = num_labels if num_labels <= LEXICAL_MAX_RANK else LEXICAL_MAX_RANK
        # sparse: each step touches a few hundred rows of a ~300k-row table; dense Adam over all of it
        # would dominate training time.
        self.table = nn.Embedding(vocab_size + buckets, rank, sparse=True)
        nn.init.zeros_(self.table.weight)
        # Many labels: factorize through a small rank so the table stays a few MB.
        self.project = None if rank == num_labels else nn.Linear(rank, num_labels, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        bigram_keys = input_ids[:, :-1] * self.vocab_size + input_ids[:, 1:]
        bigrams = torch.remainder(bigram_keys, self.buckets) + self.vocab_size
        bigram_mask = mask[:, :-1] * mask[:, 1:]
        features = torch.cat([input_ids, bigrams], dim=1)
        weights = torch.cat([mask, bigram_mask], dim=1)
        summed = (self.table(features) * weights.unsqueeze(-1)).sum(1)
        summed = summed / weights.sum(1, keepdim=True).clamp(min=1.0).sqrt()
        return summed if self.project is None else self.project(summed)


class TorchCategorizer(nn.Module):
    """Encoder + head + lexical branch. `forward` returns (embedding, probabilities)."""

    def __init__(self, encoder: nn.Module, num_labels: int, vocab_size: int, lexical: bool = True,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)
        self.lexical = LexicalBranch(vocab_size, num_labels) if lexical else None

    @classmethod
    def from_pretrained(cls, encoder_dir: Path, num_labels: int, lexical: bool = True) -> TorchCategorizer:
        encoder = AutoModel.from_pretrained(str(encoder_dir), local_files_only=True)
        return cls(encoder, num_labels, encoder.config.vocab_size, lexical=lexical)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def branch_logits(self, pooled: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        transformer = self.head(self.dropout(pooled))
        lexical = None if self.lexical is None else self.lexical(input_ids, attention_mask)
        return transformer, lexical

    def embedding_and_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalized embedding, logits): what the exported core graph returns."""
        pooled = self.pooled(input_ids, attention_mask)
        transformer, lexical = self.branch_logits(pooled, input_ids, attention_mask)
        logits = transformer if lexical is None else transformer + lexical
        return nn.functional.normalize(pooled, p=2, dim=1), logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, logits = self.embedding_and_logits(input_ids, attention_mask)
        return embedding, torch.sigmoid(logits)


def joint_loss(transformer: torch.Tensor, lexical: torch.Tensor | None, targets: torch.Tensor, aux_weight: float = 0.5,
               offset: torch.Tensor | None = None) -> torch.Tensor:
    """BCE of the summed logits plus auxiliary BCE of each branch alone (deep supervision).

    `offset` (the TF-IDF margins of these rows, fixed) joins the summed logits only: the branches
    learn what the margins get wrong, while each branch's own loss keeps it a classifier alone
    (the transformer's pooled embedding is also the drift signal).
    """
    bce = nn.functional.binary_cross_entropy_with_logits
    branches = [transformer] if lexical is None else [transformer, lexical]
    total = sum(branches[1:], branches[0]) if offset is None else sum(branches, offset)
    if len(branches) == 1 and offset is None:
        return bce(total, targets)  # nothing else in the sum: the auxiliary loss would repeat it
    return bce(total, targets) + aux_weight * sum(bce(branch, targets) for branch in branches)
