"""The model store: the folder format and its schema, the catalogue, the lock, the writer and the loader.

``format``, ``catalogue`` and ``lock`` never import torch (``rnnstudio models`` stays fast); ``writer`` and
``loading`` do. ``rnnstudio.checkpoint`` re-exports all of it under the old names.
"""
