"""The search stages: coarse (topology), fine (ops), scale (width); the trial store and workers.

Importing this package does not import torch, MONAI or matplotlib (5-15 s on a small CPU), nor
do the strategies, the store, the workers, the coarse stage (``coarse``) and the fine stage's
colourings (``colourings``): every search worker process imports its module when it starts, and
searches on toy objectives (tests, simulations) never need the training stack. The modules
that train or score (``evaluate``, ``fine``, ``scale``, ``distributed``, ``stages``) import it at
the top.
"""
