"""SASRec-style sequential retriever (Kang & McAuley, 2018), trained with full softmax cross-entropy.

Model: item embedding (index 0 = padding, tied with the output layer) scaled by sqrt(d) + learned
absolute position embedding over a left-padded window of ``max_len`` items, pre-LayerNorm causal
self-attention blocks, final LayerNorm. The user vector is the hidden state at the last position.

Loss: cross-entropy of the next item over ALL items at every real position, instead of the paper's
BCE with one sampled negative. For 1k-12k items the (positions x N) logits are cheap on a CPU, and
full CE converges in far fewer epochs and ranks better (Klenitskiy & Vasilev, RecSys 2023,
"Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?").

Training uses only the TRAIN part of every sequence (seq[:-2], last ``max_len + 1`` items); val
NDCG@10 (full ranking, history excluded) drives early stopping and the best state is restored.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from config import RetrievalConfig
from retrieval.data import PAD, EncodedSplit, left_pad
from retrieval.ranking_metrics import metrics_from_ranks, target_ranks

log = logging.getLogger(__name__)

EVAL_BATCH = 512  # users per scoring batch; (EVAL_BATCH, N) float64 stays small even for 12k items


class CausalBlock(nn.Module):
    """Pre-LN transformer block: causal multi-head self-attention + position-wise feed-forward.

    Args:
        hidden: model width d.
        heads: attention heads (must divide ``hidden``).
        dropout: dropout on attention weights and on both residual branches.
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d); allowed: (B, 1, T, T) bool, True where query i may attend to key j."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)  # 3 x (B, T, d)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, dh)
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, dh)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    """Self-attentive sequential recommender.

    Args:
        n_items: number of real items N (indices 1..N; 0 is padding).
        hidden: embedding / model width d.
        layers: number of causal attention blocks.
        heads: attention heads per block.
        max_len: length of the (left-padded) input window.
        dropout: embedding, attention and residual dropout.
    """

    def __init__(self, n_items: int, hidden: int, layers: int, heads: int, max_len: int, dropout: float):
        super().__init__()
        self.max_len = max_len
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(CausalBlock(hidden, heads, dropout) for _ in range(layers))
        self.final_ln = nn.LayerNorm(hidden)
        # Small init: the item table doubles as the output layer, N(0, 1) would start with huge logits.
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq: (B, T) left-padded item indices -> hidden states (B, T, d), zero at padding."""
        b, t = seq.shape
        valid = seq != PAD  # (B, T)
        pos = torch.arange(t, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(pos)  # (B, T, d)
        x = self.emb_drop(x) * valid.unsqueeze(-1)
        causal = torch.ones(t, t, dtype=torch.bool, device=seq.device).tril()  # (T, T)
        eye = torch.eye(t, dtype=torch.bool, device=seq.device)
        # Keys must be real items; a padding query may see itself so its softmax row is never empty
        # (an all-masked row gives NaN, which would leak into later layers through the values).
        allowed = (causal & (valid.unsqueeze(1) | eye)).unsqueeze(1)  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, allowed) * valid.unsqueeze(-1)
        return self.final_ln(x)

    def item_vectors(self) -> torch.Tensor:
        """(N, d) output vectors of items 1..N (tied with the input embedding)."""
        return self.item_emb.weight[1:]

    @torch.no_grad()
    def user_vectors(self, histories: Sequence[np.ndarray], device: torch.device) -> np.ndarray:
        """(U, d) float32 representation of each history (last ``max_len`` items), in eval mode."""
        was_training = self.training
        self.eval()
        padded = left_pad(histories, self.max_len)  # (U, T)
        out = []
        for start in range(0, len(padded), EVAL_BATCH):
            seq = torch.from_numpy(padded[start:start + EVAL_BATCH]).to(device)
            out.append(self(seq)[:, -1].float().cpu().numpy())  # (B, d)
        self.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.item_emb.embedding_dim), np.float32)


def full_ranking_ranks(user_vecs: np.ndarray, item_vecs: np.ndarray, split: EncodedSplit) -> np.ndarray:
    """(U,) rank of each target among all non-history items, scoring by inner product."""
    ranks = []
    for start in range(0, len(user_vecs), EVAL_BATCH):
        stop = start + EVAL_BATCH
        scores = user_vecs[start:stop].astype(np.float64) @ item_vecs.T.astype(np.float64)  # (B, N)
        scores = np.concatenate([np.full((len(scores), 1), -np.inf), scores], axis=1)  # (B, N + 1)
        ranks.append(target_ranks(scores, split.targets[start:stop], split.histories[start:stop]))
    return np.concatenate(ranks)


@dataclass
class TrainResult:
    """What training produced, for retrieval.json."""

    train_time_s: float
    epochs: int
    best_epoch: int
    best_val_ndcg10: float
    history: list = field(default_factory=list)  # [{"epoch", "loss", "val_ndcg@10"}]


def resolve_threads(threads: int) -> int:
    """0 = min(2, cpu count): more threads than cores only adds contention on small CPU boxes."""
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    return threads or min(2, os.cpu_count() or 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _training_pairs(train_seqs: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs s[:-1] and next-item labels s[1:], both (U', T) left-padded; users with < 2 items drop."""
    usable = [s for s in train_seqs if len(s) >= 2]
    if not usable:
        raise ValueError("no user has >= 2 training items (seq[:-2]); SASRec cannot be trained")
    return left_pad([s[:-1] for s in usable], max_len), left_pad([s[1:] for s in usable], max_len)


