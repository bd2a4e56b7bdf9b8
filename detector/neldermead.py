"""`scipy.optimize.fmin` (Nelder-Mead with its default options) for a function of a few
parameters, step for step in Python floats: the same simplex, the same points in the same
order and so the same minimum, bit for bit. scipy holds the simplex in numpy arrays of two
numbers, whose per-operation cost is most of a fit of a generalised Pareto tail's two
parameters (`detector.calibration`); the arithmetic here is the same IEEE operations in the
same order (scipy.optimize._optimize._minimize_neldermead, adaptive off, no bounds)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RHO, CHI, PSI, SIGMA = 1, 2, 0.5, 0.5
NONZDELT, ZDELT = 0.05, 0.00025
XATOL = FATOL = 1e-4


class _TooManyCalls(Exception):
    pass


def fmin(func: Callable, x0, args: tuple = ()) -> tuple[float, ...]:
    """The point where `func(x, *args)` is smallest, as `scipy.optimize.fmin(func, x0, args,
    disp=0)` finds it. func is given the point as a tuple of floats."""
    n = len(x0)
    start = [float(v) for v in x0]
    sim = [start]
    for k in range(n):
        point = list(start)
        point[k] = (1 + NONZDELT) * point[k] if point[k] != 0 else ZDELT
        sim.append(point)
    maxfun = maxiter = 200 * n
    calls = 0

    def f(point: list[float]):
        nonlocal calls
        if calls >= maxfun:
            raise _TooManyCalls
        calls += 1
        return func(tuple(point), *args)

    fsim = [f(point) for point in sim]
    sim, fsim = _sorted(sim, fsim)
    iterations = 1
    while calls < maxfun and iterations < maxiter:
        try:
            # as np.max(...) <= tol, which a NaN makes false
            if all(abs(p[i] - sim[0][i]) <= XATOL for p in sim[1:] for i in range(n)) and \
                    all(abs(fsim[0] - value) <= FATOL for value in fsim[1:]):
                break
            xbar = list(sim[0])
            for point in sim[1:-1]:  # np.add.reduce over the points, in order
                xbar = [a + b for a, b in zip(xbar, point)]
            xbar = [a / n for a in xbar]
            worst = sim[-1]
            xr = [(1 + RHO) * a - RHO * w for a, w in zip(xbar, worst)]
            fxr = f(xr)
            shrink = False
            if fxr < fsim[0]:
                xe = [(1 + RHO * CHI) * a - RHO * CHI * w for a, w in zip(xbar, worst)]
                fxe = f(xe)
                sim[-1], fsim[-1] = (xe, fxe) if fxe < fxr else (xr, fxr)
            elif fxr < fsim[-2]:
                sim[-1], fsim[-1] = xr, fxr
            elif fxr < fsim[-1]:
                xc = [(1 + PSI * RHO) * a - PSI * RHO * w for a, w in zip(xbar, worst)]
                fxc = f(xc)
                if fxc <= fxr:
                    sim[-1], fsim[-1] = xc, fxc
                else:
                    shrink = True
            else:
                xcc = [(1 - PSI) * a + PSI * w for a, w in zip(xbar, worst)]
                fxcc = f(xcc)
                if fxcc < fsim[-1]:
                    sim[-1], fsim[-1] = xcc, fxcc
                else:
                    shrink = True
            if shrink:
                for j in range(1, n + 1):
                    sim[j] = [b + SIGMA * (p - b) for b, p in zip(sim[0], sim[j])]
                    fsim[j] = f(sim[j])
            iterations += 1
        except _TooManyCalls:
            pass
        sim, fsim = _sorted(sim, fsim)
    return tuple(sim[0])


def _sorted(sim: list, fsim: list) -> tuple[list, list]:
    """The points by their values; with ties or NaN, in the order numpy's argsort (scipy's
    sort, not necessarily stable) gives them."""
    if len(set(fsim)) == len(fsim) and all(value == value for value in fsim):
        order = sorted(range(len(fsim)), key=fsim.__getitem__)  # distinct: one order
    else:
        order = np.argsort(np.array(fsim, dtype=float))
    return [sim[i] for i in order], [fsim[i] for i in order]
