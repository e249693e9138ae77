"""The hidden-state explorer: per-step unit activations, their correlation with text features, HTML export."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import RNNStudioError
from .scoring import hidden_states, tokenize_for_model

MAX_TOKENS = 20_000  # every unit's value per token is kept and coloured: keep texts to a readable size
OPENERS, CLOSERS = "([{", ")]}"


@dataclass
class Activations:
    """Every hidden unit after every token: ``series["h[0]"]`` is (T, H), row t the state after token t."""

    tokens: list[str]
    series: dict[str, np.ndarray]
    model: str = ""
    cell: str = ""
    notes: list[str] = field(default_factory=list)
    separator: str = ""  # " " between word tokens, "" between characters

    @property
    def names(self) -> list[str]:
        return list(self.series)

    def values(self, name: str, unit: int) -> np.ndarray:
        return self.series[name][:, unit]


def series_label(name: str) -> str:
    """``"c[1]"`` -> ``"layer 2 cell state c"``."""
    kind, _, rest = name.partition("[")
    layer = int(rest.rstrip("]")) + 1 if rest else 1
    what = {"h": "hidden state h", "c": "cell state c"}.get(kind, kind)
    return f"layer {layer} {what}"


def collect_activations(model, ids: torch.Tensor, tokens: list[str], *, name: str = "", cell: str = "",
                        seq_len: int | None = None) -> Activations:
    """Every layer's hidden units after every token of ``ids`` (N,), read by ``scoring.hidden_states``: one
    stream, a chunk of steps per call (one token at a time only for cells that report no per-step states)."""
    buffers: dict[str, torch.Tensor] = {}
    t = 0
    for chunk in hidden_states(model, ids, seq_len=seq_len):  # {kind: (T, L, H)}
        for kind, value in chunk.items():
            if kind not in buffers:
                buffers[kind] = torch.empty(len(ids), value.shape[1], value.shape[-1], dtype=torch.float32)
            buffers[kind][t: t + len(value)] = value
        t += len(next(iter(chunk.values())))
    series = {}
    for kind, buf in buffers.items():
        for layer in range(buf.shape[1]):
            series[f"{kind}[{layer}]"] = buf[:, layer, :].numpy()
    return Activations(tokens, series, name, cell)


def explore(loaded, text: str, *, max_tokens: int = MAX_TOKENS) -> Activations:
    """Activations of ``loaded`` (a ``checkpoint.LoadedModel``) over ``text``, in the model's own tokens."""
    tok = tokenize_for_model(loaded, text)
    if len(tok.ids) == 0:
        raise RNNStudioError("the text is empty; paste or open some text to explore")
    notes = []
    if max_tokens and len(tok.ids) > max_tokens:
        notes.append(f"only the first {max_tokens:,} of {len(tok.ids):,} tokens are shown")
        tok.tokens, tok.ids = tok.tokens[:max_tokens], tok.ids[:max_tokens]
    acts = collect_activations(loaded.model, tok.ids, tok.tokens, name=loaded.name,
                               cell=loaded.config.get("model", {}).get("cell", ""))
    acts.notes = notes
    acts.separator = loaded.vocab.separator
    return acts


# -- built-in features ----------------------------------------------------------------------

FEATURES = {
    "inside quotes": "1 between an opening and a closing double quote (the opening one included)",
    "inside brackets": "1 inside (), [] or {} (the opening bracket included)",
    "bracket depth": "how many brackets are open",
    "position in line": "characters since the last newline",
    "position in word": "letters or digits since the last other character",
    "whitespace": "1 on spaces, tabs and newlines",
    "newline": "1 on a newline",
    "uppercase": "1 on an uppercase letter",
    "digit": "1 on a digit",
    "punctuation": "1 on anything that is not a letter, digit or whitespace",
    "start of word": "1 on a letter or digit that follows something else",
    "vowel": "1 on a, e, i, o, u",
}


