"""Importance samplers, built per block at a parameter value.

Both samplers work in a block layout and produce draws chunk by chunk: a chunk is
``size`` draws of every block's random effects, generated from its own ``SeedSequence``.
With each chunk the sampler returns what the engine needs and never recomputes: the log
importance density of each block's draw and the sum of squares of each block's effects per
variance component.

* :class:`LaplaceSampler` (default): per block, ``(1 - a) N(u_hat, P^{-1}) + a t_df(u_hat,
  P^{-1})`` with ``u_hat`` the conditional mode and ``P`` the Laplace precision; the small
  heavy-tailed component keeps the weights' variance finite (a defensive mixture).
* :class:`GlmmSampler`: glmm's three-part mixture ``p1 t_df(0, D) + p2 N(u*, D) +
  p3 N(u*, P^{-1})`` (the R package glmm's), per block.  With a one-block layout it is
  glmm's sampler exactly, but centred at our Laplace fit instead of glmm's PQL.

Component counts are stratified (a fixed share of every chunk, largest-remainder rounding)
rather than multinomial: the mixture density is used for the weights either way, and fixed
counts never increase the variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from glmm_sm.core.constants import LOG2PI
from glmm_sm.core.random import generator
from glmm_sm.laplace.step import BlockSystem, ModeResult, mode_derivatives

__all__ = ["DrawChunk", "LaplaceSampler", "GlmmSampler", "stratified_counts"]


@dataclass
class DrawChunk:
    """Draws of one chunk, in layout order.

    Attributes
    ----------
    U : ndarray (q, size)
        Random effects, one column per draw.
    logf : ndarray (n_blocks, size)
        Log importance density of each block's part of each draw.
    S : ndarray (n_blocks, T + C, size)
        Per block and variance component, the sum of squared effects; then, with correlated
        terms, the ``C`` cross sums (:mod:`glmm_sm.spec.covstruct`).
    """

    U: np.ndarray
    logf: np.ndarray
    S: np.ndarray


def stratified_counts(probs, size):
    """Split ``size`` draws among components in proportion ``probs`` (largest remainder)."""
    probs = np.asarray(probs, dtype=float)
    raw = probs * size
    counts = np.floor(raw).astype(np.int64)
    short = size - counts.sum()
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def _log_t_norm(df, q):
    return gammaln((df + q) / 2.0) - gammaln(df / 2.0) - 0.5 * q * np.log(df * np.pi)


class _BlockSampler:
    """Shared machinery: per group of equal-size blocks, draw and assemble a chunk."""

    name = "base"

    def __init__(self, system: BlockSystem, params, mode: ModeResult, shift=True):
        data = system.data
        self.shift = bool(shift)
        self.system = system
        self.params = np.asarray(params, dtype=float).copy()
        p = data.k_fe
        self.nu = self.params[p : p + data.k_vcp]  # (the negative binomial's alpha last)
        self.col_var = data.cov.variances(self.nu)  # each sub-component's variance
        self.u_hat = mode.u.copy()
        # How the conditional modes move with the fixed effects, d u_hat / d beta (q, p),
        # at the centre beta0.  Translating the draws by du_dbeta (beta - beta0) keeps them
        # on the moving posterior (the proposal translated along with it has the same
        # density at the translated draws); without it, data whose fixed effects are
        # confounded with random effects (radish2) give l_m a Hessian that is Monte Carlo
        # noise.  The engine moves the draws when ``shift`` is true (engine.DrawShift).
        self.beta0 = self.params[:p].copy()
        self.du_dbeta = mode_derivatives(system, self.beta0, self.nu, mode,
                                         nu_derivs=False)[0]
        self.chol = [L.copy() for L in mode.chol]
        # x = L'^{-1} z has covariance P^{-1}.
        self.root = [np.swapaxes(np.linalg.inv(L), 1, 2) for L in self.chol]
        self.half_logdet = []
        self.indicator = []
        for (qs, _, cols), L in zip(system.groups, self.chol, strict=True):
            self.half_logdet.append(np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1))
            E = np.zeros((len(cols), data.k_vc, qs))
            E[np.arange(len(cols))[:, None], data.ident[cols], np.arange(qs)[None, :]] = 1.0
            self.indicator.append(E)
        # Blocks factored through a Schur complement (BlockSystem.schur): drawn with their
        # SchurFactor (never a dense root); log det P / 2 from it.
        self.schur = list(mode.schur)
        self.schur_half_logdet = [0.5 * f.logdet for f in self.schur]

    @property
    def data(self):
        return self.system.data

    def generate(self, seed, size):
        """Draw one chunk of ``size`` draws from ``seed`` (a ``SeedSequence``)."""
        data = self.data
        rng = generator(seed)
        U = np.empty((data.q, size))
        logf = np.zeros((data.n_blocks, size))
        T = data.k_vc
        S = np.zeros((data.n_blocks, data.n_s, size))
        for g, (_, ids, cols) in enumerate(self.system.groups):
            u, lf = self._group_draws(rng, g, size)
            U[cols] = u
            logf[ids] = lf
            S[ids, :T] = self.indicator[g] @ (u * u)
        for k, sb in enumerate(self.system.schur):
            u, lf = self._schur_draws(rng, k, size)
            U[sb.cols] = u
            logf[sb.block] = lf
            S[sb.block, :T] = 0.0
            np.add.at(S[sb.block], data.ident[sb.cols], u * u)
        if data.n_s > T:
            S[:, T:] = data.cross_sums(U)
        return DrawChunk(U, logf, S)

    def _group_draws(self, rng, g, size):  # pragma: no cover - abstract
        raise NotImplementedError

    def _schur_draws(self, rng, k, size):  # pragma: no cover - abstract
        raise NotImplementedError


class LaplaceSampler(_BlockSampler):
    """Normal at the conditional mode with the Laplace covariance, plus a defensive t.

    Parameters
    ----------
    system : BlockSystem
    params : ndarray
        ``(beta, nu)`` at which the sampler is built.
    mode : ModeResult
        Conditional modes and Cholesky factors at ``params``.
    t_weight : float
        Mixture weight of the multivariate t component, in [0, 1).
    df : float
        Degrees of freedom of the t component.
    shift : bool
        Draws move with the fixed effects (default): at ``beta`` the engine uses
        ``u_k + du_dbeta (beta - beta0)``, the draws translated as the conditional modes
        move, with the proposal translated along (same density at the moved draws).  The
        estimate stays an importance-sampling estimate of the likelihood at every
        ``theta``, and its beta Hessian is no longer Monte Carlo noise where fixed effects
        are confounded with random effects.  ``False``: frozen draws, as in glmm.
    """

    name = "laplace"

    def __init__(self, system, params, mode, t_weight=0.1, df=5.0, shift=True):
        super().__init__(system, params, mode, shift)
        if not 0.0 <= t_weight < 1.0:
            raise ValueError(f"t_weight must be in [0, 1); got {t_weight}")
        if not df > 0:
            raise ValueError(f"df must be positive; got {df}")
        self.t_weight = float(t_weight)
        self.df = float(df)

    def n_heavy(self, size):
        """How many of ``size`` draws come from the t component (stratified)."""
        return int(stratified_counts([1.0 - self.t_weight, self.t_weight], size)[1])

    def _group_draws(self, rng, g, size):
        qs, ids, _ = self.system.groups[g]
        n_t = self.n_heavy(size)
        z = rng.standard_normal((len(ids), qs, size))
        chi = rng.chisquare(self.df, (len(ids), n_t)) if n_t else None
        return self.group_from_normals(g, z, chi)

    def group_from_normals(self, g, z, chi):
        """Group ``g``'s draws and log densities from its standard normals ``z`` (n_g, qs,
        size; overwritten) and, for the t component's draws (the last of each block's),
        the chi-square variates ``chi`` (n_g, n_t), or None when there are none.  A block's
        draws depend on its own rows of ``z`` and ``chi`` only
        (:mod:`glmm_sm.mcla.partitioned` generates a partition's share of them)."""
        qs, _, cols = self.system.groups[g]
        size = z.shape[2]
        if chi is not None:
            n_t = chi.shape[1]
            z[:, :, size - n_t :] /= np.sqrt(chi / self.df)[:, None, :]
        d2 = np.einsum("gjk,gjk->gk", z, z)
        u = self.root[g] @ z
        u += self.u_hat[cols][:, :, None]  # in place: one (effects x draws) array less
        return u, self._log_density(qs, self.half_logdet[g][:, None], d2)

    def _log_density(self, qs, hl, d2):
        """The mixture's log density at draws whose standardized squared norm is ``d2``."""
        log_n = -0.5 * qs * LOG2PI + hl - 0.5 * d2
        if self.t_weight == 0.0:
            return log_n
        log_t = _log_t_norm(self.df, qs) + hl - 0.5 * (self.df + qs) * np.log1p(d2 / self.df)
        return np.logaddexp(np.log1p(-self.t_weight) + log_n, np.log(self.t_weight) + log_t)

    def _schur_draws(self, rng, k, size):
        """A Schur block's draws (:class:`~glmm_sm.laplace.step.SchurFactor`), as
        :meth:`_group_draws`'s for one block."""
        sb, fac = self.system.schur[k], self.schur[k]
        qs = sb.cols.size
        n_t = stratified_counts([1.0 - self.t_weight, self.t_weight], size)[1]
        z = rng.standard_normal((qs, size))
        if n_t:
            chi = rng.chisquare(self.df, n_t)
            z[:, size - n_t :] /= np.sqrt(chi / self.df)[None, :]
        d2 = np.einsum("jk,jk->k", z, z)
        u = fac.color(z)
        u += self.u_hat[sb.cols][:, None]
        return u, self._log_density(qs, self.schur_half_logdet[k], d2)


class GlmmSampler(_BlockSampler):
    """glmm's mixture ``p1 t_df(0, D) + p2 N(u*, D) + p3 N(u*, P^{-1})``, per block.

    Parameters
    ----------
    system, params, mode
        As for :class:`LaplaceSampler`; ``D = diag(nu)`` and ``u*`` is the conditional mode.
    probs : sequence of 3 floats
        Mixture weights ``(p1, p2, p3)``; ``p1 > 0`` (the t component bounds the weights).
    df : float
        Degrees of freedom of the t component (glmm's ``zeta``).
    shift : bool
        Draws move with the fixed effects (default), as for :class:`LaplaceSampler`: the
        whole mixture, its t component at 0 included, is translated by
        ``du_dbeta (beta - beta0)``.  ``False`` keeps the draws frozen, as glmm does.
    """

    name = "glmm"

    def __init__(self, system, params, mode, probs=(1 / 3, 1 / 3, 1 / 3), df=5.0,
                 shift=True):
        super().__init__(system, params, mode, shift)
        probs = np.asarray(probs, dtype=float)
        if probs.shape != (3,) or np.any(probs < 0) or abs(probs.sum() - 1.0) > 1e-10:
            raise ValueError(f"probs must be three non-negative weights summing to 1; "
                             f"got {probs}")
        if probs[0] <= 0:
            raise ValueError("probs[0] (the t component) must be positive")
        self.probs = probs
        self.df = float(df)

    def _group_draws(self, rng, g, size):
        qs, ids, cols = self.system.groups[g]
        n1, n2, _ = stratified_counts(self.probs, size)
        d = self.col_var[self.data.ident[cols]][:, :, None]  # (n_g, qs, 1)
        sd = np.sqrt(d)
        center = self.u_hat[cols][:, :, None]
        z = rng.standard_normal((len(ids), qs, size))
        chi = rng.chisquare(self.df, (len(ids), n1))
        u = np.empty_like(z)
        u[:, :, :n1] = sd * z[:, :, :n1] / np.sqrt(chi / self.df)[:, None, :]
        u[:, :, n1 : n1 + n2] = center + sd * z[:, :, n1 : n1 + n2]
        u[:, :, n1 + n2 :] = center + self.root[g] @ z[:, :, n1 + n2 :]
        half_logdet_d = 0.5 * np.log(d[:, :, 0]).sum(axis=1)[:, None]
        dev = u - center
        q1 = np.einsum("gjk,gjk->gk", u, u / d)
        q2 = np.einsum("gjk,gjk->gk", dev, dev / d)
        w3 = np.swapaxes(self.chol[g], 1, 2) @ dev
        q3 = np.einsum("gjk,gjk->gk", w3, w3)
        lg1 = (_log_t_norm(self.df, qs) - half_logdet_d
               - 0.5 * (self.df + qs) * np.log1p(q1 / self.df))
        lg2 = -0.5 * qs * LOG2PI - half_logdet_d - 0.5 * q2
        lg3 = -0.5 * qs * LOG2PI + self.half_logdet[g][:, None] - 0.5 * q3
        with np.errstate(divide="ignore"):
            lp = np.log(self.probs)
        terms = np.stack([lp[0] + lg1, lp[1] + lg2, lp[2] + lg3])
        lf = np.logaddexp.reduce(terms[self.probs > 0], axis=0)
        return u, lf

    def _schur_draws(self, rng, k, size):
        """A Schur block's draws (:class:`~glmm_sm.laplace.step.SchurFactor`), as
        :meth:`_group_draws`'s for one block."""
        sb, fac = self.system.schur[k], self.schur[k]
        qs = sb.cols.size
        n1, n2, _ = stratified_counts(self.probs, size)
        d = self.col_var[self.data.ident[sb.cols]][:, None]  # (qs, 1)
        sd = np.sqrt(d)
        center = self.u_hat[sb.cols][:, None]
        z = rng.standard_normal((qs, size))
        chi = rng.chisquare(self.df, n1)
        u = np.empty_like(z)
        u[:, :n1] = sd * z[:, :n1] / np.sqrt(chi / self.df)[None, :]
        u[:, n1 : n1 + n2] = center + sd * z[:, n1 : n1 + n2]
        u[:, n1 + n2 :] = center + fac.color(z[:, n1 + n2 :])
        half_logdet_d = 0.5 * np.log(d[:, 0]).sum()
        dev = u - center
        q1 = np.einsum("jk,jk->k", u, u / d)
        q2 = np.einsum("jk,jk->k", dev, dev / d)
        w3 = fac.whiten(dev)
        q3 = np.einsum("jk,jk->k", w3, w3)
        lg1 = (_log_t_norm(self.df, qs) - half_logdet_d
               - 0.5 * (self.df + qs) * np.log1p(q1 / self.df))
        lg2 = -0.5 * qs * LOG2PI - half_logdet_d - 0.5 * q2
        lg3 = -0.5 * qs * LOG2PI + self.schur_half_logdet[k] - 0.5 * q3
        with np.errstate(divide="ignore"):
            lp = np.log(self.probs)
        terms = np.stack([lp[0] + lg1, lp[1] + lg2, lp[2] + lg3])
        return u, np.logaddexp.reduce(terms[self.probs > 0], axis=0)
