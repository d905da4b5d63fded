"""The synchronous launcher: namespaces, mounts, exec. Never imports trio, rich, httpx or click."""
