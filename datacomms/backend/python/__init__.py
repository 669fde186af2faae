"""The pure-Python backend: the readable reference and the fallback."""
