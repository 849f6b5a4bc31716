"""posemu protocol layer: pure codecs and sessions (bytes in, typed events out; no I/O, no clock)."""
