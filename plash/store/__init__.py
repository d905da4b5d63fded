"""The store: every path plash keeps, ids, maps, temp dirs and locks."""
