import os
import sys

# Nothing may reach the Hub from the tests (DEVELOPERS.md): set it before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from fetch_transformers_tests import ensure_transformers_tests  # noqa: E402


# transformers' conformance mixins, fetched once into .cache/ (see fetch_transformers_tests.py)
sys.path.insert(0, str(ensure_transformers_tests()))
