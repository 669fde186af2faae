"""One module per transport, written against the backend API."""
