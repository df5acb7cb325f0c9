"""Helpers shared by the test suite: plain functions and classes, no fixtures.

Test modules import what they share from here and never from each other or from
another directory's ``conftest.py``; fixtures stay in the ``conftest.py`` files and
build on these helpers.

``hubs``               the real hub, in-process or as a child process
``rawclient``          a bare protocol peer sending exactly the frames a test means
``clients``            the Python client SDK: accounts, event streams, key stores
``disputes``           the escrow ceremony and the server's dispute commands
``escrow_factory``     escrow material and whole dispute bundles without a server
``storage_factories``  records and message chains for the storage tests
``browser``            the counselor web page in Chromium
``services``           skip, or fail in CI, when PostgreSQL, Redis or a browser is missing
``redis_server``       a private ``redis-server`` to stop, kill, pause and restart
``haproxy``            HAProxy with TLS in front of real hubs (deploy/haproxy.cfg)
``waiting``            bounded waits that fail with what was awaited
``usecases``           the hub's services without sockets: a recording peer, people, cases
"""
