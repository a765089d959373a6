"""Shim for transformers' `tests/exporters/test_export.py` (not in the sdist): MusiCoder's export is not tested here."""


class ExportTesterMixin:
    pass