def text_features(tokens: list[str]) -> dict[str, np.ndarray]:
    """Each built-in feature per token, as the state after reading that token would know it. (T,) each."""
    T = len(tokens)
    out = {name: np.zeros(T, dtype=np.float64) for name in FEATURES}
    in_quote = False
    depth = 0
    col = 0
    word_pos = 0
    prev_alnum = False
    for t, tok in enumerate(tokens):
        ch = tok[:1]  # word tokens: judged by their first character, and counted whole
        if '"' in tok:
            in_quote = not in_quote if tok.count('"') % 2 else in_quote
        depth += sum(tok.count(c) for c in OPENERS) - sum(tok.count(c) for c in CLOSERS)
        depth = max(depth, 0)
        col = 0 if tok == "\n" else col + len(tok)
        alnum = ch.isalnum()
        word_pos = word_pos + 1 if alnum else 0
        out["inside quotes"][t] = float(in_quote)
        out["inside brackets"][t] = float(depth > 0)
        out["bracket depth"][t] = depth
        out["position in line"][t] = col
        out["position in word"][t] = word_pos
        out["whitespace"][t] = float(tok.isspace())
        out["newline"][t] = float(tok == "\n")
        out["uppercase"][t] = float(ch.isupper())
        out["digit"][t] = float(ch.isdigit())
        out["punctuation"][t] = float(bool(ch) and not alnum and not ch.isspace())
        out["start of word"][t] = float(alnum and not prev_alnum)
        out["vowel"][t] = float(ch.lower() in "aeiou" and ch != "")
        prev_alnum = alnum
    return out


