"""Experiment 'paper_iid': see config.py."""
