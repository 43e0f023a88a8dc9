"""Fuzz tests of every public decoding entry point in :mod:`mesh.codecs`.

The invariant, for every entry point and every binding: for any input, the entry point returns an
event or raises ``DecodeError``; whatever it returns can be encoded again (binary with the same
binding, structured, and with the dead-letter extensions added), and the bounded dead-letter stub
of any input encodes everywhere within its size bound.

CI runs a few seconds of it; ``python -m benchmarks.fuzz --minutes N`` runs a long campaign
(``MESH_FUZZ_EXAMPLES`` sets the examples per test, see ``tests/fuzz/strategies.py``).
"""
