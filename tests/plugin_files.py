"""Shared test helper: the source of a small, correct user plugin file, for tests that fill a plugins folder."""

from __future__ import annotations

import textwrap

# a user plugin that registers one metric, "shout", whose value is always 42
SHOUT_METRIC = textwrap.dedent('''
    import rnnstudio

    class Shout(rnnstudio.Metric):
        name = "shout"
        description = "always 42"
        def reset(self): pass
        def update(self, logits, targets, nll): pass
        def value(self): return 42.0

    @rnnstudio.hookimpl
    def register_metrics(register):
        register(Shout)
''')
