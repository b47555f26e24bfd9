"""data stage of c2fnas."""
