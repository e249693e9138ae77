"""Model folders on disk (re-exports ``rnnstudio.store``): safetensors weights, JSON config and vocab,
resumable training state, and a lock.

A model lives in ``models/NAME/``:
  config.json              architecture, data and training settings, and a summary (never executed)
  vocab.json               the tokens, in id order
  weights.safetensors      the latest weights (what generate and score load)
  best.safetensors         the weights with the best validation perplexity so far
  train_state.safetensors  weights, optimizer, RNG, hidden state and data position, for an exact resume
Each file is replaced atomically; a new folder appears only once it is complete.
"""

from __future__ import annotations

from . import paths
from .processes import process_alive
from .store.catalogue import (ModelInfo, check_model_folder, delete_model, export_model, list_models, read_config,
                              read_vocab_json, rename_model)
from .store.format import BEST, CONFIG, FORMAT_VERSION, STATE, VOCAB, WEIGHTS, check_name, model_path, read_header
from .store.loading import (LoadedModel, check_resume, load_model, load_train_state, read_tensors, read_vocab,
                            restore_train_state)
from .store.lock import ModelLock
from .store.writer import ModelWriter, save_train_state, save_weights

__all__ = ["paths", "process_alive", "ModelInfo", "check_model_folder", "delete_model", "export_model",
           "list_models", "read_config", "read_vocab_json", "rename_model", "BEST", "CONFIG", "FORMAT_VERSION",
           "STATE", "VOCAB", "WEIGHTS", "check_name", "model_path", "read_header", "LoadedModel", "check_resume",
           "load_model", "load_train_state", "read_tensors", "read_vocab", "restore_train_state", "ModelLock",
           "ModelWriter", "save_train_state", "save_weights"]
