"""The board core: every decision a board makes about its duty in the pair, sans-IO."""
