"""Experiment 'cifar10': see config.py."""