def _zscore(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns of ``a`` (T, K) standardised; constant columns become 0 (and are flagged)."""
    a = a.astype(np.float64)
    a = a - a.mean(axis=0)
    std = a.std(axis=0)
    ok = std > 1e-12
    return np.where(ok, a / np.where(ok, std, 1.0), 0.0), ok


def correlations(acts: Activations, features: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Pearson r of every unit with every feature: ``{series name: (H, K)}`` in ``features`` order."""
    features = features if features is not None else text_features(acts.tokens)
    F = np.stack(list(features.values()), axis=1)  # (T, K)
    Fz, _ = _zscore(F)
    out = {}
    for name, a in acts.series.items():
        Az, _ = _zscore(a)  # (T, H)
        out[name] = Az.T @ Fz / max(len(a), 1)  # (H, K)
    return out


def rank_units(acts: Activations, *, feature: str | None = None, limit: int = 50,
               features: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Units ranked by |r| with a feature (or each unit's best feature): ``layer, unit, feature, r``."""
    features = features if features is not None else text_features(acts.tokens)
    if feature is not None and feature not in features:
        raise RNNStudioError(f"unknown feature {feature!r}; choose one of {', '.join(features)}")
    names = list(features)
    rows = []
    for series, r in correlations(acts, features).items():  # r: (H, K)
        for unit in range(r.shape[0]):
            k = names.index(feature) if feature is not None else int(np.argmax(np.abs(r[unit])))
            value = float(r[unit, k])
            if math.isfinite(value):
                rows.append({"layer": series, "unit": unit, "feature": names[k], "r": value})
    rows.sort(key=lambda row: -abs(row["r"]))
    return rows[:limit] if limit else rows


# -- colours and HTML -------------------------------------------------------------------------

def activation_colour(value: float, scale: float = 1.0) -> tuple[int, int, int]:
    """Blue for negative, white for 0, red for positive (Karpathy's colouring); ``scale`` maps to full colour."""
    t = 0.0 if not scale or not math.isfinite(value) else max(-1.0, min(1.0, value / scale))
    if t >= 0:
        return 255, int(255 - 170 * t), int(255 - 185 * t)
    t = -t
    return int(255 - 185 * t), int(255 - 120 * t), 255


def scale_for(values: np.ndarray) -> float:
    """Full colour at the largest |value|, but never below 1e-6 (tanh units are already in [-1, 1])."""
    return float(max(np.abs(values).max(initial=0.0), 1e-6))


def _visible(token: str) -> str:
    return token if token not in ("\n", "\t") else {"\n": "↵\n", "\t": "→\t"}[token]


def activations_html(acts: Activations, series: str, unit: int, *, separator: str | None = None) -> str:
    """A self-contained HTML page: each token coloured by one unit's activation, the value on hover."""
    values = acts.values(series, unit)
    scale = scale_for(values)
    separator = acts.separator if separator is None else separator
    parts = []
    for token, v in zip(acts.tokens, values):
        r, g, b = activation_colour(float(v), scale)
        parts.append(f'<span style="background:#{r:02x}{g:02x}{b:02x}" title="{v:+.4f}">'
                     f"{html.escape(_visible(token))}</span>{html.escape(separator)}")
    title = html.escape(f"{acts.model}: unit {unit} of {series_label(series)}")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}"
        ".text{font-family:monospace;font-size:14px;white-space:pre-wrap;line-height:1.5}"
        "</style></head><body>"
        f"<h1>{title}</h1>"
        f"<p>Cell {html.escape(acts.cell)}. Blue is negative, red is positive; full colour at |value| = "
        f"{scale:.4g}. Hover over a character to see the value.</p>"
        f"<div class=\"text\">{''.join(parts)}</div></body></html>\n"
    )


def save_html(acts: Activations, series: str, unit: int, path, *, separator: str | None = None) -> None:
    from .fileio import atomic_write_text

    atomic_write_text(path, activations_html(acts, series, unit, separator=separator))


# -- under the hood: one real RNN step computed two ways ----------------------------------------

def rnn_weights(cell) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Layer 0's ``W_xh`` (E, H), ``W_hh`` (H, H), ``b`` (H,) and the nonlinearity of a plain RNN cell."""
    if all(hasattr(cell, n) for n in ("W_xh", "W_hh", "b_h")):  # rnn-scratch: explicit parameters
        return cell.W_xh[0], cell.W_hh[0], cell.b_h[0], "tanh"
    fused = getattr(cell, "rnn", None)
    if not isinstance(fused, torch.nn.RNN):
        fused = next((m for m in cell.modules() if isinstance(m, torch.nn.RNN)), None)
    if fused is not None:  # torch stores (H, E) and computes x @ W.T, with two biases
        b = fused.bias_ih_l0 + fused.bias_hh_l0 if fused.bias else torch.zeros(fused.hidden_size)
        return fused.weight_ih_l0.T, fused.weight_hh_l0.T, b, fused.nonlinearity
    raise RNNStudioError(f"'under the hood' needs a plain RNN cell (rnn-scratch or rnn); this model's cell is "
                         f"{getattr(cell, 'name', type(cell).__name__)!r}")


@torch.no_grad()
def recurrence_both_ways(loaded, text: str, step: int | None = None) -> dict:
    """H_t = tanh(X_t W_xh + H_{t-1} W_hh + b) for one real time step, computed two ways.

    The state H_{t-1} comes from running the model over the tokens before ``step`` (default: the
    last token). ``separate`` uses two matmuls, ``concatenated`` one matmul of [X_t, H_{t-1}] with
    [W_xh; W_hh] stacked; ``model`` is what the cell itself returns for that step.
    """
    model = loaded.model
    W_xh, W_hh, b, nonlinearity = rnn_weights(model.cell)
    tok = tokenize_for_model(loaded, text)
    n = len(tok.ids)
    if n == 0:
        raise RNNStudioError("the text is empty; type a few characters to run through the model")
    step = n - 1 if step is None else step
    if not 0 <= step < n:
        raise RNNStudioError(f"step must be between 0 and {n - 1} for this text, got {step}")
    device = W_xh.device
    was = model.training
    model.eval()
    try:
        state = model.begin_state(1, device)
        if step:
            _, state = model.cell(model.encode(tok.ids[:step].to(device)[:, None]), state)  # (T, 1, E) in
        h_prev = model.cell.hidden_units(state)["h"][0]  # layer 0: (1, H)
        X = model.encode(tok.ids[step: step + 1].to(device)[:, None])[0]  # (1, E)
        act = torch.tanh if nonlinearity == "tanh" else torch.relu
        separate = act(X @ W_xh + h_prev @ W_hh + b)  # (1, H)
        XH = torch.cat([X, h_prev], dim=1)  # (1, E + H)
        W = torch.cat([W_xh, W_hh], dim=0)  # (E + H, H)
        concatenated = act(XH @ W + b)
        _, after = model.cell(X[None], state)
        from_model = model.cell.hidden_units(after)["h"][0]
    finally:
        model.train(was)
    sep, cat, own = separate[0].cpu().double(), concatenated[0].cpu().double(), from_model[0].cpu().double()
    return {
        "model": loaded.name,
        "cell": loaded.config.get("model", {}).get("cell", ""),
        "nonlinearity": nonlinearity,
        "step": step,
        "token": tok.tokens[step],
        "previous": tok.tokens[max(0, step - 20): step],
        "shapes": {"X_t": list(X.shape), "H_prev": list(h_prev.shape), "W_xh": list(W_xh.shape),
                   "W_hh": list(W_hh.shape), "b": list(b.shape), "XH": list(XH.shape), "W": list(W.shape)},
        "h_prev": h_prev[0].cpu().double().tolist(),
        "separate": sep.tolist(),
        "concatenated": cat.tolist(),
        "model_output": own.tolist(),
        "max_difference": float((sep - cat).abs().max()),
        "max_difference_model": float((sep - own).abs().max()),
        "dtype": str(W_xh.dtype).replace("torch.", ""),
    }
