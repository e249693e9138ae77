"""Training end to end in-process: learning a tiny corpus, events, seeded generation, checkpoint round trip."""

from __future__ import annotations

import threading

import pytest
import torch

from rnnstudio.checkpoint import list_models, load_model
from rnnstudio.sampling import SamplingConfig, generate_text
from rnnstudio.trainer import TrainConfig, Trainer

SMALL = dict(hidden_size=32, batch_size=8, seq_len=12, eval_every=0, checkpoint_every=0)


def _train(corpus_path, **kw):
    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(corpus_path)}, **{**SMALL, **kw})
    events = list(Trainer(cfg).run())
    return events


def test_tiny_repeating_corpus_drives_validation_perplexity_close_to_one(tiny_corpus):
    events = _train(tiny_corpus, cell="gru", max_steps=250, name="tiny", seed=1)
    summary = events[-1]
    assert summary.kind == "summary" and summary.steps == 250
    assert summary.val_perplexity < 1.1
    started = events[0]
    assert started.kind == "started" and started.vocab_size == len(set("the cat sat on the mat. ")) + 1
    kinds = {e.kind for e in events}
    assert {"started", "progress", "evaluated", "checkpoint", "summary"} <= kinds
    progress = [e for e in events if e.kind == "progress"]
    assert [p.step for p in progress] == list(range(1, 251))
    assert all(p.tokens_per_s > 0 for p in progress)
    assert set(progress[-1].train) == {"perplexity", "cross-entropy"}  # the metrics with on_train = True


def test_d2l_recipe_with_rnn_scratch_learns(tiny_corpus):
    events = _train(tiny_corpus, cell="rnn-scratch", optimizer="sgd", lr=1.0, clip=1.0, max_steps=150,
                    partition="random", save=False)
    assert events[-1].val_perplexity < 3.0


def test_seeded_generation_is_deterministic_and_greedy_ignores_the_seed(tiny_corpus):
    _train(tiny_corpus, max_steps=60, name="gen")
    loaded = load_model("gen")
    a = generate_text(loaded.model, loaded.vocab, "the ", SamplingConfig(length=80, seed=5))[0]
    b = generate_text(loaded.model, loaded.vocab, "the ", SamplingConfig(length=80, seed=5))[0]
    c = generate_text(loaded.model, loaded.vocab, "the ", SamplingConfig(length=80, seed=6, temperature=2.0))[0]
    assert a == b and a.startswith("the ") and len(a) == 84
    assert a != c
    g1 = generate_text(loaded.model, loaded.vocab, "the ", SamplingConfig(length=40, greedy=True, seed=1))[0]
    g2 = generate_text(loaded.model, loaded.vocab, "the ", SamplingConfig(length=40, greedy=True, seed=2))[0]
    assert g1 == g2


def test_checkpoint_round_trip_reproduces_logits_exactly(tiny_corpus):
    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, max_steps=30, name="rt",
                      cell="rnn-scratch", **{k: v for k, v in SMALL.items()})
    trainer = Trainer(cfg)
    list(trainer.run())
    loaded = load_model("rt")
    idx = torch.randint(0, len(loaded.vocab), (3, 17), generator=torch.Generator().manual_seed(0))
    trainer.model.eval()
    with torch.no_grad():
        expected, _, _ = trainer.model(idx)
        got, _, _ = loaded.model(idx)
    assert torch.equal(expected, got)
    assert loaded.vocab.idx_to_token == trainer.vocab.idx_to_token
    [info] = list_models()
    assert info.row()["cell"] == "rnn-scratch" and info.row()["val_perplexity"] is not None


def test_stop_is_cooperative_and_saves(tiny_corpus):
    stop = threading.Event()
    cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(tiny_corpus)}, max_steps=10_000,
                      name="stopme", **SMALL)
    steps = 0
    for event in Trainer(cfg, stop_event=stop).run():
        if event.kind == "progress":
            steps = event.step
            if steps == 20:
                stop.set()
    assert event.kind == "summary" and event.stopped and event.steps == 20
    assert load_model("stopme").config["summary"]["step"] == 20


def test_word_level_training_and_generation(tmp_path):
    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat and the dog sat on the log . " * 200)
    events = _train(corpus, tokens="word", max_steps=80, name="words", batch_size=4, seq_len=6)
    assert events[-1].val_perplexity < 3
    loaded = load_model("words")
    text = generate_text(loaded.model, loaded.vocab, "the cat", SamplingConfig(length=10, greedy=True))[0]
    words = text.split(" ")
    assert len(words) == 12 and all(w in loaded.vocab.token_to_idx for w in words)


def test_existing_model_name_is_not_overwritten(tiny_corpus):
    _train(tiny_corpus, max_steps=5, name="keep")
    from rnnstudio.errors import RNNStudioError

    with pytest.raises(RNNStudioError, match="already exists"):
        _train(tiny_corpus, max_steps=5, name="keep")


def test_dropout_on_one_layer_is_flagged_as_doing_nothing(tmp_path):
    """Dropout acts between stacked layers only; on one layer it is a setting that silently does nothing."""
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    from rnnstudio.config import TrainConfig
    from rnnstudio.trainer import Trainer

    def warnings(**kw):
        cfg = TrainConfig(corpus="text-file", corpus_options={"path": str(text)}, hidden_size=8, batch_size=2,
                          seq_len=8, max_steps=2, eval_every=0, device="cpu", threads=1, save=False, **kw)
        return [e.message for e in Trainer(cfg).run() if e.kind == "warning"]

    assert any("no effect with one layer" in w and "--output-dropout" in w for w in warnings(dropout=0.3))
    assert not any("no effect" in w for w in warnings(dropout=0.3, num_layers=2))
    assert not any("no effect" in w for w in warnings())


def test_output_dropout_acts_on_one_layer_in_training_only():
    """--output-dropout drops the top layer's outputs before the output layer, so one layer has it too."""
    import torch

    from rnnstudio.model import ModelConfig, RNNLanguageModel
    from rnnstudio.plugins import default_host

    host = default_host()
    idx = torch.randint(0, 12, (3, 7), generator=torch.Generator().manual_seed(0))
    for cell in ("gru", "rnn-scratch"):
        torch.manual_seed(0)
        model = RNNLanguageModel(ModelConfig(cell=cell, vocab_size=12, hidden_size=16, output_dropout=0.5),
                                 host.cell(cell))
        plain = RNNLanguageModel(ModelConfig(cell=cell, vocab_size=12, hidden_size=16), host.cell(cell))
        plain.load_state_dict(model.state_dict())
        model.train(), plain.train()
        assert not torch.allclose(model(idx)[0], plain(idx)[0]), cell
        model.eval(), plain.eval()
        torch.testing.assert_close(model(idx)[0], plain(idx)[0])
