"""Experiment 'robustness': see config.py."""
