"""Built-in tokenizers: characters, whitespace-separated words and byte-pair encoding (Hugging Face tokenizers)."""

from __future__ import annotations

import json

import rnnstudio
from rnnstudio import Param, RNNStudioError, Tokenizer

UNK = "<unk>"
# Pre-tokens, as GPT-2's: a word with the one space before it, or a run of whitespace (leaving a last space to
# the word after it). Every character of the text is in exactly one, so BPE's tokens are literal pieces of
# the text and join with "".
_PRE_TOKENS = r" ?[^\s]+|\s+(?!\S)|\s+"


class CharTokenizer(Tokenizer):
    name = "char"
    description = "Every character is a token (d2l's char-level models)."
    unit = "characters"
    one_token_per_character = True
    whole_words = False

    def split(self, text):
        return list(text)


class WordTokenizer(Tokenizer):
    name = "word"
    description = "Whitespace-separated words; generated words are joined with single spaces."
    unit = "words"
    separator = " "

    def split(self, text):
        return text.split()


def _hf():
    try:
        import tokenizers
    except ImportError:
        raise RNNStudioError('the bpe tokenizer needs the tokenizers package: pip install "rnnstudio[bpe]"') from None
    return tokenizers


class BPETokenizer(Tokenizer):
    name = "bpe"
    description = "Byte-pair encoding learnt from the corpus (subwords: frequent words whole, rare ones in pieces)."
    params = (
        Param("vocab_size", "int", 1000, help="Tokens to learn, every character of the corpus included.", min=2,
              max=1_000_000),
    )

    def __init__(self, **options):
        super().__init__(**options)
        _hf()  # a missing library is said before any work
        self._model = None

    def fit(self, pieces):
        hf = _hf()
        model = hf.Tokenizer(hf.models.BPE(unk_token=UNK))
        model.pre_tokenizer = hf.pre_tokenizers.Split(hf.Regex(_PRE_TOKENS), behavior="isolated")
        trainer = hf.trainers.BpeTrainer(vocab_size=self.options["vocab_size"], special_tokens=[UNK],
                                         show_progress=False)
        model.train_from_iterator(pieces(), trainer=trainer)
        self._model = model

    def split(self, text):
        if self._model is None:
            raise RNNStudioError("the bpe tokenizer has not been trained: train a model with --tokens bpe first")
        offsets = self._model.encode(text).offsets
        tokens = [text[a:b] for a, b in offsets]
        if sum(map(len, tokens)) != len(text):  # never expected: the pre-tokens cover every character
            raise RNNStudioError("the bpe tokenizer lost characters of the text; retrain the model")
        return tokens

    def learnt_tokens(self):
        if self._model is None:
            return None
        vocab = self._model.get_vocab()
        return [t for t in sorted(vocab, key=vocab.get) if t != UNK]

    def state(self):
        return {"huggingface": json.loads(self._model.to_str())} if self._model is not None else {}

    def load_state(self, state):
        hf = _hf()
        try:
            self._model = hf.Tokenizer.from_str(json.dumps(state["huggingface"]))
        except Exception as exc:  # KeyError, TypeError or the library's own parse error
            raise ValueError(f"not a trained bpe tokenizer ({type(exc).__name__})") from None


@rnnstudio.hookimpl
def register_tokenizers(register):
    register(CharTokenizer)
    register(WordTokenizer)
    register(BPETokenizer)
