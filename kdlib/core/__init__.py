"""Utilities every room uses: atomic writes, content hashes, cache paths, devices, runtime versions."""
