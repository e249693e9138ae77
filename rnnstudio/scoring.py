"""Scoring a text under a model at training speed: B parallel streams, each warmed up on the tokens before it.

One path serves validation during training, ``rnnstudio score``, ``score --explain`` and the inspector;
the explorer reads the same chunks of steps through ``hidden_states``, one stream, keeping every state.
The predictions of a text of ``n + 1`` tokens are cut into ``B`` consecutive spans of ``L`` tokens. Stream
``b`` reads its span from a fresh state, but first reads the ``K`` tokens before the span (the burn-in,
not scored), so its state at the span's start is close to the state a single left-to-right pass would
have there. Stream 0 starts at the text's start and scores everything it reads:

    stream 0:  |=========== scored ============|
    stream 1:                          |-- K --|=========== scored ============|
    stream 2:                                                          |-- K --|====== ...

With ``streams=1`` (``score --exact``) it is the exact single pass. The burn-in error, measured on
trained char-level models (see ``benchmarks/bench_score.py``), stays below ``BURN_IN_TOLERANCE`` in
relative perplexity at the default ``BURN_IN``.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .data import _pieces, encode_stream
from .errors import RNNStudioError

STREAMS = 128  # parallel streams: a GRU-256 step's GEMM ran ~10% faster at 128 rows than at 64 (1 thread)
BURN_IN = 64  # tokens each later stream reads before its span; measured error at 64 is < BURN_IN_TOLERANCE
BURN_IN_TOLERANCE = 1e-4  # documented bound on |multi-stream perplexity / exact - 1|; measured <= 1e-8 at K = 64
MIN_SPAN = 8  # a stream's span is at least MIN_SPAN burn-ins long, so burn-in costs at most 1/8 extra work
SEQ_LEN = 256  # time steps per forward call; the state is carried from call to call
ACTIVATION_BUDGET = 1 << 22  # logits + gate elements per forward call (16 MB of float32: 1 << 24 measured 10% slower): big models take fewer steps
TOP_K = 5  # predictions kept per token for explanations


# -- the model's view of a text -------------------------------------------------------------------

@dataclass
class TokenizedText:
    """A text as the model sees it: token strings (for display) and their ids."""

    tokens: list[str]
    ids: torch.Tensor  # (N,) int64
    preprocess: str
    tokenizer: str


def model_preprocess(loaded) -> str:
    return loaded.config.get("data", {}).get("preprocess", "raw")


def encode_for_model(loaded, chunks_factory) -> torch.Tensor:
    """Token ids (N,) of a text stream under the model's own preprocessing, tokenizer and vocabulary."""
    vocab = loaded.vocab
    return encode_stream(chunks_factory, tokenizer=vocab.tokenizer, preprocess=model_preprocess(loaded),
                         vocab=vocab).ids.long()


def tokenize_for_model(loaded, text: str) -> TokenizedText:
    """The ids and the token strings of ``text`` (the strings keep tokens the vocabulary does not know)."""
    preprocess = model_preprocess(loaded)
    vocab = loaded.vocab
    ids = encode_for_model(loaded, lambda: iter([text]))
    tokenizer = vocab.text_tokenizer
    shown = "".join(_pieces([text], tokenizer, preprocess))  # the very text the encoder tokenized
    tokens = tokenizer.split(shown)
    if len(tokens) != len(ids):  # never expected; fall back to the vocabulary's spelling
        tokens = [vocab.idx_to_token[i] for i in ids.tolist()]
    return TokenizedText(tokens, ids, preprocess, vocab.tokenizer)


# -- the stream layout --------------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamLayout:
    """Where each stream reads: stream b's inputs are positions ``b * span + c`` for ``c < width``."""

    predictions: int  # n: positions 0..n-1 each predict the token after them
    streams: int  # B
    span: int  # L: predictions scored per stream (the last stream may score fewer)
    burn_in: int  # K: unscored columns at the start of streams 1..B-1

    @property
    def width(self) -> int:
        return self.span + self.burn_in


