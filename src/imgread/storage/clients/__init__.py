"""Storage clients: the readers a session of a storage kind may read its objects with.

``base``: the contract (:class:`~imgread.storage.clients.base.Client`, its per-thread
:class:`~imgread.storage.clients.base.Reader` and the session's
:class:`~imgread.storage.clients.base.Endpoint`); ``registry``: the built-in client ``imgread``
(kind http's own reader, :mod:`imgread.storage.http.client`) and those other packages register
under the ``imgread.storage_clients`` entry-point group. docs/adding-a-storage-client.md walks
through adding one.
"""
