"""Experiment 'paper_noniid': see config.py."""
