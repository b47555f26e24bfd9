"""Names of the cell operations of the fine stage (paper Sec. 3.4).

``3d``: 3x3x3 convolution. ``2d``: 3x3x1 convolution (in-plane). ``p3d``: 3x3x1 followed by
1x1x3 (pseudo-3D). The coarse stage uses ``3d`` everywhere.
"""

from typing import Literal, get_args

Op = Literal["3d", "2d", "p3d"]
OPS: tuple[Op, ...] = get_args(Op)
COARSE_OP: Op = "3d"
