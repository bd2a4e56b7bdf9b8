"""Drift distances (PSI, KS, Wasserstein), baselines, schedule and reports."""
