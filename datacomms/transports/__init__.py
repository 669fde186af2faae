"""One module per transport, each written against the backend interface.

``datacomms.url.TRANSPORTS`` maps a URL scheme to its module here; the
modules are imported only when a URL of their scheme is first used.
"""
