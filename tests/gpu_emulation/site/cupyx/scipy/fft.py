"""`cupyx.scipy.fft` for the emulated GPU: the transforms of cupy.fft, plans included."""
import cupy as _cupy

globals().update({name: getattr(_cupy.fft, name) for name in dir(_cupy.fft) if not name.startswith("_")})
get_fft_plan = _cupy.fft.get_fft_plan
