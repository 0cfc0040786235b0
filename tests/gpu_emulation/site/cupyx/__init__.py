"""`cupyx` for the emulated GPU: its scipy.fft (see cupy's stand-in)."""
