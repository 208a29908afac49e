"""The applications behind ``train.py`` and ``eval.py``, callable from Python and tests."""
