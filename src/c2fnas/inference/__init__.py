"""inference stage of c2fnas."""
