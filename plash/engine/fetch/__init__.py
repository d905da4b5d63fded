"""Fetching images over HTTP: the one place that knows HTTP (httpx), plus LXC and OCI sources."""
