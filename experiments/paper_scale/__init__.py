"""Experiment 'paper_scale': see config.py."""