def train_sasrec(
    train_seqs: Sequence[np.ndarray], val: EncodedSplit, n_items: int, cfg: RetrievalConfig
) -> tuple[SASRec, TrainResult]:
    """Train on the TRAIN parts, early-stop on val NDCG@10, return the best model (eval mode).

    Args:
        train_seqs: per user, the encoded seq[:-2].
        val: the encoded val split (history seq[:-2], target seq[-2]) for model selection.
        n_items: N.
        cfg: hyper-parameters (hidden, layers, heads, max_len, dropout, lr, batch_size, epochs,
            patience counted in evaluations, eval_every, seed, device, threads).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    torch.set_num_threads(resolve_threads(cfg.threads))
    device = resolve_device(cfg.device)
    inputs, labels = _training_pairs(train_seqs, cfg.max_len)  # (U', T) each
    model = SASRec(n_items, cfg.hidden, cfg.layers, cfg.heads, cfg.max_len, cfg.dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    log.info("SASRec: %d training users, %d items, %d params, device %s", len(inputs), n_items,
             sum(p.numel() for p in model.parameters()), device)

    best_ndcg, best_epoch, best_state, bad_evals = -1.0, 0, None, 0
    history: list[dict] = []
    start = time.perf_counter()
    epoch = 0
    bar = tqdm(range(1, cfg.epochs + 1), desc="sasrec", unit="epoch", leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for idx in np.array_split(rng.permutation(len(inputs)), max(1, math.ceil(len(inputs) / cfg.batch_size))):
            seq = torch.from_numpy(inputs[idx]).to(device)  # (B, T)
            tgt = torch.from_numpy(labels[idx]).to(device)  # (B, T)
            keep = tgt != PAD
            h = model(seq)[keep]  # (P, d) real positions only
            logits = h @ model.item_vectors().T  # (P, N)
            loss = F.cross_entropy(logits, tgt[keep] - 1)  # labels shifted: item j is column j - 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(h)
            count += len(h)
        entry = {"epoch": epoch, "loss": total / max(count, 1)}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            ranks = full_ranking_ranks(
                model.user_vectors(val.histories, device), model.item_vectors().detach().cpu().numpy(), val
            )
            ndcg = metrics_from_ranks(ranks, (10,))["ndcg@10"]
            entry["val_ndcg@10"] = ndcg
            if ndcg > best_ndcg:
                best_ndcg, best_epoch, bad_evals = ndcg, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_evals += 1
            bar.set_postfix(loss=f"{entry['loss']:.3f}", ndcg10=f"{ndcg:.4f}", best=best_epoch)
        history.append(entry)
        if bad_evals >= cfg.patience:
            log.info("early stop at epoch %d (best epoch %d, val NDCG@10 %.4f)", epoch, best_epoch, best_ndcg)
            break
    bar.close()
    elapsed = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    log.info("SASRec trained in %.1fs, %d epochs, best epoch %d (val NDCG@10 %.4f)",
             elapsed, epoch, best_epoch, best_ndcg)
    return model, TrainResult(elapsed, epoch, best_epoch, best_ndcg, history)


def sasrec_vectors(
    model: SASRec, split: EncodedSplit, device: Optional[torch.device] = None
) -> tuple[np.ndarray, np.ndarray]:
    """(U, d) user vectors for the split's histories and (N, d) item vectors, as float32 numpy."""
    device = device or next(model.parameters()).device
    users = model.user_vectors(split.histories, device)
    items = model.item_vectors().detach().float().cpu().numpy()
    return users, items
