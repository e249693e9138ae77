"""Rewrite the options tables of docs/user-guide.md from the settings schema: `python docs/update_options.py`."""

from pathlib import Path

from rnnstudio.config import SamplingConfig, TrainConfig
from rnnstudio.settings import replace_tables

GUIDE = Path(__file__).resolve().parent / "user-guide.md"
TABLES = {"train": TrainConfig, "generate": SamplingConfig}

if __name__ == "__main__":
    GUIDE.write_text(replace_tables(GUIDE.read_text(encoding="utf-8"), TABLES), encoding="utf-8")
    print(f"updated {GUIDE}")
