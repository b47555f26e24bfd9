"""evaluation stage of c2fnas."""
