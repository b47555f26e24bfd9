"""Speed machinery, kept apart from the network code and applied by explicit calls.

``c2fnas.nn`` builds networks as the paper draws them (ReLU -> conv -> instance norm). Entry
points that train or predict call ``c2fnas.accel.swap.accelerate(network)`` once, which swaps
in equivalent faster pieces (``c2fnas.accel.layers``, with the C++ kernels of
``c2fnas.accel.kernels``); the command line calls ``c2fnas.accel.process.keep_freed_memory()``
once per process. Parameter names and values are untouched, so checkpoints move freely between
the two forms. This package's ``__init__`` imports nothing, so that the torch-free part
(``process``) loads without torch.
"""
