"""The macro language: words -> tokens -> macro calls -> build script."""
