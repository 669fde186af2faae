"""One module per transport, each written against the backend API (datacomms.backend)."""
