"""Tracking: experiments, runs, params, metrics, run artifacts and datasets."""
