"""Shared by tests/ and bench/: real NIST images, image files, a throwaway database, server
and worker processes, free ports, tables. Development only; the service never imports it."""
