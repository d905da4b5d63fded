"""Everything shown on stderr: progress and error reports (rich lives only here)."""
