"""Experiment 'variance_demo': see config.py (what it shows) and run.py (how it runs)."""
