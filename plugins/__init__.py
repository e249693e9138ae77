"""RNN Studio's built-in plugins. They use only the public API (``import rnnstudio``), like any third-party plugin."""
