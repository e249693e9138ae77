"""The corpus preview's numbers: the first characters, token and vocabulary counts, top tokens, split sizes."""

from __future__ import annotations

from dataclasses import dataclass

from ..data import Vocab, count_tokens, fit_tokenizer
from ..errors import RNNStudioError

PREVIEW_CHARS = 2000


@dataclass
class CorpusPreview:
    source: str
    head: str  # the first PREVIEW_CHARS characters of the raw text
    tokens: int  # after max_tokens
    vocab_size: int  # including <unk>
    top_tokens: list[tuple[str, int]]
    train_tokens: int
    val_tokens: int

    def summary(self) -> str:
        top = ", ".join(f"{tok!r} {n:,}" for tok, n in self.top_tokens)
        return (f"{self.tokens:,} tokens, vocabulary {self.vocab_size:,} (with <unk>); "
                f"train {self.train_tokens:,} / validation {self.val_tokens:,}\nmost frequent: {top}")


def corpus_preview(host, corpus: str, options: dict, *, tokens: str = "char", preprocess: str | None = None,
                   min_freq: int = 0, max_tokens: int = 0, val_fraction: float = 0.1, top: int = 12) -> CorpusPreview:
    """Read the corpus once and count what the trainer would see. Plugin errors name the corpus."""
    source = f"corpus {corpus!r}"
    cls = host.corpus(corpus)
    try:
        instance = cls(**options)
        head_parts: list[str] = []
        head_len = 0
        chunks: list[str] = []
        for piece in instance.iter_text():
            chunks.append(piece)
            if head_len < PREVIEW_CHARS:
                head_parts.append(piece[: PREVIEW_CHARS - head_len])
                head_len += len(head_parts[-1])
        tokenizer = host.get("tokenizer", tokens)()
        fit_tokenizer(lambda: iter(chunks), tokenizer, preprocess or cls.default_preprocess)
        counts = count_tokens(chunks, tokenizer, preprocess or cls.default_preprocess)
    except RNNStudioError as exc:
        raise RNNStudioError(str(exc), source=exc.source or source) from None
    except Exception as exc:
        raise RNNStudioError(f"the corpus plugin raised {type(exc).__name__}: {exc}", source=source) from None
    vocab = Vocab.build(counts, min_freq=min_freq, reserved=tokenizer.learnt_tokens() or (), tokenizer=tokenizer)
    total = sum(counts.values())
    n = min(total, max_tokens) if max_tokens > 0 else total
    n_val = int(n * val_fraction)
    return CorpusPreview(instance.describe_source(), "".join(head_parts), n, len(vocab),
                         counts.most_common(top), n - n_val, n_val)
