"""vanish: vectorized gossip and federated learning with variance-corrected averaging.

    from vanish import topology, mixing, variance
    topo = topology.random_regular(64, 8, seed=0)
    mixed_N = mixing.mix(params_N, topo.device_graph())
"""

__version__ = "0.1.0"
