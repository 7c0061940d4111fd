"""The device-facing listeners: enrollment (server-auth TLS) and, later, the mTLS mesh gateway."""