def plan_streams(predictions: int, streams: int = STREAMS, burn_in: int = BURN_IN, *,
                 min_streams: int = 1) -> StreamLayout:
    """At most ``streams`` streams, fewer when the text is short (each span >= MIN_SPAN burn-ins), but at least
    ``min_streams`` (one per rank under torchrun) while the text has that many tokens."""
    n = predictions
    burn_in = max(int(burn_in), 0)
    b = 1 if streams <= 1 else min(int(streams), (n - burn_in) // max(MIN_SPAN * burn_in, 1))
    if b < min_streams <= n:
        b, burn_in = min_streams, min(burn_in, (n - min_streams) // min_streams)
    if b <= 1:
        return StreamLayout(n, 1, n, 0)
    span = -(-(n - burn_in) // b)  # ceil: stream 0 scores span + burn_in, the others span
    b = -(-(n - burn_in) // span)  # no stream left without a span
    return StreamLayout(n, b, span, burn_in)


def _chunk_steps(model, rows: int, seq_len: int) -> int:
    """Time steps per forward call: the logits and the cell's gate activations, (T, B, V + 4 H), within budget."""
    c = getattr(model, "config", None)
    per_step = getattr(c, "vocab_size", 1) + 4 * getattr(c, "hidden_size", 0) * getattr(c, "num_layers", 1)
    return max(1, min(seq_len, ACTIVATION_BUDGET // max(rows * per_step, 1)))


@contextmanager
def scoring_threads(device):
    """Training's ``threads=0`` policy for a scoring run on the CPU: a ``ThreadTuner`` (1 thread against all
    the cores, timed on forward calls instead of training steps), or None on other devices. The thread
    count in force before is restored at the end."""
    from .threads import ThreadTuner, max_auto_threads

    if torch.device(device).type != "cpu":
        yield None
        return
    before = torch.get_num_threads()
    try:
        yield ThreadTuner(max_auto_threads())
    finally:
        torch.set_num_threads(before)


def _timed(chunks, tuner):
    """``chunks`` as they are, telling ``tuner`` (if any) how long each one took, its consumer's work included."""
    if tuner is None:
        yield from chunks
        return
    t0 = time.perf_counter()
    for chunk in chunks:
        yield chunk
        t1 = time.perf_counter()
        tuner.observe(t1 - t0)
        t0 = t1


@torch.no_grad()
def predictions(model, ids: torch.Tensor, *, streams: int = STREAMS, burn_in: int = BURN_IN,
                seq_len: int | None = None, device=None, rank: int = 0,
                world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Every next-token prediction of ``ids`` exactly once, a forward call at a time.

    Yields ``(logits, targets, positions)``: (M, V) logits on the model's device, the (M,) ids that
    followed, and the (M,) positions (on the CPU) whose successor they predict. Under data parallelism
    rank r scores its share of the streams (stream 0 on rank 0); the ranks together score every position.
    """
    device = device or next(model.parameters()).device
    seq_len = seq_len or SEQ_LEN
    ids = ids.long()
    n = len(ids) - 1
    if n <= 0:
        return
    layout = plan_streams(n, max(streams, world_size), burn_in, min_streams=world_size)
    share = -(-layout.streams // world_size)
    lo, hi = rank * share, min(layout.streams, (rank + 1) * share)
    if lo >= hi:
        return
    K, W = layout.burn_in, layout.width
    starts = torch.arange(lo, hi) * layout.span  # (B,)
    steps = _chunk_steps(model, hi - lo, seq_len)
    was = model.training
    model.eval()
    try:
        state = model.begin_state(hi - lo, device)
        for c0 in range(0, W, steps):
            cols = torch.arange(c0, min(c0 + steps, W))  # (T,)
            pos = cols[:, None] + starts[None, :]  # (T, B) time-major, as forward_flat's rows
            scored = (pos < n) & ((cols[:, None] >= K) | (starts[None, :] == 0))
            if not bool(scored.any()):
                if bool((pos >= n).all()):
                    break
                x = ids[pos.clamp(max=n - 1)].T.to(device)
                _, state = model.forward_flat(x, state)  # burn-in only
                continue
            x = ids[pos.clamp(max=n - 1)].T.to(device)  # (B, T)
            logits, state = model.forward_flat(x, state)  # (T*B, V)
            flat = scored.reshape(-1)
            where = pos.reshape(-1)
            if not bool(flat.all()):
                keep = flat.nonzero()[:, 0]
                logits, where = logits[keep.to(logits.device)], where[keep]
            yield logits, ids[where + 1].to(logits.device), where
    finally:
        model.train(was)


def _cell_inputs(model, idx_tb: torch.Tensor) -> torch.Tensor:
    """What the model hands its cell for token ids (T, B): the ids themselves for a one-hot model whose cell
    gathers weight rows (``forward_tokens``), else the encoded inputs (T, B, E)."""
    if model.embedding is None and hasattr(model.cell, "forward_tokens"):
        return idx_tb
    return model.encode(idx_tb)


@torch.no_grad()
def hidden_states(model, ids: torch.Tensor, *, seq_len: int | None = None,
                  device=None) -> Iterator[dict[str, torch.Tensor]]:
    """The explorer's variant of ``predictions``: one stream (no burn-in, so exact) read a chunk of steps per
    call, yielding every layer's ``hidden_units`` after every token of the chunk, ``{kind: (T, L, H)}`` on the CPU.

    A cell with ``hidden_units_over(x, state)`` (the fused cells) reports every layer per step. For any other
    one-layer cell whose state is its h, that h per step is what ``forward`` outputs. Other cells (a multi-layer
    scratch cell, an LSTM's c) are stepped one token at a time: their per-step states exist nowhere else.
    """
    device = device or next(model.parameters()).device
    seq_len = seq_len or SEQ_LEN
    ids = ids.long()
    cell = model.cell
    was = model.training
    model.eval()
    try:
        state = model.begin_state(1, device)
        over = getattr(cell, "hidden_units_over", None)
        units = cell.hidden_units(state)
        outputs_are_h = (cell.num_layers == 1 and isinstance(state, torch.Tensor) and list(units) == ["h"]
                         and units["h"] is state)
        step = seq_len if over is not None or outputs_are_h else 1
        for c0 in range(0, len(ids), step):
            x = _cell_inputs(model, ids[c0: c0 + step].to(device)[:, None])  # (T, 1) ids or (T, 1, E)
            if over is not None:
                per_step, state = over(x, state)  # {kind: (T, L, 1, H)}
            elif outputs_are_h:
                outputs, state = cell.forward_tokens(x, state) if not x.is_floating_point() else cell(x, state)
                per_step = {"h": outputs[:, None]}  # (T, 1, 1, H)
            else:
                _, state = cell.forward_tokens(x, state) if not x.is_floating_point() else cell(x, state)
                per_step = {k: v[None] for k, v in cell.hidden_units(state).items()}  # (1, L, 1, H)
            yield {k: v[:, :, 0, :].float().cpu() for k, v in per_step.items()}
    finally:
        model.train(was)


# -- metrics over a text ------------------------------------------------------------------------------

def metric_set(host, warn, vocab=None):
    from .evaluation import MetricSet

    return bind_vocab(MetricSet({n: host.metric(n) for n in host.names("metric")}, warn), vocab)


def bind_vocab(metrics, vocab):
    """Hand the model's vocabulary to the metrics that ask for it (``use_vocab``: the per-character ones)."""
    if vocab is not None:
        for name, m in list(metrics.metrics.items()):
            if callable(getattr(m, "use_vocab", None)):
                metrics._guard(name, lambda m=m: m.use_vocab(vocab))
    return metrics


def score_ids(model, ids: torch.Tensor, metrics, *, streams: int = STREAMS, burn_in: int = BURN_IN,
              seq_len: int | None = None, device=None, rank: int = 0, world_size: int = 1,
              tuner=None) -> dict[str, float]:
    """The metric plugins' values over every next-token prediction of ``ids`` (this rank's share); ``tuner``
    (see ``scoring_threads``) is told each forward call's time."""
    metrics.reset()
    chunks = predictions(model, ids, streams=streams, burn_in=burn_in, seq_len=seq_len, device=device, rank=rank,
                         world_size=world_size)
    for logits, targets, _ in _timed(chunks, tuner):
        nll = F.cross_entropy(logits.float(), targets, reduction="none")
        metrics.update(logits, targets, nll)
    return metrics.values()


def score_stream(loaded, chunks_factory, *, host=None, exact: bool = False, streams: int = STREAMS,
                 burn_in: int = BURN_IN, device=None) -> dict:
    """Perplexity and the other metrics of a text stream (``chunks_factory()`` -> iterator of str)."""
    from .plugins import default_host

    host = host or default_host()
    ids = encode_for_model(loaded, chunks_factory)
    if len(ids) < 2:
        raise RNNStudioError("the text has fewer than 2 tokens; there is nothing to score")
    warns: list[str] = []
    metrics = metric_set(host, warns.append, loaded.vocab)
    streams = 1 if exact else streams
    layout = plan_streams(len(ids) - 1, streams, burn_in)
    with scoring_threads(device or next(loaded.model.parameters()).device) as tuner:
        values = score_ids(loaded.model, ids, metrics, streams=streams, burn_in=burn_in, device=device, tuner=tuner)
    return {"model": loaded.name, "tokens": len(ids), "scored": len(ids) - 1, "unit": loaded.vocab.text_tokenizer.unit,
            "unknown": int((ids == loaded.vocab.unk).sum()), **values, "streams": layout.streams,
            "burn_in": layout.burn_in, "warnings": warns}


def score_text(loaded, text: str, **kwargs) -> dict:
    """``score_stream`` of one string."""
    return score_stream(loaded, lambda: iter([text]), **kwargs)


# -- per-token explanations ---------------------------------------------------------------------------

@dataclass
class TokenScores:
    """Per prediction, compactly (about 50 bytes a token): row i predicts token i + 1 from tokens 0..i."""

    nll: np.ndarray  # (n,) float64 nats
    rank: np.ndarray  # (n,) int32, 1 = the model's top pick
    top_ids: np.ndarray  # (n, k) int32
    top_log_probs: np.ndarray  # (n, k) float64


def token_scores(model, ids: torch.Tensor, metrics=None, *, top_k: int = TOP_K, streams: int = STREAMS,
                 burn_in: int = BURN_IN, seq_len: int | None = None, device=None, tuner=None) -> TokenScores:
    """NLL, rank and top-k of every prediction, filled in position order from the streams (float64 maths)."""
    n = len(ids) - 1
    V = model.head.out_features
    k = max(1, min(top_k, V))
    out = TokenScores(np.empty(n, np.float64), np.empty(n, np.int32), np.empty((n, k), np.int32),
                      np.empty((n, k), np.float64))
    if metrics is not None:
        metrics.reset()
    chunks = predictions(model, ids, streams=streams, burn_in=burn_in, seq_len=seq_len, device=device)
    for logits, targets, where in _timed(chunks, tuner):
        log_probs = torch.log_softmax(logits.double(), dim=-1)  # (M, V)
        target_lp = log_probs.gather(1, targets[:, None])  # (M, 1)
        nll = -target_lp[:, 0]
        if metrics is not None:
            metrics.update(log_probs.float(), targets, nll.float())
        top_lp, top_ids = log_probs.topk(k, dim=-1)
        w = where.numpy()
        out.nll[w] = nll.cpu().numpy()
        out.rank[w] = ((log_probs > target_lp).sum(dim=1) + 1).cpu().numpy()
        out.top_ids[w] = top_ids.cpu().numpy()
        out.top_log_probs[w] = top_lp.cpu().numpy()
    return out


class ExplainedRows:
    """The rows of an explanation, made on demand from ``TokenScores``: ``rows[i]`` predicts token i + 1.

    A sequence (``len``, indexing, slices, iteration), so a 1 MB text's million rows never exist as dicts at once.
    """

    def __init__(self, scores: TokenScores, tokens: list[str], ids: torch.Tensor, vocab):
        self.scores, self.tokens, self.ids, self.vocab = scores, tokens, ids.numpy(), vocab

    def __len__(self) -> int:
        return len(self.scores.nll)

    def row(self, i: int) -> dict:
        s, vocab = self.scores, self.vocab
        value = float(s.nll[i])
        t_id = int(self.ids[i + 1])
        return {
            "position": i + 1,
            "token": self.tokens[i + 1],
            "id": t_id,
            "unknown": t_id == vocab.unk,
            "probability": math.exp(-value),
            "nll": value,
            "bits": value / math.log(2),
            "rank": int(s.rank[i]),
            "top": [{"token": vocab.idx_to_token[j], "probability": math.exp(lp)}
                    for j, lp in zip(s.top_ids[i].tolist(), s.top_log_probs[i].tolist())],
        }

    def __getitem__(self, index):  # an int or a slice
        if isinstance(index, slice):
            return [self.row(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.row(index)

    def __iter__(self):
        return (self.row(i) for i in range(len(self)))


def explain_text(loaded, text: str, *, host=None, top_k: int = TOP_K, exact: bool = False,
                 streams: int = STREAMS, burn_in: int = BURN_IN, device=None) -> dict:
    """The numbers of ``inspector.explain``, with ``rows`` an ``ExplainedRows`` (rows made on demand)."""
    from .plugins import default_host

    tok = tokenize_for_model(loaded, text)
    if len(tok.ids) < 2:
        raise RNNStudioError("the text has fewer than 2 tokens; there is nothing to score")
    vocab = loaded.vocab
    host = host or default_host()
    warns: list[str] = []
    metrics = metric_set(host, warns.append, vocab)
    streams = 1 if exact else streams
    layout = plan_streams(len(tok.ids) - 1, streams, burn_in)
    scores = token_scores(loaded.model, tok.ids, metrics, top_k=top_k, streams=streams, burn_in=burn_in,
                          device=device)
    values = metrics.values()
    rows = ExplainedRows(scores, tok.tokens, tok.ids, vocab)
    mean_nll = float(scores.nll.mean())
    chars = int(np.asarray(vocab.char_lengths(), dtype=np.int64)[tok.ids[1:].numpy()].sum())  # predicted text
    return {
        **values,
        "model": loaded.name,
        "tokens": len(tok.ids),
        "scored": len(rows),
        "unit": vocab.text_tokenizer.unit,
        "unknown": int((tok.ids == vocab.unk).sum()),
        "first_token": tok.tokens[0],
        "preprocess": tok.preprocess,
        "tokenizer": tok.tokenizer,
        "separator": vocab.separator,  # the text between two tokens as shown
        "sum_nll": float(scores.nll.sum()),
        "mean_nll": mean_nll,
        "cross-entropy": mean_nll,
        "perplexity": math.exp(mean_nll) if mean_nll < 709 else math.inf,
        "bits-per-token": mean_nll / math.log(2),
        "chars": chars,
        "nats-per-char": float(scores.nll.sum()) / chars if chars else math.nan,
        "bits-per-char": float(scores.nll.sum()) / chars / math.log(2) if chars else math.nan,
        "accuracy": float(np.mean(scores.rank == 1)),
        "streams": layout.streams,
        "burn_in": layout.burn_in,
        "rows": rows,
        "warnings": warns,
    }
