"""Hand-written guides, in the explicit style of seed 001: every loc and scale declared by hand."""
