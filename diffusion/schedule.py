"""Noise schedules for masked diffusion: alpha(t) = probability a token is still unmasked at time t in [0, 1].

alpha(0) ~ 1 (clean data), alpha(1) = 0 (all MASK). mask_rate(t) = 1 - alpha(t). The continuous-time
NELBO weights the masked-token cross-entropy at time t by  w(t) = -alpha'(t) / (1 - alpha(t))
(MDLM, Sahoo et al. 2024, eq. 10; MD4, Shi et al. 2024). With a SUBS denoiser the bound does not depend on
the schedule; the schedule only decides which mask rates training visits often (the estimator's variance).
"""
import math

import numpy as np


class Schedule:
    def alpha(self, t):
        raise NotImplementedError

    def dalpha(self, t):
        """d alpha / dt (negative: tokens only ever get masked as t grows)."""
        raise NotImplementedError

    def mask_rate(self, t):
        return 1.0 - self.alpha(t)

    def weight(self, t):
        """The ELBO weight w(t) = -alpha'(t) / (1 - alpha(t))."""
        return -self.dalpha(t) / self.mask_rate(t)

    def time_at(self, mask_rate):
        """The t at which mask_rate(t) equals the given rate (the inverse; for time-conditioned samplers)."""
        raise NotImplementedError


class CosineSchedule(Schedule):
    """mask_rate(t) = 1 - cos^2(pi/2 (t + s)/(1 + s)), s = 0.008 (the improved-DDPM cosine, Nichol & Dhariwal
    2021, as the masking rate). The offset s keeps w(t) finite at t = 0: alpha(0) = 0.99984, so the bound
    starts at a mask rate of 1.6e-4 rather than 0 (the uncovered sliver costs < 1e-3 nats/char)."""

    def __init__(self, s=0.008):
        self.s = s

    def _theta(self, t):
        return 0.5 * math.pi * (np.asarray(t, dtype=np.float64) + self.s) / (1 + self.s)

    def alpha(self, t):
        return np.cos(self._theta(t)) ** 2

    def dalpha(self, t):  # d/dt cos^2(theta) = -2 cos sin * dtheta/dt = -sin(2 theta) * pi / (2 (1 + s))
        return -np.sin(2 * self._theta(t)) * 0.5 * math.pi / (1 + self.s)

    def time_at(self, mask_rate):  # alpha = cos^2(theta)  =>  theta = arccos(sqrt(1 - rate))
        theta = np.arccos(np.sqrt(np.clip(1.0 - np.asarray(mask_rate, dtype=np.float64), 0.0, 1.0)))
        return np.clip(theta * (1 + self.s) / (0.5 * math.pi) - self.s, 0.0, 1.0)


class LinearSchedule(Schedule):
    """alpha(t) = 1 - t: mask rate equal to t, w(t) = 1/t (MDLM's linear / 'log-linear' in sigma)."""

    def alpha(self, t):
        return 1.0 - np.asarray(t, dtype=np.float64)

    def dalpha(self, t):
        return -np.ones_like(np.asarray(t, dtype=np.float64))

    def time_at(self, mask_rate):
        return np.clip(np.asarray(mask_rate, dtype=np.float64), 0.0, 1.0)


SCHEDULES = {"cosine": CosineSchedule, "linear": LinearSchedule}


def get_schedule(name):
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {sorted(SCHEDULES)}")
    return SCHEDULES[name]()
