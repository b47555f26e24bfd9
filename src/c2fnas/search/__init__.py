"""search stage of c2fnas."""
