"""`make bench`: our queue against the Kubernetes docs' protocols, side by side, on one server."""
