"""What a network and a run cost, told before they start: one home for every estimate.

- ``profile``: parameters, multiply-accumulates and activation memory, traced on the meta device.
- ``memory``: one training step's memory, and the batch that fits a device.
- ``measure``: the one measured training step and sliding window; ``c2fnas profile``,
  ``c2fnas plan`` and ``search coarse --estimate`` all time this same step.
- ``search``: the compute of a coarse search.
- ``schedule``: the schedules that fit a wall-clock budget, pure functions of measured seconds;
  ``solve``: what a budget buys (search, folds, width, mirroring), solved in one call per plan.

Layering: ``costs`` sits between ``search`` and ``training``. It builds on ``nn`` (the network
it counts), ``accel`` (the device's layout and precision the step is timed in), ``training``
(the validation rhythm, the search modes), ``inference`` (the sliding-window count and the
window timer, which stays with prediction because ``predict`` logs its own estimate before it
starts) and ``data`` (the search fold's cases). ``search`` (the scaling table's MACs, the coarse
stage's estimate), ``report``, ``planning`` and ``cli`` use it. Which topologies stand for a
coarse search is the search's own knowledge (its clusters), so ``search`` picks them and
``costs.search`` counts them.

Modules import torch; import them where needed (the command line keeps its start-up light).
"""
