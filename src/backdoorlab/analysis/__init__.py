"""Analysis: hooks into the residual stream, attention heads and MLP neurons."""
