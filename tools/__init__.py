"""Command-line tools that sit beside the library: export / quantisation (``tools/quantize.py``)."""
