"""Data pipelines: corpora -> training-ready `datasets` (run from a checkout: `python -m processing.<module>`)."""
