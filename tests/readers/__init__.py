"""Readers that decode what a backend client wrote to disk, using the client's own data types."""
