"""pytest-pydock: pytest fixtures for containerized apps over the pydock engine."""
