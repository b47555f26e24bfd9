"""training stage of c2fnas."""
