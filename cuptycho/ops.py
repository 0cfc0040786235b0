"""The one place that picks the NumPy reference or the compiled kernels for a device.

Every function takes the device ('numpy', 'cpu' or 'cuda', from `backend.resolve`) and arrays
already checked and laid out as the model wants them (`cuptycho.validation` at the public
boundary, once): obj (Mo, H, W), probe (K, Ny, Nx) of one complex dtype, positions (J, 2)
float64 C-contiguous, padding and pixel size as pairs, all in the device's namespace. 'numpy'
runs the reference (`cuptycho.reference`), the others the kernels (`cuptycho.model` and the
launchers). In-place operations are in place on every device.
"""
from __future__ import annotations

from . import model, reference
from .launchers import adam as adam_kernel
from .launchers import pie as pie_kernel
from .launchers import sampling
from .model import GRADIENTS, release_buffers, stage

__all__ = ["GRADIENTS", "stage", "release_buffers", "forward", "evaluate", "patch_fwd", "patch_adj", "pie_update",
           "adam_step", "adam_state"]


def forward(device, obj, probe, positions, *, propagator, z=None, wavelength=None, pixel_size=None,
            padding=(0, 0), scale=None, background=None):
    """Modelled intensities (J, Ny, Nx) in detector order (scale_j I_coh + background when given)."""
    if device == "numpy":
        prop = reference.make_propagator(propagator, probe.shape[-2:], z=z, wavelength=wavelength,
                                         pixel_size=pixel_size, padding=padding, dtype=obj.dtype)
        return reference.forward(obj, probe, positions, prop, scale=scale, background=background)
    return model.forward(device, obj, probe, positions, propagator=propagator, z=z, wavelength=wavelength,
                         pixel_size=pixel_size, padding=padding, scale=scale, background=background)


def evaluate(device, obj, probe, positions, data, mask, *, loss, propagator, z=None, wavelength=None,
             pixel_size=None, padding=(0, 0), profile=None, wanted=GRADIENTS, scale=None, background=None,
             z_direction=(1.0, 0.0), n_total=None, value_on_device=False):
    """(loss, grads) of MATH.md: the `wanted` gradients of object, probe, positions, z and (when given) the
    detector model's scale per pattern and background. The "z" gradient is the derivative along
    z_direction = (dz, ds): z + dz t and the pixel size scaled by 1 + ds t (plain dL/dz by default).
    n_total: the patterns the loss averages over (default all given; more for one rank's part of a batch).
    value_on_device: the loss as a 0-d array on the arrays' device rather than a float (no host round trip).

    The kernels skip the position reduction and dL/dz when they are not wanted; the reference
    computes everything and returns the wanted ones."""
    if device == "numpy":
        prop = reference.make_propagator(propagator, probe.shape[-2:], z=z, wavelength=wavelength,
                                         pixel_size=pixel_size, padding=padding, dtype=obj.dtype,
                                         z_direction=z_direction)
        with stage(profile, "reference", device):
            value, grads = reference.loss_and_grad(obj, probe, positions, data, mask, loss, prop, scale=scale,
                                                   background=background, n_total=n_total)
        return value, {k: v for k, v in grads.items() if k in wanted}
    return model.loss_and_grad(device, obj, probe, positions, data, mask, loss=loss, propagator=propagator, z=z,
                               wavelength=wavelength, pixel_size=pixel_size, padding=padding, profile=profile,
                               wanted=wanted, scale=scale, background=background, z_direction=z_direction,
                               n_total=n_total, value_on_device=value_on_device)


def patch_fwd(device, obj, positions, patch_shape):
    """Bilinear patches (J, Mo, Ny, Nx) of obj at positions."""
    if device == "numpy":
        return reference.patch_fwd(obj, positions, patch_shape)
    return sampling.patch_fwd(obj, positions, patch_shape)


def patch_adj(device, patches, positions, obj_shape):
    """Adjoint of `patch_fwd`: patches scatter-added into a zero object of obj_shape."""
    if device == "numpy":
        return reference.patch_adj(patches, positions, obj_shape)
    return sampling.patch_adj(patches, positions, obj_shape)


def pie_update(device, param, grad, weight, weight_max, *, step, alpha, rel_floor):
    """param += step grad / max((1 - alpha) weight + alpha weight_max, rel_floor weight_max), in place."""
    if device == "numpy":
        param[...] = reference.pie_update(param, grad, weight, weight_max, step=step, alpha=alpha,
                                          rel_floor=rel_floor)
    else:
        pie_kernel.pie_update(param, grad, weight, weight_max, step=step, alpha=alpha, rel_floor=rel_floor)


def adam_state(param):
    """Zero first and second moments for `param` (per real component, MATH.md)."""
    return adam_kernel.adam_state(param)


def adam_step(device, param, grad, m, v, *, step, lr, betas, eps):
    """One Adam step of param, m and v in place (the reference computes it in float64 and writes back)."""
    if device == "numpy":
        new, m_new, v_new = reference.adam_step(param, grad, m, v, step=step, lr=lr, betas=betas, eps=eps)
        param[...], m[...], v[...] = new, m_new, v_new
    else:
        adam_kernel.adam_step(param, grad, m, v, step=step, lr=lr, betas=betas, eps=eps)
