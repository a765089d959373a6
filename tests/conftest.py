import os
import sys
from pathlib import Path

# Nothing may reach the Hub from the tests (DEVELOPERS.md): set it before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).parent))
from fetch_transformers_tests import ensure_transformers_tests  # noqa: E402


sys.path.insert(0, str(ensure_transformers_tests()))
