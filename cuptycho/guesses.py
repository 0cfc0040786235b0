"""The gradient engine's starting guesses: the object (`init_object`), the probe (`init_probe`) and
the least-squares fit of the probe's scale to the data (`fit_probe_scale`), as a mixin of
`engine.Reconstruction`. The guesses themselves are `cuptycho.initial`'s; this module picks them
from the configuration and says what it changed (a given probe rescaled is an event)."""
from __future__ import annotations

import numpy as np

from . import backend as backends
from . import initial, ops
from .memory_plan import FIT_CHUNK_BYTES   # a module global here too: the tests shrink it



class StartingGuesses:
    """Mixin: needs the engine's cfg, ds, dtype, real, device, xp, obj_shape, nominal and the batch helpers."""

    def _initial_object(self):
        cfg, ds = self.cfg, self.ds
        if cfg.init_object == "ones":
            return initial.object_ones(self.obj_shape, cfg.n_object_modes, self.dtype, seed=cfg.seed)
        if ds.propagator != "farfield":
            raise ValueError(f"init_object = 'data' reads the phase slope from each pattern's centre of mass, which "
                             f"holds in the far field only; the data's propagator is {ds.propagator!r}: use "
                             "init_object = 'ones'")
        return initial.object_from_data(ds.data, self.nominal, backends.to_host(self.probe), self.obj_shape,
                                        cfg.n_object_modes, mask=ds.mask, dtype=self.dtype, seed=cfg.seed,
                                        chunks=self.chunks)        # MPI: the ranks share the pass over the data


    def _initial_probe(self):
        spec, ds = self.cfg.init_probe, self.ds
        if isinstance(spec, dict) and set(spec) == {"aperture"}:
            return initial.probe_aperture(ds.patch_shape, spec["aperture"], self.cfg.n_probe_modes or 1,
                                          seed=self.cfg.seed, dtype=self.dtype)
        if spec == "data":
            # MPI: the ranks share the pass over the data (the same mean pattern, bit for bit)
            return initial.probe_from_data(ds.data, self.cfg.n_probe_modes or 1, mask=ds.mask, seed=self.cfg.seed,
                                           dtype=self.dtype, chunks=self.chunks, **ds.forward_kwargs())
        if spec != "dataset":
            raise ValueError(f"init_probe must be 'dataset', 'data' or {{'aperture': radius_px}}, got {spec!r}")
        if ds.probe is None:
            raise ValueError("init_probe='dataset' but the dataset has no probe guess: set Dataset.probe or use "
                             "init_probe='data'")
        probe = np.asarray(ds.probe, dtype=self.dtype)
        probe = probe[None] if probe.ndim == 2 else probe
        wanted = self.cfg.n_probe_modes
        if wanted and wanted > probe.shape[0]:
            probe = initial.add_modes(probe, wanted, seed=self.cfg.seed)
        return np.ascontiguousarray(probe)

    def _fit_probe_scale(self):
        """Scale the probe so the first predicted intensities match the data (least squares); for a probe the
        user gave, the factor is an event ("probe_scale"), so it is never rescaled without a word."""
        ny, nx = self.ds.patch_shape
        step = max(1, FIT_CHUNK_BYTES // (ny * nx * self.real.itemsize))   # a chunk's intensities, not all

        def sums(idx):
            data, mask = self.batch_data(idx)
            intensity = ops.forward(self.device, self.obj, self.probe,
                                    backends.to_device(self.device, self.batch_positions(idx)), **self.model_kwargs())
            return initial.scale_sums(intensity, data, mask)
        numerator, denominator = self.chunk_sums(step, sums, 2)       # MPI: the ranks share the chunks
        before = float(self.xp.linalg.norm(self.probe))
        self.probe = initial.scaled_by(self.probe, numerator, denominator)
        if self.cfg.init_probe == "dataset":     # a probe the user gave; a guess of our own is ours to scale
            factor = float(self.xp.linalg.norm(self.probe)) / before
            self.events.append({"epoch": 0, "event": "probe_scale", "factor": factor, "probe": "given"})
