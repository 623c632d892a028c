"""Test support shared by the test suite, the benchmarks and the scripts: wire-level vendor fakes and
the real-gunicorn test server."""
