"""The PySide6 desktop app over the core; the only package that imports Qt."""
