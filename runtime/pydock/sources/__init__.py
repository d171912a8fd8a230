"""Where images come from besides Dockerfile builds: registries, archives, the host."""
