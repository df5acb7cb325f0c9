"""Run several hub nodes behind HAProxy with TLS on one machine (``scripts/cluster``).

``tls`` makes a throwaway CA and server certificate, ``haproxy`` renders
``deploy/haproxy.cfg`` for a list of nodes and runs HAProxy; the test suite uses both
(tests/haproxy.py), and ``python -m localcluster`` is the ``scripts/cluster`` command.
"""
