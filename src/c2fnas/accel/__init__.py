"""Speed machinery, kept apart from the network code and applied by explicit calls.

``c2fnas.nn`` builds networks as the paper draws them (ReLU -> conv -> instance norm). Entry
points that train or predict have ``c2fnas.accel.swap.accelerate(network)`` called once (they
pass ``accelerated=True`` to the library function that builds the network), which swaps in
equivalent faster pieces (``c2fnas.accel.layers``, with the C++ kernels of
``c2fnas.accel.kernels``); the command line calls ``c2fnas.accel.process.keep_freed_memory()``
once per process and starts the ``ThreadGovernor`` (``start_governor``) that training ticks.
Parameter names and values are untouched, so checkpoints move freely between the two forms.
This package's ``__init__`` imports nothing, so that the torch-free part (``process``) loads
without torch.
"""
