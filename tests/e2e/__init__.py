"""End-to-end helpers: real API and worker processes, HTTP client steps, model checks."""
