"""The search stages: coarse (topology), fine (ops), scale (width); the trial store and workers.

Importing this package does not import torch, MONAI or matplotlib (5-15 s on a small CPU): the
modules import them inside the functions that train, score or plot. Every search worker process
imports its module when it starts, and searches on toy objectives (tests, simulations) never
need the training stack at all.
"""
